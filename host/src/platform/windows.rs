//! Windows: ACLs, job objects, the console.
//!
//! The Win32 calls are `unsafe` by nature; each block says why it is sound.
//! Handles are held as [`OwnedHandle`] (closed on drop), buffers the API
//! allocates are freed by a guard.
#![allow(unsafe_code)]

use std::ffi::{c_void, OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Write as _};
use std::os::windows::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::windows::io::{AsRawHandle as _, FromRawHandle as _, OwnedHandle, RawHandle};
use std::path::{Component, Path, PathBuf, Prefix};
use std::sync::Arc;

use tether_proto::{ExitStatus, Stream};
use tokio::process::{Child, Command};
use windows_sys::Win32::Foundation::{
    CloseHandle, LocalFree, ERROR_INSUFFICIENT_BUFFER, ERROR_SUCCESS, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, GetNamedSecurityInfoW, SetNamedSecurityInfoW, SE_FILE_OBJECT,
};
use windows_sys::Win32::Security::{
    AddAccessAllowedAce, GetAce, GetLengthSid, GetTokenInformation, InitializeAcl,
    LookupAccountSidW, TokenUser, ACCESS_ALLOWED_ACE, ACE_HEADER, ACL, ACL_REVISION,
    DACL_SECURITY_INFORMATION, INHERIT_ONLY_ACE, OWNER_SECURITY_INFORMATION,
    PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, SID_NAME_USE, TOKEN_QUERY,
    TOKEN_USER,
};
use windows_sys::Win32::Storage::FileSystem::{
    GetDiskFreeSpaceExW, WriteFile, FILE_ALL_ACCESS, FILE_READ_DATA,
};
use windows_sys::Win32::System::Console::{
    GetConsoleMode, SetConsoleMode, CONSOLE_MODE, ENABLE_VIRTUAL_TERMINAL_PROCESSING,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Thread32First, Thread32Next, TH32CS_SNAPTHREAD, THREADENTRY32,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
    SetInformationJobObject, TerminateJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcessToken, OpenThread, ResumeThread, CREATE_NO_WINDOW,
    CREATE_SUSPENDED, THREAD_SUSPEND_RESUME,
};

use super::Exposure;

// ---------------------------------------------------------------- key files

/// How a new key file is protected, for messages.
pub const PRIVATE: &str = "readable by you only";

/// Access that lets a holder read the file's data, or give itself that
/// right (change the ACL or take ownership).
const READS: u32 = FILE_READ_DATA | GENERIC_READ | GENERIC_ALL | WRITE_DAC | WRITE_OWNER;
const GENERIC_READ: u32 = 0x8000_0000;
const GENERIC_ALL: u32 = 0x1000_0000;
const WRITE_DAC: u32 = 0x0004_0000;
const WRITE_OWNER: u32 = 0x0008_0000;
/// ACE types with the layout of ACCESS_ALLOWED_ACE that grant access:
/// ACCESS_ALLOWED_ACE_TYPE and ACCESS_ALLOWED_CALLBACK_ACE_TYPE.
const ALLOW_TYPES: [u8; 2] = [0, 9];
/// Who may read a key file without it counting as exposed, besides its
/// owner and the user running tether: LocalSystem and the Administrators
/// group (they can read every file anyway, as root can on Unix), and
/// OWNER RIGHTS (the owner).
const TRUSTED: [&str; 3] = ["S-1-5-18", "S-1-5-32-544", "S-1-3-4"];

/// Other users may read `path` when its DACL allows read access (or the
/// right to change the ACL or the owner) to anyone but its owner, the
/// current user, LocalSystem and Administrators; a missing DACL allows
/// everyone. Deny entries are not weighed: an allow entry for another
/// account counts even where a deny entry would win.
pub fn key_exposure(path: &Path, _meta: &Metadata) -> io::Result<Option<Exposure>> {
    let sd = Security::of(path)?;
    let me = current_user()?;
    let owner = sid_string(sd.owner)?;
    let fix = |others: &[String]| {
        let mut f = format!(
            "icacls \"{}\" /inheritance:r /grant:r \"*{me}:F\"",
            path.display()
        );
        if !others.is_empty() {
            f += " /remove:g";
            for s in others {
                f += &format!(" \"*{s}\"");
            }
        }
        f
    };
    if sd.dacl.is_null() {
        return Ok(Some(Exposure {
            how: "it has no access control list, so everyone may read it".into(),
            fix: fix(&[]),
        }));
    }
    let mut others: Vec<String> = Vec::new();
    // SAFETY: `sd.dacl` is a valid ACL inside the security descriptor that
    // `sd` owns and keeps alive for this whole loop.
    let count = unsafe { (*sd.dacl).AceCount };
    for i in 0..u32::from(count) {
        let mut ace: *mut c_void = std::ptr::null_mut();
        // SAFETY: index below AceCount of a valid ACL; GetAce writes a
        // pointer into that ACL.
        if unsafe { GetAce(sd.dacl, i, &mut ace) } == 0 || ace.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: every ACE starts with an ACE_HEADER.
        let header = unsafe { &*(ace as *const ACE_HEADER) };
        if !ALLOW_TYPES.contains(&header.AceType) || header.AceFlags & INHERIT_ONLY_ACE as u8 != 0 {
            continue;
        }
        // SAFETY: allow and allow-callback ACEs have ACCESS_ALLOWED_ACE's
        // layout: header, mask, then the SID starting at SidStart.
        let allowed = unsafe { &*(ace as *const ACCESS_ALLOWED_ACE) };
        if allowed.Mask & READS == 0 {
            continue;
        }
        let sid = std::ptr::addr_of!(allowed.SidStart) as PSID;
        let s = sid_string(sid)?;
        if s == me || s == owner || TRUSTED.contains(&s.as_str()) || others.contains(&s) {
            continue;
        }
        others.push(s);
    }
    if others.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = others.iter().map(|s| account_name(s)).collect();
    Ok(Some(Exposure {
        how: format!("its access control list lets {} read it", names.join(", ")),
        fix: fix(&others),
    }))
}

/// Create `path` (it must not exist) with an access control list that
/// grants the current user alone access (inherited entries removed),
/// before anything is written to it; then check it as [`key_exposure`]
/// will (a file system that does not keep the ACL fails here, not later).
pub fn create_private(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new().write(true).create_new(true).open(path)?;
    let r = make_private(path).and_then(|()| {
        match key_exposure(path, &f.metadata()?)? {
            None => Ok(()),
            Some(e) => Err(io::Error::other(format!(
                "the access control list that keeps it private did not take effect ({}); this file system does not keep Windows ACLs: write the key to an NTFS volume",
                e.how
            ))),
        }
    });
    if let Err(e) = r {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(f)
}

fn make_private(path: &Path) -> io::Result<()> {
    let user = TokenUserBuf::current()?;
    let sid = user.sid();
    // SAFETY: `sid` points into `user`, alive here.
    let sid_len = unsafe { GetLengthSid(sid) } as usize;
    // ACL header, one ACCESS_ALLOWED_ACE whose SidStart is the SID's first 4 bytes.
    let size = std::mem::size_of::<ACL>() + std::mem::size_of::<ACCESS_ALLOWED_ACE>() + sid_len;
    let mut buf = vec![0u32; size.div_ceil(4)];
    let acl = buf.as_mut_ptr() as *mut ACL;
    // SAFETY: `buf` is `size` bytes or more, 4-aligned as an ACL needs.
    if unsafe { InitializeAcl(acl, (buf.len() * 4) as u32, ACL_REVISION) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `acl` was just initialised with room for this ACE; `sid` is valid.
    if unsafe { AddAccessAllowedAce(acl, ACL_REVISION, FILE_ALL_ACCESS, sid) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let w = wide(path.as_os_str());
    // SAFETY: `w` is NUL-terminated; `acl` is a valid ACL; the owner,
    // group and SACL are not changed (null).
    let r = unsafe {
        SetNamedSecurityInfoW(
            w.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            acl,
            std::ptr::null(),
        )
    };
    if r != ERROR_SUCCESS {
        return Err(io::Error::from_raw_os_error(r as i32));
    }
    Ok(())
}

/// How to set an environment variable: in cmd, and in PowerShell.
pub fn env_hint(name: &str, value: &str) -> String {
    format!("`set {name}={value}` (cmd) or `$env:{name}=\"{value}\"` (PowerShell)")
}

/// A file's owner and DACL (pointers into the descriptor it frees on drop).
struct Security {
    owner: PSID,
    dacl: *mut ACL,
    sd: PSECURITY_DESCRIPTOR,
}

impl Security {
    fn of(path: &Path) -> io::Result<Security> {
        let w = wide(path.as_os_str());
        let mut s = Security {
            owner: std::ptr::null_mut(),
            dacl: std::ptr::null_mut(),
            sd: std::ptr::null_mut(),
        };
        // SAFETY: `w` is NUL-terminated; the out pointers are valid; the
        // owner and DACL point into the descriptor returned in `s.sd`.
        let r = unsafe {
            GetNamedSecurityInfoW(
                w.as_ptr(),
                SE_FILE_OBJECT,
                OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                &mut s.owner,
                std::ptr::null_mut(),
                &mut s.dacl,
                std::ptr::null_mut(),
                &mut s.sd,
            )
        };
        if r != ERROR_SUCCESS {
            return Err(io::Error::from_raw_os_error(r as i32));
        }
        Ok(s)
    }
}

impl Drop for Security {
    fn drop(&mut self) {
        // SAFETY: allocated by GetNamedSecurityInfoW with LocalAlloc; freed once.
        unsafe { LocalFree(self.sd) };
    }
}

/// The current process's TOKEN_USER, in an 8-aligned buffer.
struct TokenUserBuf(Vec<u64>);

impl TokenUserBuf {
    fn current() -> io::Result<TokenUserBuf> {
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: the pseudo-handle of this process; `token` receives a new handle.
        if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a handle we own from here on.
        let token = unsafe { OwnedHandle::from_raw_handle(token as RawHandle) };
        let mut buf = vec![0u64; 16];
        loop {
            let mut need = 0u32;
            // SAFETY: `buf` holds `buf.len() * 8` writable bytes.
            let ok = unsafe {
                GetTokenInformation(
                    token.as_raw_handle() as HANDLE,
                    TokenUser,
                    buf.as_mut_ptr() as *mut c_void,
                    (buf.len() * 8) as u32,
                    &mut need,
                )
            };
            if ok != 0 {
                return Ok(TokenUserBuf(buf));
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(ERROR_INSUFFICIENT_BUFFER as i32) || need == 0 {
                return Err(e);
            }
            buf = vec![0u64; (need as usize).div_ceil(8)];
        }
    }

    fn sid(&self) -> PSID {
        // SAFETY: filled by GetTokenInformation(TokenUser): a TOKEN_USER
        // whose SID lies in the same buffer.
        unsafe { (*(self.0.as_ptr() as *const TOKEN_USER)).User.Sid }
    }
}

/// The current user's SID, as a string (S-1-5-21-...).
fn current_user() -> io::Result<String> {
    sid_string(TokenUserBuf::current()?.sid())
}

/// A SID as a string (S-1-5-...).
fn sid_string(sid: PSID) -> io::Result<String> {
    let mut p: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` is a valid SID; `p` receives a LocalAlloc'd string.
    if unsafe { ConvertSidToStringSidW(sid, &mut p) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a NUL-terminated wide string from the call above.
    let s = unsafe { from_wide_ptr(p) };
    // SAFETY: allocated by ConvertSidToStringSidW; freed once.
    unsafe { LocalFree(p as *mut c_void) };
    Ok(s)
}

/// `DOMAIN\name` for a SID string, or the SID string when it has no name.
fn account_name(sid: &str) -> String {
    use windows_sys::Win32::Security::Authorization::ConvertStringSidToSidW;
    let w = wide(OsStr::new(sid));
    let mut psid: PSID = std::ptr::null_mut();
    // SAFETY: `w` is NUL-terminated; `psid` receives a LocalAlloc'd SID.
    if unsafe { ConvertStringSidToSidW(w.as_ptr(), &mut psid) } == 0 {
        return sid.to_string();
    }
    let mut name = [0u16; 256];
    let mut domain = [0u16; 256];
    let (mut nl, mut dl) = (name.len() as u32, domain.len() as u32);
    let mut use_: SID_NAME_USE = 0;
    // SAFETY: buffers and their lengths match; `psid` is valid.
    let ok = unsafe {
        LookupAccountSidW(
            std::ptr::null(),
            psid,
            name.as_mut_ptr(),
            &mut nl,
            domain.as_mut_ptr(),
            &mut dl,
            &mut use_,
        )
    };
    // SAFETY: allocated by ConvertStringSidToSidW; freed once.
    unsafe { LocalFree(psid) };
    if ok == 0 {
        return sid.to_string();
    }
    let name = String::from_utf16_lossy(&name[..nl as usize]);
    let domain = String::from_utf16_lossy(&domain[..dl as usize]);
    if domain.is_empty() {
        name
    } else {
        format!("{domain}\\{name}")
    }
}

// ---------------------------------------------------------------- commands

/// The shell, as named in messages and logs.
pub const SHELL: &str = "cmd /C";

/// `%ComSpec% /D /S /C "LINE"`: the line reaches cmd exactly as given
/// (`/S` strips only the outer quotes added here; `/D` skips AutoRun).
pub fn shell_command(line: &str) -> Command {
    let comspec = std::env::var_os("ComSpec")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "cmd.exe".into());
    let mut c = Command::new(comspec);
    c.raw_arg(format!("/D /S /C \"{line}\""));
    c
}

/// A command and everything it started: a job object that kills them all
/// when terminated, and when its last handle closes.
#[derive(Debug, Clone)]
pub struct Tree(Arc<OwnedHandle>);

impl Tree {
    /// Stop the whole tree. Windows has no signal a process without our
    /// console could handle, so this is [`kill`](Self::kill).
    pub fn terminate(&self) {
        self.kill();
    }

    /// Stop the whole tree now (TerminateJobObject, exit code 1).
    pub fn kill(&self) {
        // SAFETY: a job handle we own.
        unsafe { TerminateJobObject(self.0.as_raw_handle() as HANDLE, 1) };
    }

    /// Whether [`terminate`](Self::terminate) lets the tree clean up (no).
    pub const GENTLE: bool = false;
}

/// Start `cmd` suspended, without a console window, put it in a new job
/// object, then let it run: whatever it starts is in the job too (no
/// window in which a child could escape).
pub fn spawn_tree(cmd: &mut Command) -> io::Result<(Child, Option<Tree>)> {
    let job = new_job()?;
    cmd.creation_flags(CREATE_SUSPENDED | CREATE_NO_WINDOW);
    let mut child = cmd.spawn()?;
    let r = (|| {
        let (Some(h), Some(pid)) = (child.raw_handle(), child.id()) else {
            return Err(io::Error::other("the command exited at once"));
        };
        // SAFETY: both handles are valid: the job ours, the process the child's.
        if unsafe { AssignProcessToJobObject(job.as_raw_handle() as HANDLE, h as HANDLE) } == 0 {
            return Err(io::Error::last_os_error());
        }
        resume(pid)
    })();
    if let Err(e) = r {
        let _ = child.start_kill();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot put the command in a job object: {e}"),
        ));
    }
    Ok((child, Some(Tree(Arc::new(job)))))
}

/// A job object whose processes die when its last handle closes.
fn new_job() -> io::Result<OwnedHandle> {
    // SAFETY: default security, no name.
    let h = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a handle we own from here on.
    let job = unsafe { OwnedHandle::from_raw_handle(h as RawHandle) };
    let mut info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION::default();
    info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    // SAFETY: `info` is the structure this class expects, of the size given.
    let ok = unsafe {
        SetInformationJobObject(
            h,
            JobObjectExtendedLimitInformation,
            &info as *const _ as *const c_void,
            std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(job)
}

/// Resume the threads of process `pid` (created suspended: its main thread).
fn resume(pid: u32) -> io::Result<()> {
    // SAFETY: a snapshot of all threads; checked below.
    let snap = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0) };
    if snap == INVALID_HANDLE_VALUE || snap.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a handle we own from here on.
    let snap = unsafe { OwnedHandle::from_raw_handle(snap as RawHandle) };
    let mut te = THREADENTRY32 {
        dwSize: std::mem::size_of::<THREADENTRY32>() as u32,
        ..Default::default()
    };
    let mut resumed = 0;
    // SAFETY: `te` is a THREADENTRY32 with dwSize set, as the calls require.
    let mut more = unsafe { Thread32First(snap.as_raw_handle() as HANDLE, &mut te) } != 0;
    while more {
        if te.th32OwnerProcessID == pid {
            // SAFETY: opening a thread by id; the handle is closed below.
            let t = unsafe { OpenThread(THREAD_SUSPEND_RESUME, 0, te.th32ThreadID) };
            if !t.is_null() {
                // SAFETY: a valid thread handle, closed once.
                unsafe {
                    ResumeThread(t);
                    CloseHandle(t);
                }
                resumed += 1;
            }
        }
        // SAFETY: as for Thread32First.
        more = unsafe { Thread32Next(snap.as_raw_handle() as HANDLE, &mut te) } != 0;
    }
    if resumed == 0 {
        return Err(io::Error::other("its thread was not found to resume"));
    }
    Ok(())
}

/// NTSTATUS codes of crashes and what a Unix signal would have said:
/// a command that crashed ends as "killed by signal N" (exit 128+N) on
/// either kind of server.
const CRASHES: [(u32, i32); 10] = [
    (0xC000_0005, 11), // STATUS_ACCESS_VIOLATION: SIGSEGV
    (0xC000_00FD, 11), // STATUS_STACK_OVERFLOW: SIGSEGV
    (0xC000_001D, 4),  // STATUS_ILLEGAL_INSTRUCTION: SIGILL
    (0xC000_0096, 4),  // STATUS_PRIVILEGED_INSTRUCTION: SIGILL
    (0xC000_0094, 8),  // STATUS_INTEGER_DIVIDE_BY_ZERO: SIGFPE
    (0xC000_0095, 8),  // STATUS_INTEGER_OVERFLOW: SIGFPE
    (0xC000_008E, 8),  // STATUS_FLOAT_DIVIDE_BY_ZERO: SIGFPE
    (0x8000_0003, 5),  // STATUS_BREAKPOINT: SIGTRAP
    (0xC000_0409, 6),  // STATUS_STACK_BUFFER_OVERRUN (fail-fast, abort): SIGABRT
    (0xC000_013A, 2),  // STATUS_CONTROL_C_EXIT: SIGINT
];

/// An exit code as it is (a 32-bit code as its i32 bits), except the
/// crash statuses in [`CRASHES`], which become signals.
pub fn exit_status(st: std::process::ExitStatus) -> ExitStatus {
    let Some(c) = st.code() else {
        return ExitStatus::Code(-1);
    };
    match CRASHES.iter().find(|(s, _)| *s == c as u32) {
        Some(&(_, sig)) => ExitStatus::Signal(sig),
        None => ExitStatus::Code(c),
    }
}

// ---------------------------------------------------------------- files

/// Bytes available to this process on the volume of `path`.
pub fn free_space(_dir: &cap_std::fs::Dir, path: &Path) -> Option<u64> {
    let w = wide(path.as_os_str());
    let mut avail = 0u64;
    // SAFETY: `w` is NUL-terminated; the other outputs are optional (null).
    let ok = unsafe {
        GetDiskFreeSpaceExW(
            w.as_ptr(),
            &mut avail,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    (ok != 0).then_some(avail)
}

/// The absolute path with links resolved, without the `\\?\` prefix that
/// `std::fs::canonicalize` adds when the plain form means the same file
/// (cmd.exe refuses a `\\?\` working directory, and people read these).
pub fn canonicalize(path: &Path) -> io::Result<PathBuf> {
    let full = std::fs::canonicalize(path)?;
    let plain = match full.components().next() {
        Some(Component::Prefix(p)) => match p.kind() {
            Prefix::VerbatimDisk(_) => full.as_os_str().to_string_lossy()[4..].to_string(),
            Prefix::VerbatimUNC(..) => {
                format!("\\\\{}", &full.as_os_str().to_string_lossy()[8..])
            }
            _ => return Ok(full),
        },
        _ => return Ok(full),
    };
    let plain = PathBuf::from(plain);
    // Only when it names the same thing (no reserved names, no long path).
    if full.to_str().is_some() && std::fs::canonicalize(&plain).ok().as_ref() == Some(&full) {
        Ok(plain)
    } else {
        Ok(full)
    }
}

// ---------------------------------------------------------------- console

/// Turn on ANSI escape processing for a console stderr (Windows 10 and
/// later); false where the console cannot (then no colours are sent).
pub fn ansi_stderr() -> bool {
    let h = io::stderr().as_raw_handle() as HANDLE;
    let mut mode: CONSOLE_MODE = 0;
    // SAFETY: `h` is this process's stderr handle; GetConsoleMode fails
    // harmlessly on anything that is not a console.
    if unsafe { GetConsoleMode(h, &mut mode) } == 0 {
        return false;
    }
    if mode & ENABLE_VIRTUAL_TERMINAL_PROCESSING != 0 {
        return true;
    }
    // SAFETY: as above, on a console handle.
    unsafe { SetConsoleMode(h, mode | ENABLE_VIRTUAL_TERMINAL_PROCESSING) != 0 }
}

/// Write a command's output to our stdout or stderr, byte for byte. To a
/// console the bytes go with WriteFile, which shows them in the console's
/// code page (`chcp`): never decoded here (std's console writer would
/// refuse bytes that are not UTF-8 and re-encode the rest as UTF-16).
pub fn write_output(stream: Stream, bytes: &[u8]) -> io::Result<()> {
    match stream {
        Stream::Stdout => {
            let mut o = io::stdout().lock();
            o.flush()?;
            let h = o.as_raw_handle() as HANDLE;
            if is_console(h) {
                return write_handle(h, bytes);
            }
            o.write_all(bytes).and_then(|_| o.flush())
        }
        Stream::Stderr => {
            let mut o = io::stderr().lock();
            let h = o.as_raw_handle() as HANDLE;
            if is_console(h) {
                return write_handle(h, bytes);
            }
            o.write_all(bytes).and_then(|_| o.flush())
        }
    }
}

fn is_console(h: HANDLE) -> bool {
    let mut mode: CONSOLE_MODE = 0;
    // SAFETY: fails harmlessly on a handle that is not a console.
    unsafe { GetConsoleMode(h, &mut mode) != 0 }
}

fn write_handle(h: HANDLE, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let len = bytes.len().min(1 << 30) as u32;
        let mut n = 0u32;
        // SAFETY: `bytes` holds at least `len` readable bytes; synchronous
        // write (no OVERLAPPED); `h` is our own std handle, held locked.
        let ok = unsafe { WriteFile(h, bytes.as_ptr(), len, &mut n, std::ptr::null_mut()) };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

// ---------------------------------------------------------------- signals

/// Ctrl-C, Ctrl-Break, the console window closing, and system shutdown.
#[derive(Debug)]
pub struct StopSignals {
    c: Option<tokio::signal::windows::CtrlC>,
    brk: Option<tokio::signal::windows::CtrlBreak>,
    close: Option<tokio::signal::windows::CtrlClose>,
    shutdown: Option<tokio::signal::windows::CtrlShutdown>,
}

impl StopSignals {
    /// Listen for them (from now on).
    pub fn new() -> Self {
        use tokio::signal::windows as w;
        StopSignals {
            c: w::ctrl_c().ok(),
            brk: w::ctrl_break().ok(),
            close: w::ctrl_close().ok(),
            shutdown: w::ctrl_shutdown().ok(),
        }
    }

    /// The next one.
    pub async fn recv(&mut self) {
        async fn or_never(f: Option<impl std::future::Future<Output = Option<()>>>) {
            if let Some(f) = f {
                if f.await.is_some() {
                    return;
                }
            }
            std::future::pending().await
        }
        tokio::select! {
            _ = or_never(self.c.as_mut().map(|s| s.recv())) => {}
            _ = or_never(self.brk.as_mut().map(|s| s.recv())) => {}
            _ = or_never(self.close.as_mut().map(|s| s.recv())) => {}
            _ = or_never(self.shutdown.as_mut().map(|s| s.recv())) => {}
        }
    }
}

impl Default for StopSignals {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------- helpers

fn wide(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain(Some(0)).collect()
}

/// # Safety
/// `p` must point to a NUL-terminated UTF-16 string.
unsafe fn from_wide_ptr(p: *const u16) -> String {
    let mut n = 0;
    // SAFETY: the caller's promise: a NUL ends the string.
    while unsafe { *p.add(n) } != 0 {
        n += 1;
    }
    // SAFETY: `n` units were just read.
    let units = unsafe { std::slice::from_raw_parts(p, n) };
    OsString::from_wide(units).to_string_lossy().into_owned()
}
