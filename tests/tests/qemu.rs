//! The real firmware image in QEMU (`mps2-an386`, Cortex-M4): driven over
//! its emulated LAN9118 on a TAP with the real `tether` client, and over
//! UART0 (raw tether frames on a byte stream) with a test peer, keyed.
//!
//! Needs root, /dev/net/tun, iproute2 and qemu-system-arm (`make test`
//! installs it). Without them it reports itself SKIPPED on the terminal;
//! under CI (CI set) a missing qemu-system-arm fails instead.

use std::io::Write as _;
use std::process::Output;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tether_proto::{Argv, Command, Exec, ExitStatus, Message, Stream};
use tether_tests::conformance::kit::{get_exact, put};
use tether_tests::conformance::Observed;
use tether_tests::peer::{nonce, Peer};
use tether_tests::qemu::{image, missing_qemu, prov_block, random_seed, Qemu, DEV_IP};
use tether_tests::tap::{enter, skip, HOST_IP};
use tether_tests::{tether, TempDir};

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tether failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exec_msg<'a>(argv: &[&str], buf: &'a mut Vec<u8>) -> Message<'a> {
    buf.resize(argv.iter().map(|a| a.len() + 1).sum(), 0);
    Message::Exec(Exec {
        command: Command::Argv(Argv::join(argv, buf).expect("argv")),
        timeout_ms: None,
    })
}

/// Run `argv` over the peer; returns (stdout, exit code).
fn exec(p: &mut Peer<'_>, id: u32, argv: &[&str]) -> (String, i32) {
    let mut buf = Vec::new();
    p.request(id, exec_msg(argv, &mut buf), &[])
        .expect("send Exec");
    let mut out = Vec::new();
    loop {
        let g = p.recv_checked().expect("a reply to Exec");
        assert_eq!(g.id, id, "{}", g.describe());
        match g.message() {
            Message::Output {
                stream: Stream::Stdout,
            } => out.extend_from_slice(&g.body),
            Message::Output { .. } => {}
            Message::Exit {
                status: ExitStatus::Code(c),
            } => return (String::from_utf8_lossy(&out).into_owned(), c),
            m => panic!("unexpected reply to Exec: {m:?}"),
        }
    }
}

/// Poll the device's `jobs` until the last job ended; its line.
fn wait_job(keyed: &dyn Fn(&[&str]) -> Output, q: &Qemu) -> String {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let line = ok(&keyed(&["exec", DEV_IP, "--", "jobs"]))
            .trim()
            .to_string();
        if line.contains(": done: ") || line.contains(": failed: ") {
            return line;
        }
        assert!(
            Instant::now() < end,
            "the job never ended: {line}\nlog:\n{}",
            q.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// "N ms" from a job's line.
fn job_ms(line: &str) -> String {
    line.split(" in ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or("?")
        .to_string()
}

#[test]
fn firmware_in_qemu_over_the_lan9118_and_uart0() {
    let Some(ns) = enter("qemu", "tether-qemutest") else {
        return;
    };
    if let Some(why) = missing_qemu() {
        assert!(std::env::var_os("CI").is_none(), "under CI: {why}");
        skip("qemu", &why);
        return;
    }
    let image = image();
    let dir = TempDir::new().unwrap();
    let key_file = dir.path().join("device.key");
    assert!(tether()
        .arg("keygen")
        .arg(&key_file)
        .status()
        .unwrap()
        .success());
    let key_hex = std::fs::read_to_string(&key_file).unwrap();
    let key: [u8; 32] = hex::decode(key_hex.trim()).unwrap().try_into().unwrap();
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Linux re-sends an unanswered ARP request only after 1 s: one sent
    // while QEMU is still starting would dominate the boot figure.
    let mut c = ns.exec(std::path::Path::new("sh"));
    c.args([
        "-c",
        "echo 100 > /proc/sys/net/ipv4/neigh/tap0/retrans_time_ms",
    ]);
    assert!(c.status().unwrap().success());
    let mut q = Qemu::boot(
        &ns,
        &image,
        &prov_block(Some(key), random_seed(), unix_ms),
        dir.path(),
    );

    let keyed = |args: &[&str]| {
        let mut c = ns.exec(&tether_tests::tether_bin());
        c.env("TETHER_KEY_FILE", &key_file)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        tether_tests::wait_output(c.spawn().unwrap(), Duration::from_secs(60))
    };

    // Up once it answers a UDP ping.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if ns
            .tether(&[
                "-qq",
                "ping",
                DEV_IP,
                "-c",
                "1",
                "--timeout",
                "100ms",
                "--retries",
                "0",
            ])
            .status
            .success()
        {
            break;
        }
        assert!(q.running(), "QEMU exited; log:\n{}", q.log_text());
        assert!(Instant::now() < end, "no answer; log:\n{}", q.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let boot = q.started.elapsed();
    let _ = writeln!(std::io::stderr(), "qemu: boot to first answer {boot:?}");
    let log = q.log_text();
    assert!(log.contains("key yes"), "{log}");
    assert!(log.contains("serving tether"), "{log}");

    // Over the LAN9118, with the real client.
    assert!(ok(&ns.tether(&["ping", DEV_IP, "-c", "2", "-i", "50ms"])).contains("2 received"));
    let help = ok(&keyed(&["exec", DEV_IP, "--", "help"]));
    assert!(help.contains("sha256") && help.contains("uptime"), "{help}");
    assert_eq!(
        ok(&keyed(&["exec", DEV_IP, "--", "echo", "over", "lan9118"])),
        "over lan9118\n"
    );
    let unkeyed = ns.tether(&["exec", DEV_IP, "--", "echo", "x"]);
    assert!(!unkeyed.status.success(), "served without the key");
    let file: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let local = dir.path().join("up.bin");
    std::fs::write(&local, &file).unwrap();
    let t = Instant::now();
    ok(&keyed(&["put", DEV_IP, local.to_str().unwrap(), "up.bin"]));
    let put_time = t.elapsed();
    let back = dir.path().join("back.bin");
    let t = Instant::now();
    ok(&keyed(&["get", DEV_IP, "up.bin", back.to_str().unwrap()]));
    let get_time = t.elapsed();
    assert!(
        std::fs::read(&back).unwrap() == file,
        "the file came back different"
    );
    let _ = writeln!(
        std::io::stderr(),
        "qemu: 1 MiB over TAP: put {put_time:?}, get {get_time:?}"
    );
    let digest = hex::encode(Sha256::digest(&file));
    assert_eq!(
        ok(&keyed(&["exec", DEV_IP, "--", "sha256", "up.bin"])),
        format!("{digest}  up.bin\n")
    );
    assert!(ok(&keyed(&["ls", DEV_IP])).contains("up.bin"));
    let t = ok(&ns.tether(&["time", DEV_IP]));
    assert!(t.starts_with("20") && t.trim_end().ends_with('Z'), "{t}");
    assert_eq!(ok(&ns.tether(&["echo", DEV_IP, "qemu"])), "QEMU\n");

    // The device as a client (the async driver over embassy-net): it
    // pushes up.bin to a `tether serve` on the TAP's host side holding the
    // same key, then fetches it back under another name.
    let served = dir.path().join("served");
    std::fs::create_dir(&served).unwrap();
    let server = ns.serve(&served, 7117, Some(&key_file));
    let host = format!("{HOST_IP}:7117");
    let started = ok(&keyed(&["exec", DEV_IP, "--", "push", &host, "up.bin"]));
    assert!(started.contains("started"), "{started}");
    let busy = keyed(&["exec", DEV_IP, "--", "push", &host, "up.bin"]);
    let line = wait_job(&keyed, &q);
    assert!(
        line.contains(": done: 1048576 B in ")
            && line.contains(&digest)
            && line.ends_with(", sealed"),
        "{line}\nserver log:\n{}",
        server.log()
    );
    let _ = writeln!(
        std::io::stderr(),
        "qemu: device push 1 MiB (sealed): {}",
        job_ms(&line)
    );
    // A second job while one runs is refused (or it was already over).
    assert!(
        busy.status.success() || String::from_utf8_lossy(&busy.stderr).contains("a job is running"),
        "{busy:?}"
    );
    let copy = std::fs::read(served.join("up.bin")).expect("the server's copy");
    assert_eq!(
        hex::encode(Sha256::digest(&copy)),
        digest,
        "the server's copy differs"
    );
    ok(&keyed(&[
        "exec", DEV_IP, "--", "fetch", &host, "up.bin", "back.bin",
    ]));
    let line = wait_job(&keyed, &q);
    assert!(
        line.contains("fetch up.bin from")
            && line.contains(": done: 1048576 B")
            && line.contains(&digest),
        "{line}\nserver log:\n{}",
        server.log()
    );
    let _ = writeln!(
        std::io::stderr(),
        "qemu: device fetch 1 MiB (sealed): {}",
        job_ms(&line)
    );
    assert_eq!(
        ok(&keyed(&["exec", DEV_IP, "--", "sha256", "back.bin"])),
        format!("{digest}  back.bin\n")
    );
    // The server's errors reach the device's job: no such file, no key.
    ok(&keyed(&["exec", DEV_IP, "--", "fetch", &host, "nope.bin"]));
    let line = wait_job(&keyed, &q);
    assert!(
        line.contains("failed") && line.contains("NOT_FOUND"),
        "{line}"
    );
    drop(server);
    let open_root = dir.path().join("open");
    std::fs::create_dir(&open_root).unwrap();
    let open = ns.serve(&open_root, 7118, None);
    ok(&keyed(&[
        "exec",
        DEV_IP,
        "--",
        "push",
        &format!("{HOST_IP}:7118"),
        "up.bin",
    ]));
    let line = wait_job(&keyed, &q);
    assert!(
        line.contains("failed") && line.contains("does not authenticate"),
        "{line}"
    );
    assert!(
        !open_root.join("up.bin").exists(),
        "an unauthenticated server got the file"
    );
    drop(open);
    let usage = keyed(&["exec", DEV_IP, "--", "push", "nowhere", "up.bin"]);
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");

    // Over UART0: raw frames on the byte stream.
    let uart = q.connect_uart0(Duration::from_secs(5));
    let mut p = Peer::new(uart.try_clone().unwrap());
    p.handshake(Some(key), nonce(1))
        .expect("keyed handshake over UART0");
    p.ping_ok(2).expect("Ping over UART0");
    assert_eq!(
        exec(&mut p, 3, &["echo", "over", "uart"]),
        ("over uart\n".into(), 0)
    );
    let small: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let r = put(&mut p, "serial.bin", &small);
    assert!(matches!(r, Ok(Observed::Done)), "put over UART0: {r:?}");
    let r = get_exact(&mut p, "serial.bin", &small);
    assert!(matches!(r, Ok(Observed::Done)), "get over UART0: {r:?}");
    // A file put over TCP, read over UART0.
    let r = get_exact(&mut p, "up.bin", &file);
    assert!(matches!(r, Ok(Observed::Done)), "get over UART0: {r:?}");

    // Garbage on the line: an Error and a closed session, then a fresh
    // session on the same line works; the device is still on the network.
    p.send(&[0xff; 64]).unwrap();
    let g = p.recv().expect("an Error for garbage");
    assert!(g.error().is_some(), "{}", g.describe());
    drop(p);
    // Raw frames have no resynchronisation (a serial framing layer will):
    // the rest of the garbage may start further sessions that answer with
    // Errors too. Drain the line until it is quiet, as a peer must.
    let mut quiet = uart.try_clone().unwrap();
    quiet
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut sink = [0u8; 4096];
    while std::io::Read::read(&mut quiet, &mut sink).is_ok_and(|n| n > 0) {}
    uart.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut p = Peer::new(uart.try_clone().unwrap());
    p.handshake(Some(key), nonce(9))
        .expect("a new session after garbage");
    p.ping_ok(1).expect("Ping in the new session");
    // A wrong key is refused.
    drop(p);
    let mut p = Peer::new(uart);
    let refused = p.handshake(Some([7; 32]), nonce(10));
    assert!(refused.is_err(), "a wrong key was accepted");
    assert!(ok(&ns.tether(&["ping", DEV_IP, "-c", "1"])).contains("1 received"));

    // Garbage over TCP: the connection closes, the device serves on.
    {
        let mut c = ns.exec(std::path::Path::new("bash"));
        c.args(["-c", &format!("exec 3<>/dev/tcp/{DEV_IP}/7117; head -c 300 /dev/zero | tr '\\0' '\\377' >&3; timeout 5 cat <&3 >/dev/null; true")]);
        assert!(c.status().unwrap().success());
    }
    assert_eq!(
        ok(&keyed(&["exec", DEV_IP, "--", "echo", "still", "here"])),
        "still here\n"
    );

    assert!(q.running(), "QEMU exited");
    let log = q.log_text();
    assert!(!log.contains("PANIC"), "{log}");
}
