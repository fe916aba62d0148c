//! Running commands: argv without a shell (or `sh -c LINE` when asked), in
//! their own process group, output streamed as it is produced.

use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tether_proto::{ErrorCode, ExitStatus, Message, Stream};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use super::ReqError;
use crate::conn::{OwnedCommand, Writer};

/// How long a cancelled command gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long output may keep flowing after the command exited (a background
/// child holding the pipes open) before its process group is killed.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Run `command` and stream its output as Output frames of request `id`.
/// Returns the exit status and the number of output bytes sent.
pub async fn run(
    writer: &Writer,
    id: u32,
    command: &OwnedCommand,
    timeout_ms: Option<u32>,
    cwd: &std::path::Path,
    chunk: usize,
    mut cancel: watch::Receiver<bool>,
) -> Result<(ExitStatus, u64), ReqError> {
    let mut cmd = match command {
        OwnedCommand::Argv(args) => {
            let Some(prog) = args.first().filter(|p| !p.is_empty()) else {
                return Err(ReqError::new(
                    ErrorCode::EXEC_FAILED,
                    "empty command: give a program to run".into(),
                ));
            };
            let mut c = tokio::process::Command::new(prog);
            c.args(&args[1..]);
            c
        }
        OwnedCommand::Shell(line) => {
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(line);
            c
        }
    };
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.as_std_mut().process_group(0);
    let mut child = cmd.spawn().map_err(|e| {
        let what = match command {
            OwnedCommand::Argv(a) => a.first().cloned().unwrap_or_default(),
            OwnedCommand::Shell(_) => "sh".into(),
        };
        ReqError::new(
            ErrorCode::EXEC_FAILED,
            format!("cannot start '{what}': {e}"),
        )
    })?;
    let pgid = child.id().map(|p| Pid::from_raw(p as i32));
    let kill = |sig: Signal| {
        if let Some(pg) = pgid {
            let _ = killpg(pg, sig);
        }
    };
    let chunk = chunk.clamp(64, 64 * 1024);
    let out = tokio::spawn(pump(
        child.stdout.take(),
        Stream::Stdout,
        writer.clone(),
        id,
        chunk,
    ));
    let err = tokio::spawn(pump(
        child.stderr.take(),
        Stream::Stderr,
        writer.clone(),
        id,
        chunk,
    ));
    let deadline =
        timeout_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms.into()));
    let timer = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timer);
    let mut forced = None;
    let status = loop {
        tokio::select! {
            st = child.wait() => break st,
            _ = &mut timer, if forced.is_none() => {
                kill(Signal::SIGKILL);
                forced = Some(ExitStatus::TimedOut);
            }
            r = cancel.changed(), if forced.is_none() => {
                if r.is_err() || *cancel.borrow() {
                    kill(Signal::SIGTERM);
                    forced = Some(ExitStatus::Cancelled);
                    let pg = pgid;
                    tokio::spawn(async move {
                        tokio::time::sleep(TERM_GRACE).await;
                        if let Some(pg) = pg { let _ = killpg(pg, Signal::SIGKILL); }
                    });
                }
            }
        }
    };
    // Let the output drain; a background child keeping the pipes open is killed.
    let drain = async {
        let a = out.await.unwrap_or(Ok(0));
        let b = err.await.unwrap_or(Ok(0));
        (a, b)
    };
    tokio::pin!(drain);
    let (a, b) = match tokio::time::timeout(DRAIN_GRACE, &mut drain).await {
        Ok(r) => r,
        Err(_) => {
            kill(Signal::SIGKILL);
            drain.await
        }
    };
    let sent = a? + b?;
    let status = match (forced, status) {
        (Some(f), _) => f,
        (None, Ok(st)) => match (st.code(), st.signal()) {
            (Some(c), _) => ExitStatus::Code(c),
            (None, Some(s)) => ExitStatus::Signal(s),
            _ => ExitStatus::Code(-1),
        },
        (None, Err(e)) => {
            return Err(ReqError::new(
                ErrorCode::INTERNAL,
                format!("waiting for the command failed: {e}"),
            ))
        }
    };
    Ok((status, sent))
}

async fn pump<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    stream: Stream,
    writer: Writer,
    id: u32,
    chunk: usize,
) -> Result<u64, ReqError> {
    let Some(mut pipe) = pipe else { return Ok(0) };
    let mut buf = vec![0u8; chunk];
    let mut sent = 0u64;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(sent),
            Ok(n) => n,
        };
        writer
            .send(id, Message::Output { stream }, &buf[..n])
            .await
            .map_err(ReqError::lost)?;
        sent += n as u64;
    }
}

/// Check `command` against the allow-list: argv[0] must equal an entry
/// exactly (a bare name is then found through the server's PATH; a path
/// allows only that path), and shell lines are refused, since a shell line
/// can run anything.
pub fn check_allowed(command: &OwnedCommand, allowed: &[String]) -> Result<(), ReqError> {
    match command {
        OwnedCommand::Shell(_) => Err(ReqError::new(
            ErrorCode::NOT_ALLOWED,
            "shell lines are refused: this server runs only the commands on its allow-list (--allow-cmd), which a shell line could get around; run the program as an argv (`tether exec HOST -- PROGRAM ARGS`)".into(),
        )),
        OwnedCommand::Argv(args) => {
            let prog = args.first().map(String::as_str).unwrap_or("");
            if allowed.iter().any(|a| a == prog) {
                return Ok(());
            }
            let mut list = allowed.join(", ");
            if list.len() > 200 {
                list = format!("{}…", crate::conn::clip(&list, 200));
            }
            Err(ReqError::new(
                ErrorCode::NOT_ALLOWED,
                format!(
                    "'{}' is not on this server's allow-list (it runs only: {list}); names must match exactly, paths included",
                    crate::conn::clip(prog, 100)
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_argv0_exactly() {
        let allowed = vec!["ls".to_string(), "/usr/bin/env".to_string()];
        let argv = |a: &[&str]| OwnedCommand::Argv(a.iter().map(|s| s.to_string()).collect());
        assert!(check_allowed(&argv(&["ls", "-l"]), &allowed).is_ok());
        assert!(check_allowed(&argv(&["/usr/bin/env"]), &allowed).is_ok());
        for bad in [
            argv(&["/bin/ls"]),
            argv(&["./ls"]),
            argv(&["env"]),
            argv(&["LS"]),
            argv(&[""]),
            OwnedCommand::Shell("ls".into()),
        ] {
            let e = check_allowed(&bad, &allowed).unwrap_err();
            assert_eq!(e.code, ErrorCode::NOT_ALLOWED, "{bad:?}");
        }
    }
}
