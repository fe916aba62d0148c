//! The Windows build of `tether` (x86_64-pc-windows-gnu, linked by mingw)
//! run under Wine, both ways round:
//!
//! * `tether.exe` as the client of a Linux `tether serve` on loopback:
//!   exec (output bytes, exit code), shell, put and get checked with
//!   `sha256sum`, ls/stat/rm, echo and ping over UDP, a get killed halfway
//!   and resumed, a keyed and encrypted session, key files that others may
//!   read (the ACL check), `keygen`, and command output on a Windows console
//!   (a pty: the bytes are shown in the console's code page);
//! * `tether.exe serve` with a Linux client: put/get, exec through
//!   CreateProcess and `cmd /C`, output bytes, a crash status, and a timeout
//!   that kills the whole process tree (the job object).
//!
//! One Wine prefix for the run, in a temporary directory, with the
//! `ProcessPrng` shim (tests/wine/processprng.c) that Debian 12's Wine 8.0
//! lacks. Needs `wine64`, `x86_64-w64-mingw32-gcc` and the rustup target:
//! `make wine-deps` installs them (as root); without them the test says so
//! and passes, except under CI, where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tether_tests::{
    file_len, number_after, number_before, random_file, run, sha256sum, tether_bin, text,
    wait_output, wait_output_or_kill, wait_until, Server, TempDir,
};

const TARGET: &str = "x86_64-pc-windows-gnu";
const WINE: &str = "/usr/lib/wine/wine64";
const WINESERVER: &str = "/usr/lib/wine/wineserver";
const MINGW: &str = "x86_64-w64-mingw32-gcc";
const MIB: u64 = 1 << 20;
/// Output on stdout that is not UTF-8: "héllo" in UTF-8, "中文" in GBK.
const MIXED: &[u8] = b"h\xc3\xa9llo \xd6\xd0\xce\xc4 end\n";

#[test]
fn the_windows_build_under_wine() {
    let Some(wine) = Wine::setup() else { return };
    let started = Instant::now();
    let dir = wine.dir.path();
    let s = Server::start(dir, &["--allow-exec"]);
    let host = s.host();
    let steps: [(&str, &dyn Fn()); 9] = [
        ("client exec and shell", &|| client_exec(&wine, &host)),
        ("client put and get", &|| client_put_get(&wine, &s)),
        ("client ls, stat, rm, echo, ping", &|| {
            client_fs_udp(&wine, &s)
        }),
        ("client get resumed after a kill", &|| {
            client_resume(&wine, &s)
        }),
        ("client keyed and encrypted", &|| client_keyed(&wine)),
        ("client key files others may read", &|| {
            client_exposed_key(&wine)
        }),
        ("client keygen", &|| client_keygen(&wine)),
        ("client output on a console", &|| client_console(&wine, &s)),
        ("server under wine", &|| server(&wine)),
    ];
    for (name, step) in steps {
        let t = Instant::now();
        step();
        eprintln!("wine: {name}: ok in {:.1} s", t.elapsed().as_secs_f64());
    }
    eprintln!(
        "wine: all steps in {:.1} s (set-up {:.1} s before)",
        started.elapsed().as_secs_f64(),
        wine.setup_secs
    );
}

/// Exit code, stdout and stderr through tether.exe exec; a shell session.
fn client_exec(wine: &Wine, host: &str) {
    let o = wine.run(&[
        "exec",
        host,
        "--",
        "sh",
        "-c",
        "printf 'out\\n'; printf 'err\\n' >&2; printf '\\303\\251 \\326\\320\\316\\304\\377\\n'; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert_eq!(o.stdout, b"out\n\xc3\xa9 \xd6\xd0\xce\xc4\xff\n");
    assert_eq!(text(&o.stderr), "err\n");

    let mut c = wine.cmd();
    c.args(["shell", host])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn tether.exe shell");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"echo one; echo two >&2\n\nexit 4\n")
            .expect("write to tether.exe shell");
    }
    let o = wait_output(child, Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "one\n");
    assert!(text(&o.stderr).contains("two"), "{}", text(&o.stderr));
}

/// Upload then download 3 MiB; both copies checked with sha256sum.
fn client_put_get(wine: &Wine, s: &Server) {
    let dir = wine.dir.path();
    random_file(&dir.join("up.bin"), 3 * MIB + 17);
    let want = sha256sum(&dir.join("up.bin"));
    let o = wine.run(&["put", &s.host(), "up.bin", "sub/up.bin"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), format!("{want}  up.bin\n"));
    assert_eq!(sha256sum(&s.root.join("sub/up.bin")), want);

    let o = wine.run(&["get", &s.host(), "sub/up.bin", "down.bin"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), format!("{want}  down.bin\n"));
    assert_eq!(sha256sum(&dir.join("down.bin")), want);
    assert!(!dir.join("down.bin.tether-part").exists());
}

fn client_fs_udp(wine: &Wine, s: &Server) {
    std::fs::write(s.root.join("listed.txt"), b"12345").unwrap();
    let o = wine.run(&["ls", &s.host()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("listed.txt"),
        "{}",
        text(&o.stdout)
    );
    let o = wine.run(&["stat", &s.host(), "listed.txt"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.starts_with('-') && out.contains(" 5 "), "{out}");
    let o = wine.run(&["rm", &s.host(), "listed.txt"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!s.root.join("listed.txt").exists());
    let o = wine.run(&["echo", &s.host(), "wine"]);
    assert_eq!(text(&o.stdout), "WINE\n", "{}", text(&o.stderr));
    let o = wine.run(&["ping", &s.host(), "-c", "2", "-i", "100ms"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("2 sent, 2 received"),
        "{}",
        text(&o.stdout)
    );
}

/// A download killed (SIGKILL to the Wine process) after 4 MiB continues
/// from its partial: the second run transfers only the rest.
fn client_resume(wine: &Wine, s: &Server) {
    // At 4 MiB/s the download needs 10 s: the kill lands well before the
    // end even on a loaded machine.
    const SIZE: u64 = 40 * MIB;
    let dir = wine.dir.path();
    random_file(&s.root.join("big.bin"), SIZE);
    let part = dir.join("big.bin.tether-part");
    let mut child = wine
        .cmd()
        .args(["get", &s.host(), "big.bin", "--limit-rate", "4M"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tether.exe get");
    let progressed = wait_until(Duration::from_secs(60), || file_len(&part) >= 4 * MIB);
    child.kill().expect("kill tether.exe");
    child.wait().expect("wait tether.exe");
    assert!(progressed, "the download did not progress");
    assert!(
        !dir.join("big.bin").exists(),
        "a partial under the final name"
    );
    let have = file_len(&part);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(file_len(&part), have, "the partial still grows: not killed");
    assert!((4 * MIB..SIZE).contains(&have), "partial of {have} bytes");

    let o = wine.run(&["get", &s.host(), "big.bin"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert_eq!(number_after(&e, "resumed at "), Some(have), "{e}");
    assert_eq!(number_before(&e, " transferred"), Some(SIZE - have), "{e}");
    assert_eq!(
        sha256sum(&dir.join("big.bin")),
        sha256sum(&s.root.join("big.bin"))
    );
    assert!(!part.exists());
}

/// A key made on Linux (mode 0600): authenticated and encrypted; another
/// key is refused by the server.
fn client_keyed(wine: &Wine) {
    let dir = wine.dir.path().join("keyed");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("k.key");
    linux_keygen(&key);
    let s = Server::start(&dir, &["--allow-exec", "--key-file", key.to_str().unwrap()]);
    random_file(&s.root.join("secret.bin"), MIB + 3);
    let k = "keyed/k.key";
    let o = wine.run(&[
        "-vv",
        "exec",
        &s.host(),
        "--key-file",
        k,
        "--encrypt",
        "--",
        "echo",
        "sealed",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "sealed\n");
    assert!(
        text(&o.stderr).contains("authenticated, encrypted"),
        "{}",
        text(&o.stderr)
    );
    let o = wine.run(&[
        "get",
        &s.host(),
        "secret.bin",
        "keyed/secret.bin",
        "--key-file",
        k,
        "--encrypt",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        sha256sum(&dir.join("secret.bin")),
        sha256sum(&s.root.join("secret.bin"))
    );
    linux_keygen(&dir.join("other.key"));
    let o = wine.run(&["ls", &s.host(), "--key-file", "keyed/other.key"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("AUTH_FAILED") && e.contains("same key"), "{e}");
}

/// Wine shows a file's Unix mode as an ACL: group/other read bits become
/// an entry for Everyone, which tether.exe refuses, naming the fix.
fn client_exposed_key(wine: &Wine) {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = wine.dir.path();
    linux_keygen(&dir.join("open.key"));
    std::fs::set_permissions(dir.join("open.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = wine.run(&["ls", "127.0.0.1:9", "--key-file", "open.key"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("'open.key' may be read by other users")
            && e.contains("Everyone")
            && e.contains("icacls \"open.key\" /inheritance:r"),
        "{e}"
    );
    // The same file made private is accepted (the connection is then refused).
    std::fs::set_permissions(dir.join("open.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = wine.run(&["ls", "127.0.0.1:9", "--key-file", "open.key"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(!e.contains("other users") && e.contains("refused"), "{e}");
}

/// `tether.exe keygen` never leaves a key that tether refuses: Wine keeps
/// no Windows ACL on a Unix file system, and keygen notices and says so.
fn client_keygen(wine: &Wine) {
    let dir = wine.dir.path();
    let o = wine.run(&["keygen", "wine.key"]);
    if o.status.success() {
        assert!(text(&o.stdout).contains("readable by you only"));
        let o = wine.run(&["ls", "127.0.0.1:9", "--key-file", "wine.key"]);
        assert!(
            !text(&o.stderr).contains("other users"),
            "keygen wrote a key that tether refuses: {}",
            text(&o.stderr)
        );
    } else {
        let e = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(
            e.contains("cannot write the key file 'wine.key'") && e.contains("did not take effect"),
            "{e}"
        );
        assert!(!dir.join("wine.key").exists(), "a refused key was left");
    }
}

/// On a console (a pty: Wine's console), command output is written as
/// bytes and shown in the console's code page: GBK output reads as GBK
/// under `chcp 936`, UTF-8 as UTF-8 under `chcp 65001`. (Rust's own
/// console writer would refuse the bytes that are not UTF-8.) The progress
/// bar is drawn there, and log levels are coloured there but not in a pipe.
fn client_console(wine: &Wine, s: &Server) {
    if which("script").is_none() {
        assert!(std::env::var_os("CI").is_none(), "`script` is missing");
        eprintln!("wine: console step skipped: `script` (util-linux) is missing");
        return;
    }
    std::fs::write(s.root.join("mixed.txt"), MIXED).unwrap();
    for (cp, want) in [(936, "中文"), (65001, "héllo")] {
        let line = format!(
            "{WINE} cmd /C \"chcp {cp} >nul & {} exec {} -- cat mixed.txt\"",
            windows_path(&wine.exe),
            s.host()
        );
        let o = wine.pty(&line);
        let out = text(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "code page {cp}: {out}");
        assert!(out.contains(want), "code page {cp}: {out:?}");
    }

    random_file(&s.root.join("bar.bin"), 3 * MIB / 2);
    let exe = wine.exe.display();
    let o = wine.pty(&format!(
        "{WINE} {exe} get {} bar.bin --limit-rate 1M",
        s.host()
    ));
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("get [=") && out.contains(" ETA "), "{out:?}");

    // A key against a server without one, --insecure: a warning.
    linux_keygen(&wine.dir.path().join("console.key"));
    let args = format!("ls {} --key-file console.key --insecure", s.host());
    let o = wine.pty(&format!("{WINE} {exe} {args}"));
    let out = text(&o.stdout);
    assert!(out.contains("\x1b[33m WARN"), "no yellow WARN: {out:?}");
    let o = wine.run(&args.split(' ').collect::<Vec<_>>());
    let e = text(&o.stderr);
    assert!(e.contains(" WARN ") && !e.contains('\x1b'), "{e:?}");
}

/// tether.exe serve, a Linux client.
fn server(wine: &Wine) {
    let dir = wine.dir.path();
    let root = dir.join("wroot");
    std::fs::create_dir_all(&root).unwrap();
    let mut c = wine.cmd();
    c.args(["serve", "--listen", "127.0.0.1:0", "--allow-exec", "--root"])
        .arg(windows_path(&root));
    let s = Server::spawn(c, &root);
    let h = s.host();
    assert!(
        s.wait_log("serving Z:\\", Duration::from_secs(30)),
        "{}",
        s.log()
    );

    random_file(&dir.join("w.bin"), 2 * MIB + 5);
    let want = sha256sum(&dir.join("w.bin"));
    let o = run(&["put", &h, dir.join("w.bin").to_str().unwrap(), "d/w.bin"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sha256sum(&root.join("d/w.bin")), want);
    let back = dir.join("w-back.bin");
    let o = run(&["get", &h, "d/w.bin", back.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sha256sum(&back), want);

    // cmd /C, an exit code.
    let o = run(&["exec", &h, "--shell", "echo hi& exit /b 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "hi\r\n");
    // An argv through CreateProcess: the argument with a space stays one.
    let o = run(&["exec", &h, "--", "cmd", "/C", "echo", "a b"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "\"a b\"\r\n");
    // Output bytes as the command wrote them.
    std::fs::write(root.join("mixed.txt"), MIXED).unwrap();
    let o = run(&["exec", &h, "--shell", "type mixed.txt"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(o.stdout, MIXED);
    // A crash status (STATUS_ACCESS_VIOLATION) reads as SIGSEGV: 128+11.
    let o = run(&["exec", &h, "--shell", "exit -1073741819"]);
    assert_eq!(o.status.code(), Some(139), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("killed by signal 11"));
    // A code outside 0-255 never reads as success.
    let o = run(&["exec", &h, "--shell", "exit 256"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("code 256"), "{}", text(&o.stderr));
    // A program that does not exist.
    let o = run(&["exec", &h, "--", "no-such-program"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o.stderr).contains("cannot start 'no-such-program'"));

    // A timeout kills the whole tree at once: cmd, a ping it started in
    // the background, and the ping it waits for (left alone, they would
    // run 90 and 60 seconds).
    let (bg, fg) = ("-n 90 127.0.0.1", "-n 60 127.0.0.1");
    let ping = |n: &'static str| {
        move |c: &str| {
            c.split_whitespace()
                .next()
                .is_some_and(|w| w.ends_with("ping") || w.ends_with("ping.exe"))
                && c.contains(n)
        }
    };
    let cmd = |c: &str| c.contains("cmd.exe") && c.contains("start /b ping -n 90");
    let t = Instant::now();
    let child = tether_tests::tether()
        .args(["exec", &h, "--timeout", "5s", "--shell"])
        .arg(format!("start /b ping {bg} >nul & ping {fg} >nul"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tether exec");
    let all = wait_until(Duration::from_secs(5), || {
        !live(cmd).is_empty() && !live(ping(bg)).is_empty() && !live(ping(fg)).is_empty()
    });
    let o = wait_output(child, Duration::from_secs(60));
    assert!(all, "cmd and its two pings never ran together");
    assert_eq!(o.status.code(), Some(124), "{}", text(&o.stderr));
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "a 5 s timeout took {took:?}"
    );
    let gone = wait_until(Duration::from_secs(10), || {
        live(cmd).is_empty() && live(ping(bg)).is_empty() && live(ping(fg)).is_empty()
    });
    assert!(
        gone,
        "still running after the timeout: {:?} {:?} {:?}",
        live(cmd),
        live(ping(bg)),
        live(ping(fg))
    );
    assert!(s.log().contains("exit TimedOut"), "{}", s.log());
}

/// The set-up: tether.exe built, a Wine prefix with the ProcessPrng shim.
struct Wine {
    dir: TempDir,
    prefix: PathBuf,
    exe: PathBuf,
    setup_secs: f64,
}

impl Wine {
    fn setup() -> Option<Wine> {
        if let Some(why) = missing() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{why}: CI runs this test; `make wine-deps` installs what it needs (as root)"
            );
            eprintln!("wine: skipped: {why}; `make wine-deps` (as root) installs what it needs");
            return None;
        }
        let t = Instant::now();
        let exe = windows_exe();
        let built = t.elapsed().as_secs_f64();
        let dir = TempDir::new().expect("temp dir");
        let prefix = dir.path().join("prefix");
        let mut wine = Wine {
            dir,
            prefix,
            exe,
            setup_secs: 0.0,
        };
        let t = Instant::now();
        let mut c = Command::new(WINE);
        c.args(["wineboot", "--init"]);
        wine.env(&mut c);
        let o = output(c, Duration::from_secs(300));
        assert!(o.status.success(), "wineboot failed: {}", text(&o.stderr));
        let dll = wine
            .prefix
            .join("drive_c/windows/system32/bcryptprimitives.dll");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("wine/processprng.c");
        let o = output(
            {
                let mut c = Command::new(MINGW);
                c.args(["-shared", "-O2", "-s", "-o"])
                    .arg(&dll)
                    .arg(&src)
                    .arg("-ladvapi32");
                c
            },
            Duration::from_secs(120),
        );
        assert!(o.status.success(), "building the shim: {}", text(&o.stderr));
        wine.setup_secs = built + t.elapsed().as_secs_f64();
        eprintln!(
            "wine: tether.exe built in {built:.1} s, prefix ready in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        Some(wine)
    }

    /// The prefix, quiet, without Mono and Gecko (not needed, slow to set up).
    fn env(&self, c: &mut Command) {
        c.env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("RUST_LOG")
            .env_remove("TETHER_RETRIES")
            .env_remove("TETHER_KEY_FILE")
            .env_remove("TETHER_KEY")
            .env_remove("TETHER_ENCRYPT")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
    }

    /// `wine64 tether.exe`, in the temporary directory.
    fn cmd(&self) -> Command {
        let mut c = Command::new(WINE);
        c.arg(&self.exe);
        self.env(&mut c);
        c
    }

    /// Run a shell line on a pty (`script`), where Wine gives its programs
    /// a console; its output, terminal codes included, is the stdout.
    fn pty(&self, line: &str) -> Output {
        let mut c = Command::new("script");
        c.args(["-qec", line, "/dev/null"]);
        self.env(&mut c);
        output(c, Duration::from_secs(60))
    }

    /// Run `tether.exe ARGS` to completion.
    fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        output(c, Duration::from_secs(120))
    }
}

impl Drop for Wine {
    /// Stop every process of the prefix (the TempDir then goes).
    fn drop(&mut self) {
        let mut c = Command::new(WINESERVER);
        c.arg("-k");
        self.env(&mut c);
        let _ = output(c, Duration::from_secs(30));
    }
}

/// What is missing to run the test, if anything.
fn missing() -> Option<String> {
    if !Path::new(WINE).exists() {
        return Some(format!("{WINE} is missing (Debian: wine64)"));
    }
    if which(MINGW).is_none() {
        return Some(format!("{MINGW} is missing (Debian: gcc-mingw-w64-x86-64)"));
    }
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| text(&o.stdout).trim().to_string())?;
    if !Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .exists()
    {
        return Some(format!(
            "the Rust target {TARGET} is missing (rustup target add {TARGET})"
        ));
    }
    None
}

/// Build tether.exe with this test's profile, into the same target dir.
fn windows_exe() -> PathBuf {
    if let Some(p) = std::env::var_os("TETHER_EXE") {
        return PathBuf::from(p);
    }
    let linux = tether_bin(); // target/<profile>/tether
    let profile_dir = linux.parent().expect("profile dir");
    let target_dir = profile_dir.parent().expect("target dir");
    let profile = profile_dir.file_name().expect("profile name");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "--quiet", "-p", "tether-host", "--bin", "tether"])
        .args(["--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir);
    if profile == "release" {
        c.arg("--release");
    }
    let st = c.status().expect("run cargo build for tether.exe");
    assert!(st.success(), "cargo build --target {TARGET} failed");
    let exe = target_dir.join(TARGET).join(profile).join("tether.exe");
    assert!(exe.exists(), "{} missing after the build", exe.display());
    exe
}

fn linux_keygen(path: &Path) {
    let o = run(&["keygen", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

/// `/a/b` as Wine's `Z:\a\b`.
fn windows_path(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Run `c` to completion (bounded), capturing its output.
fn output(mut c: Command, limit: Duration) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap_or_else(|e| panic!("spawn {c:?}: {e}"));
    let (o, killed) = wait_output_or_kill(child, limit);
    assert!(!killed, "{c:?} ran past {limit:?}: {}", text(&o.stderr));
    o
}

/// Live (not zombie) processes whose command line `matches`, with it.
fn live(matches: impl Fn(&str) -> bool) -> Vec<(u32, String)> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = text(&cmdline).replace('\0', " ");
        if !matches(&cmdline) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if state.is_some_and(|s| s != "Z" && s != "X") {
            pids.push((pid, cmdline));
        }
    }
    pids
}
