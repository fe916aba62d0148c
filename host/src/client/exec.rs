//! `tether exec` and `tether shell`.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use tether_proto::{ExitStatus, Message, Stream};
use tokio::io::AsyncBufReadExt as _;

use super::{connect, ConnectOpts, Session};
use crate::addr::HostSpec;
use crate::conn::{exec_message, Msg, OwnedCommand};
use crate::error::Error;

/// Run `command` on the server, streaming its stdout and stderr to ours as
/// they arrive, byte for byte. Ctrl-C cancels the remote command. Returns
/// how it ended.
pub async fn exec(
    sess: &mut Session,
    command: &OwnedCommand,
    timeout: Option<Duration>,
) -> Result<ExitStatus, Error> {
    let id = sess.next_id();
    let timeout_ms = timeout.map(|t| t.as_millis().clamp(1, u32::MAX as u128) as u32);
    let mut argv = Vec::new();
    let msg = exec_message(command, timeout_ms, &mut argv).map_err(Error::Usage)?;
    sess.send(id, msg, &[]).await?;
    let mut buf = vec![0u8; sess.max_chunk];
    let mut cancelled = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let inc = tokio::select! {
            r = sess.recv(id) => r?,
            _ = &mut ctrl_c, if !cancelled => {
                cancelled = true;
                eprintln!("tether: cancelling the remote command (Ctrl-C again to leave at once)");
                sess.send(0, Message::Cancel { target: id }, &[]).await?;
                // A second Ctrl-C leaves at once.
                tokio::spawn(async {
                    if tokio::signal::ctrl_c().await.is_ok() {
                        std::process::exit(130);
                    }
                });
                continue;
            }
        };
        match inc.msg {
            Msg::Output { stream } => {
                let mut left = inc.body_len;
                while left > 0 {
                    let want = left.min(buf.len() as u64) as usize;
                    let n = sess.body(&mut buf[..want]).await?;
                    if n == 0 {
                        return Err(sess.lost("output frame cut short".into()));
                    }
                    left -= n as u64;
                    let r = match stream {
                        Stream::Stdout => {
                            let mut o = std::io::stdout().lock();
                            o.write_all(&buf[..n]).and_then(|_| o.flush())
                        }
                        Stream::Stderr => {
                            let mut o = std::io::stderr().lock();
                            o.write_all(&buf[..n]).and_then(|_| o.flush())
                        }
                    };
                    if let Err(e) = r {
                        // Our output is gone (a closed pipe): stop the command.
                        let _ = sess.send(0, Message::Cancel { target: id }, &[]).await;
                        return Err(Error::local(
                            "writing the command's output to",
                            if stream == Stream::Stdout {
                                "stdout"
                            } else {
                                "stderr"
                            },
                            e,
                        ));
                    }
                }
            }
            Msg::Exit { status } => return Ok(status),
            other => return Err(sess.unexpected(other, "Output or Exit")),
        }
    }
}

/// Describe a non-normal end on stderr (a normal exit says nothing).
pub fn report_status(status: ExitStatus) {
    match status {
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
    let mut sess = connect(host, opts).await?;
    if interactive {
        eprintln!(
            "connected to {host} ({}); each line runs remotely in sh, `exit` leaves",
            sess.server_agent
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
        if sess.is_closed().await {
            eprintln!("tether: the server closed the connection; reconnecting to {host}");
            sess = connect(host, &again).await?;
        }
        match exec(&mut sess, &OwnedCommand::Shell(line.to_string()), None).await {
            Ok(status) => {
                report_status(status);
                last = status.shell_code();
                if interactive && last != 0 {
                    eprintln!("[exit {last}]");
                }
            }
            Err(e @ (Error::Lost { .. } | Error::Protocol { .. })) => {
                eprintln!("tether: {e}");
                eprintln!("tether: reconnecting to {host}");
                sess = connect(host, &again).await?;
                last = 255;
            }
            Err(e) => {
                eprintln!("tether: {e}");
                last = 1;
            }
        }
    }
}
