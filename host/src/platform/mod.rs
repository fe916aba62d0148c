//! What differs between operating systems, behind one set of names: the
//! logic elsewhere calls these and never `std::os::unix` or Win32 itself.
//!
//! Each of `unix.rs` and `windows.rs` provides:
//!
//! * key files: [`key_exposure`] (may other users read it?),
//!   [`create_private`] (a new file only its owner may read), [`PRIVATE`]
//!   and [`env_hint`] for messages;
//! * commands: [`shell_command`] (`sh -c LINE` / `cmd /C LINE`),
//!   [`spawn_tree`] (the command and everything it starts, killable as one
//!   [`Tree`]: a process group / a job object), [`exit_status`];
//! * files: [`free_space`], [`canonicalize`];
//! * the console: [`ansi_stderr`] (colours), [`write_output`] (command
//!   output, passed through as bytes);
//! * [`StopSignals`]: what asks `tether serve` to stop.
//!
//! Unsafe code (Win32 calls) lives only in `windows.rs`, each block with
//! the reason it is sound.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use self::windows::*;

/// Why a key file is refused: who else may read it, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// What grants the access (`mode 0644`; `its ACL lets BUILTIN\Users read it`).
    pub how: String,
    /// A command that makes the file private.
    pub fix: String,
}
