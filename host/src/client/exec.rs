//! `tether exec` and `tether shell`.

use std::io::IsTerminal as _;
use std::time::Duration;

use tether_proto::client::{Event, ReqId, Request};
use tether_proto::{Argv, Command, ExitStatus, Stream};
use tokio::io::AsyncBufReadExt as _;

use super::remote::{closed, Nothing};
use super::{connect, ConnectOpts, Remote};
use crate::addr::HostSpec;
use crate::error::Error;

/// A command to run, as the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmdline {
    /// Program and arguments, run without a shell.
    Argv(Vec<String>),
    /// One line for the server's shell.
    Shell(String),
}

/// How one `exec` went.
enum Outcome {
    Exited(ExitStatus),
    Failed(Error),
}

/// Run `command` on the server, streaming its stdout and stderr to ours as
/// they arrive, byte for byte. Ctrl-C cancels the remote command. Returns
/// how it ended.
pub async fn exec(
    remote: &mut Remote,
    command: &Cmdline,
    timeout: Option<Duration>,
) -> Result<ExitStatus, Error> {
    let timeout_ms = timeout.map(|t| t.as_millis().clamp(1, u32::MAX as u128) as u32);
    let mut argv = Vec::new();
    let command = match command {
        Cmdline::Shell(line) => Command::Shell(line),
        Cmdline::Argv(args) => {
            argv.resize(args.iter().map(|a| a.len() + 1).sum(), 0);
            let a = Argv::join(args, &mut argv).map_err(|_| {
                Error::Usage("an argument contains a NUL byte, which cannot be sent".into())
            })?;
            Command::Argv(a)
        }
    };
    let req = remote
        .request(Request::Exec {
            command,
            timeout_ms,
        })
        .await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut cancelled = false;
    let mut outcome = None;
    while outcome.is_none() {
        let mut cancel_now = false;
        tokio::select! {
            r = step(remote, req, &mut outcome) => r?,
            _ = &mut ctrl_c, if !cancelled => {
                cancelled = true;
                cancel_now = true;
            }
        }
        if cancel_now {
            eprintln!("tether: cancelling the remote command (Ctrl-C again to leave at once)");
            remote.cancel(req).await?;
            // A second Ctrl-C leaves at once.
            tokio::spawn(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            });
        }
        if matches!(outcome, Some(Outcome::Failed(Error::Local { .. }))) && !cancelled {
            // Our output is gone (a closed pipe): stop the command.
            cancelled = true;
            let _ = remote.cancel(req).await;
        }
    }
    match outcome {
        Some(Outcome::Exited(st)) => Ok(st),
        Some(Outcome::Failed(e)) => Err(e),
        None => unreachable!("the loop ends with an outcome"),
    }
}

/// One step of an exec: output to ours, the end recorded.
async fn step(remote: &mut Remote, req: ReqId, outcome: &mut Option<Outcome>) -> Result<(), Error> {
    let host = remote.host.clone();
    remote
        .step(&mut Nothing, &mut |ev, _| {
            match ev {
                Event::Output {
                    req: r,
                    stream,
                    bytes,
                } if r == req => {
                    if let Err(e) = write_out(stream, bytes) {
                        *outcome = Some(Outcome::Failed(e));
                    }
                }
                Event::Exit { req: r, status } if r == req => {
                    *outcome = Some(Outcome::Exited(status))
                }
                Event::Failed {
                    req: r,
                    code,
                    message,
                    ..
                } if r == req => {
                    *outcome = Some(Outcome::Failed(Error::Remote {
                        code,
                        message: message.to_string(),
                    }))
                }
                Event::Closed(e) => *outcome = Some(Outcome::Failed(closed(&host, e))),
                _ => {}
            }
            Ok(())
        })
        .await
}

fn write_out(stream: Stream, bytes: &[u8]) -> Result<(), Error> {
    crate::platform::write_output(stream, bytes).map_err(|e| {
        let what = if stream == Stream::Stdout {
            "stdout"
        } else {
            "stderr"
        };
        Error::local("writing the command's output to", what, e)
    })
}

/// The exit status `tether exec` ends with: the remote code, 128+N for
/// signal N, 124 timed out, 130 cancelled. A code outside 0-255 (a Windows
/// server's 32-bit codes) becomes 1, so that no failure reads as success.
pub fn exit_code(status: ExitStatus) -> u8 {
    u8::try_from(status.shell_code()).unwrap_or(1)
}

/// Describe a non-normal end on stderr (a normal exit says nothing).
pub fn report_status(status: ExitStatus) {
    match status {
        ExitStatus::Code(c) if !(0..=255).contains(&c) => eprintln!(
            "tether: the remote command exited with code {c} ({:#010x}), outside 0-255: exit status 1",
            c as u32
        ),
        ExitStatus::Code(_) => {}
        ExitStatus::Signal(s) => eprintln!("tether: the remote command was killed by signal {s}"),
        ExitStatus::TimedOut => {
            eprintln!("tether: the remote command ran past its --timeout and was killed")
        }
        ExitStatus::Cancelled => eprintln!("tether: the remote command was cancelled"),
    }
}

/// `tether shell`: read lines, run each remotely as a shell line; empty lines
/// are ignored and `exit` (or end of input) leaves. A connection the server
/// closed (a restart, an idle timeout) is reopened before the next line.
pub async fn shell(host: &HostSpec, opts: &ConnectOpts) -> Result<i32, Error> {
    let interactive = std::io::stdin().is_terminal();
    let mut remote = connect(host, opts).await?;
    if interactive {
        eprintln!(
            "connected to {host} ({}); each line runs remotely in sh, `exit` leaves",
            remote.info.agent
        );
    }
    // Reconnecting after a restart waits for the server to come back.
    let again = ConnectOpts {
        retries: opts.retries.max(10),
        ..opts.clone()
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut last = 0;
    loop {
        if interactive {
            eprint!("tether {host}> ");
        }
        let line = tokio::select! {
            l = lines.next_line() => l.map_err(|e| Error::local("reading", "stdin", e))?,
            _ = tokio::signal::ctrl_c() => {
                if interactive { eprintln!(); }
                return Ok(130);
            }
        };
        let Some(line) = line else {
            if interactive {
                eprintln!();
            }
            return Ok(last);
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "exit" {
            return Ok(last);
        }
        if remote.is_closed() {
            eprintln!("tether: the server closed the connection; reconnecting to {host}");
            remote = connect(host, &again).await?;
        }
        match exec(&mut remote, &Cmdline::Shell(line.to_string()), None).await {
            Ok(status) => {
                report_status(status);
                last = i32::from(exit_code(status));
                if interactive && last != 0 {
                    eprintln!("[exit {last}]");
                }
            }
            Err(e @ (Error::Lost { .. } | Error::Protocol { .. })) => {
                eprintln!("tether: {e}");
                eprintln!("tether: reconnecting to {host}");
                remote = connect(host, &again).await?;
                last = 255;
            }
            Err(e) => {
                eprintln!("tether: {e}");
                last = 1;
            }
        }
    }
}
