//! Running commands for the engine's Exec: argv without a shell (or
//! `sh -c LINE`), in the served root, stdin empty, in their own process
//! group; output is pumped to the connection as it is produced, bounded by
//! what the connection has not sent yet.

use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tether_proto::server::{Kill, Req};
use tether_proto::{Command, ErrorCode, ExitStatus, Stream};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, Semaphore};

use super::backend::Completion as Done;
use super::files::Fail;

/// How long a cancelled command gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long output may keep flowing after the command exited (a background
/// child holding the pipes open) before its process group is killed.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Output bytes a command may have produced that the connection did not
/// send yet; past that its pipes are not read (it blocks writing).
pub const OUTPUT_WINDOW: usize = 1 << 20;
/// Largest piece of output read at once.
const PIECE: usize = 64 * 1024;

/// A running command, as its connection knows it.
#[derive(Debug)]
pub struct Running {
    pgid: Option<Pid>,
    /// Permits are output bytes the pumps may read ahead.
    pub window: Arc<Semaphore>,
}

impl Running {
    /// Stop it: gently for a cancel (SIGTERM, then SIGKILL), at once for a timeout.
    pub fn kill(&self, why: Kill) {
        let Some(pg) = self.pgid else { return };
        match why {
            Kill::Timeout => {
                let _ = killpg(pg, Signal::SIGKILL);
            }
            Kill::Cancel => {
                let _ = killpg(pg, Signal::SIGTERM);
                tokio::spawn(async move {
                    tokio::time::sleep(TERM_GRACE).await;
                    let _ = killpg(pg, Signal::SIGKILL);
                });
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The request is over (its connection closed): nothing keeps running.
        if let Some(pg) = self.pgid {
            let _ = killpg(pg, Signal::SIGKILL);
        }
        self.window.close();
    }
}

/// Start `command` in `cwd`; its output and exit arrive as [`Done`] events.
pub fn start(
    req: Req,
    command: &Command<'_>,
    cwd: &Path,
    events: mpsc::UnboundedSender<(Req, Done)>,
) -> Result<Running, Fail> {
    let mut cmd = match command {
        Command::Argv(argv) => {
            let mut it = argv.iter();
            let prog = it.next().unwrap_or_default();
            let mut c = tokio::process::Command::new(prog);
            c.args(it);
            c
        }
        Command::Shell(line) => {
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
            Command::Argv(a) => a.program().unwrap_or_default().to_string(),
            Command::Shell(_) => "sh".into(),
        };
        Fail::new(
            ErrorCode::EXEC_FAILED,
            format!("cannot start '{what}': {}", plain(&e)),
        )
    })?;
    let pgid = child.id().map(|p| Pid::from_raw(p as i32));
    let window = Arc::new(Semaphore::new(OUTPUT_WINDOW));
    let out = tokio::spawn(pump(
        child.stdout.take(),
        Stream::Stdout,
        req,
        events.clone(),
        window.clone(),
    ));
    let err = tokio::spawn(pump(
        child.stderr.take(),
        Stream::Stderr,
        req,
        events.clone(),
        window.clone(),
    ));
    tokio::spawn(async move {
        let status = child.wait().await;
        // Let the output drain; a background child keeping the pipes open is killed.
        let drain = async {
            let _ = out.await;
            let _ = err.await;
        };
        if tokio::time::timeout(DRAIN_GRACE, drain).await.is_err() {
            if let Some(pg) = pgid {
                let _ = killpg(pg, Signal::SIGKILL);
            }
        }
        let status = match status {
            Ok(st) => match (st.code(), st.signal()) {
                (Some(c), _) => ExitStatus::Code(c),
                (None, Some(s)) => ExitStatus::Signal(s),
                _ => ExitStatus::Code(-1),
            },
            Err(_) => ExitStatus::Code(-1),
        };
        let _ = events.send((req, Done::Exited(status)));
    });
    Ok(Running { pgid, window })
}

/// Read a pipe to its end, a piece at a time, within the output window.
async fn pump<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    stream: Stream,
    req: Req,
    events: mpsc::UnboundedSender<(Req, Done)>,
    window: Arc<Semaphore>,
) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; PIECE];
    loop {
        // Room for one more piece among the bytes not yet sent.
        let Ok(permit) = window.acquire_many(PIECE as u32).await else {
            return;
        };
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // The connection gives the permits back as it sends the bytes.
        permit.forget();
        window.add_permits(PIECE - n);
        if events
            .send((req, Done::Output(stream, buf[..n].to_vec())))
            .is_err()
        {
            return;
        }
    }
}

fn plain(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
