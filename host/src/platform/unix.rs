//! Unix (Linux, macOS, the BSDs): permission bits, process groups, signals.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tether_proto::{ExitStatus, Stream};
use tokio::process::{Child, Command};

use super::Exposure;

/// How a new key file is protected, for messages.
pub const PRIVATE: &str = "mode 0600";

/// Other users may read `path` when any group or other permission bit is set.
pub fn key_exposure(path: &Path, meta: &Metadata) -> io::Result<Option<Exposure>> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    Ok(Some(Exposure {
        how: format!("mode {mode:04o}"),
        fix: format!("chmod 600 '{}'", path.display()),
    }))
}

/// Create `path` (it must not exist) readable and writable by its owner only.
pub fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// How to set an environment variable in this platform's shell.
pub fn env_hint(name: &str, value: &str) -> String {
    format!("`export {name}={value}`")
}

/// The shell, as named in messages and logs.
pub const SHELL: &str = "sh -c";

/// `sh -c LINE`.
pub fn shell_command(line: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(line);
    c
}

/// A command and everything it started: its process group.
#[derive(Debug, Clone)]
pub struct Tree(Pid);

impl Tree {
    /// Ask the whole tree to stop (SIGTERM).
    pub fn terminate(&self) {
        let _ = killpg(self.0, Signal::SIGTERM);
    }

    /// Stop the whole tree now (SIGKILL).
    pub fn kill(&self) {
        let _ = killpg(self.0, Signal::SIGKILL);
    }

    /// Whether [`terminate`](Self::terminate) gives the tree a chance to
    /// clean up (here: yes, SIGTERM can be handled).
    pub const GENTLE: bool = true;
}

/// Start `cmd` in a process group of its own (its pid is the group's id).
pub fn spawn_tree(cmd: &mut Command) -> io::Result<(Child, Option<Tree>)> {
    cmd.as_std_mut().process_group(0);
    let child = cmd.spawn()?;
    let tree = child.id().map(|p| Tree(Pid::from_raw(p as i32)));
    Ok((child, tree))
}

/// A code as it is; a signal as the signal.
pub fn exit_status(st: std::process::ExitStatus) -> ExitStatus {
    match (st.code(), st.signal()) {
        (Some(c), _) => ExitStatus::Code(c),
        (None, Some(s)) => ExitStatus::Signal(s),
        _ => ExitStatus::Code(-1),
    }
}

/// Bytes available to this process on the file system of `dir`.
#[allow(clippy::unnecessary_cast)] // the statvfs field types differ between platforms
pub fn free_space(dir: &cap_std::fs::Dir, _path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::fstatvfs(dir).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// The absolute path with symlinks resolved.
pub fn canonicalize(path: &Path) -> io::Result<PathBuf> {
    std::fs::canonicalize(path)
}

/// Whether log lines on a terminal stderr may carry colours (always, here).
pub fn ansi_stderr() -> bool {
    true
}

/// Write a command's output to our stdout or stderr, byte for byte.
pub fn write_output(stream: Stream, bytes: &[u8]) -> io::Result<()> {
    match stream {
        Stream::Stdout => {
            let mut o = io::stdout().lock();
            o.write_all(bytes).and_then(|_| o.flush())
        }
        Stream::Stderr => {
            let mut o = io::stderr().lock();
            o.write_all(bytes).and_then(|_| o.flush())
        }
    }
}

/// Ctrl-C (SIGINT) and SIGTERM.
#[derive(Debug)]
pub struct StopSignals {
    term: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Listen for them (from now on).
    pub fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        StopSignals {
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The next one.
    pub async fn recv(&mut self) {
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        match &mut self.term {
            Some(term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            None => ctrl_c.await,
        }
    }
}

impl Default for StopSignals {
    fn default() -> Self {
        Self::new()
    }
}
