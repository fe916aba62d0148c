//! Running commands for the engine's Exec: argv without a shell (or
//! `sh -c LINE`, `cmd /C LINE` on Windows), in the served root, stdin
//! empty, as one killable tree (a process group; a job object on Windows:
//! [`platform::spawn_tree`]); output is pumped to the connection as it is
//! produced, bounded by what the connection has not sent yet.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tether_proto::server::{Kill, Req};
use tether_proto::{Command, ErrorCode, ExitStatus, Stream};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, Semaphore};

use super::backend::Completion as Done;
use super::files::Fail;
use crate::platform::{self, Tree};

/// How long a cancelled command gets between SIGTERM and SIGKILL (on
/// Unix; Windows has no SIGTERM, a cancel kills at once).
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
    tree: Option<Tree>,
    /// Permits are output bytes the pumps may read ahead.
    pub window: Arc<Semaphore>,
}

impl Running {
    /// Stop it: gently for a cancel (SIGTERM, then SIGKILL), at once for a timeout.
    pub fn kill(&self, why: Kill) {
        let Some(tree) = &self.tree else { return };
        match why {
            Kill::Timeout => tree.kill(),
            Kill::Cancel if !Tree::GENTLE => tree.kill(),
            Kill::Cancel => {
                tree.terminate();
                let tree = tree.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(TERM_GRACE).await;
                    tree.kill();
                });
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The request is over (its connection closed): nothing keeps running.
        if let Some(tree) = &self.tree {
            tree.kill();
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
        Command::Shell(line) => platform::shell_command(line),
    };
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let (mut child, tree) = platform::spawn_tree(&mut cmd).map_err(|e| {
        let what = match command {
            Command::Argv(a) => a.program().unwrap_or_default().to_string(),
            Command::Shell(_) => platform::SHELL.into(),
        };
        Fail::new(
            ErrorCode::EXEC_FAILED,
            format!("cannot start '{what}': {}", plain(&e)),
        )
    })?;
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
    let drain_tree = tree.clone();
    tokio::spawn(async move {
        let status = child.wait().await;
        // Let the output drain; a background child keeping the pipes open is killed.
        let drain = async {
            let _ = out.await;
            let _ = err.await;
        };
        if tokio::time::timeout(DRAIN_GRACE, drain).await.is_err() {
            if let Some(tree) = &drain_tree {
                tree.kill();
            }
        }
        let status = match status {
            Ok(st) => platform::exit_status(st),
            Err(_) => ExitStatus::Code(-1),
        };
        let _ = events.send((req, Done::Exited(status)));
    });
    Ok(Running { tree, window })
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
