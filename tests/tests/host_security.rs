//! Security of `tether serve` and the client, through the real binary:
//! keys (`tether keygen`, every key source, refusals that say what to do),
//! mutual authentication, tampering on the path detected, safe defaults
//! (loopback only without a key, --read-only, --allow-cmd), the transfer
//! limit and the back-off after failed authentication.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tether_proto::{ErrorCode, Message};
use tether_tests::peer::{tcp_from, Peer};
use tether_tests::relay::{Relay, Tamper};
use tether_tests::{random_file, run, sha256sum, tether, text, wait_until, Server, TempDir};

/// Run `tether ARGS` with extra environment variables.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = tether();
    c.args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tether_tests::wait_output(c.spawn().expect("spawn tether"), Duration::from_secs(120))
}

/// `tether keygen PATH`, which must succeed.
fn keygen(path: &Path) -> String {
    let o = run(&["keygen", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

fn keyed_server(dir: &Path, extra: &[&str]) -> (Server, PathBuf, String) {
    let key = dir.join("server.key");
    let hex = keygen(&key);
    let mut args = vec!["--key-file", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    let s = Server::start(dir, &args);
    (s, key, hex)
}

#[test]
fn keygen_writes_a_private_key_and_never_shows_it() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("k");
    let o = run(&["keygen", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let content = std::fs::read_to_string(&path).unwrap();
    assert_eq!(content.len(), 65, "{content:?}");
    assert!(content.ends_with('\n'));
    let hex = content.trim();
    assert!(hex
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(out.contains(path.to_str().unwrap()), "{out}");
    assert!(
        err.contains("--key-file") && err.contains("TETHER_KEY_FILE"),
        "{err}"
    );
    assert!(
        !out.contains(hex) && !err.contains(hex),
        "the key is never printed"
    );

    // An existing key is kept unless --force.
    let o = run(&["keygen", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
    let o = run(&["keygen", path.to_str().unwrap(), "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let again = std::fs::read_to_string(&path).unwrap();
    assert_ne!(again, content, "a new random key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_keyed_server_serves_clients_holding_the_key_from_any_source() {
    let dir = TempDir::new().unwrap();
    let (s, key, hex) = keyed_server(dir.path(), &["--allow-exec"]);
    let local = dir.path().join("data.bin");
    random_file(&local, 3 << 20);
    let want = sha256sum(&local);
    let kf = key.to_str().unwrap();

    // --key-file: put, get back, exec.
    let o = run(&["put", &s.host(), local.to_str().unwrap(), "--key-file", kf]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sha256sum(&s.root.join("data.bin")), want);
    // TETHER_KEY_FILE.
    let back = dir.path().join("back.bin");
    let o = run_env(
        &["get", &s.host(), "data.bin", back.to_str().unwrap()],
        &[("TETHER_KEY_FILE", kf)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sha256sum(&back), want);
    // TETHER_KEY.
    let o = run_env(
        &["exec", &s.host(), "--", "sha256sum", "data.bin"],
        &[("TETHER_KEY", &hex)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with(&want));
    // --key-file wins over the environment.
    let other = dir.path().join("other.key");
    keygen(&other);
    let o = run_env(
        &["ls", &s.host(), "--key-file", kf],
        &[("TETHER_KEY_FILE", other.to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    // UDP stays unauthenticated by design: echo/time/ping need no key.
    let o = run(&["echo", &s.host(), "udp"]);
    assert_eq!(text(&o.stdout), "UDP\n");

    // The key appears in no log and no output.
    let log = s.log();
    assert!(log.contains("clients must authenticate"), "{log}");
    assert!(!log.contains(&hex), "the key leaked into the log");
}

#[test]
fn clients_without_the_right_key_are_told_what_to_do() {
    let dir = TempDir::new().unwrap();
    let (s, _key, _) = keyed_server(dir.path(), &[]);
    std::fs::write(s.root.join("secret.txt"), b"secret").unwrap();

    let o = run(&["stat", &s.host(), "secret.txt"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("AUTH_REQUIRED")
            && e.contains("requires a key")
            && e.contains("TETHER_KEY_FILE")
            && e.contains("--key-file"),
        "{e}"
    );

    let wrong = dir.path().join("wrong.key");
    keygen(&wrong);
    let o = run(&[
        "stat",
        &s.host(),
        "secret.txt",
        "--key-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("AUTH_FAILED") && e.contains("same key"), "{e}");
    assert!(!e.contains("secret.txt") || e.contains("AUTH_FAILED"));
    assert!(s.wait_log("authentication failed", Duration::from_secs(30)));
}

#[test]
fn unusable_keys_are_refused_naming_the_file_and_the_fix() {
    let dir = TempDir::new().unwrap();
    let good = dir.path().join("good.key");
    keygen(&good);
    let s = Server::start(dir.path(), &["--key-file", good.to_str().unwrap()]);

    // Readable by others.
    let open = dir.path().join("open.key");
    std::fs::copy(&good, &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(&["ls", &s.host(), "--key-file", open.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("open.key") && e.contains("chmod 600"), "{e}");
    // The server refuses to start with it too.
    let o = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        open.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("chmod 600"));

    // Malformed.
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not a key\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = run(&["ls", &s.host(), "--key-file", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("bad.key") && e.contains("malformed") && e.contains("tether keygen"),
        "{e}"
    );
    assert!(!e.contains("not a key"), "the content is not echoed: {e}");

    // Missing, through the environment.
    let o = run_env(&["ls", &s.host()], &[("TETHER_KEY_FILE", "/nonexistent/k")]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("/nonexistent/k") && e.contains("TETHER_KEY_FILE"),
        "{e}"
    );

    // TETHER_KEY that is not 64 hex digits.
    let o = run_env(&["ls", &s.host()], &[("TETHER_KEY", "abc")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("TETHER_KEY is malformed"));

    // A key on the command line is refused outright (usage error).
    let o = run(&["ls", &s.host(), "--key", "00"]);
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(
        e.contains("never taken on the command line") && e.contains("--key-file"),
        "{e}"
    );
}

#[test]
fn a_client_with_a_key_refuses_a_server_without_one_unless_insecure() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &[]);
    assert!(s.wait_log(
        "no key: serving unauthenticated on loopback only",
        Duration::from_secs(30)
    ));
    let key = dir.path().join("k");
    keygen(&key);
    let o = run(&["ls", &s.host(), "--key-file", key.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("does not authenticate") && e.contains("--insecure"),
        "{e}"
    );
    let o = run(&[
        "ls",
        &s.host(),
        "--key-file",
        key.to_str().unwrap(),
        "--insecure",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

#[test]
fn without_a_key_only_loopback_addresses_are_served() {
    let dir = TempDir::new().unwrap();
    for listen in ["0.0.0.0:0", "[::]:0", "192.0.2.1:0"] {
        let o = run(&[
            "serve",
            "--listen",
            listen,
            "--root",
            dir.path().to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{listen}");
        let e = text(&o.stderr);
        assert!(
            e.contains("without a key")
                && e.contains("tether keygen")
                && e.contains("--key-file")
                && e.contains("--insecure"),
            "{listen}: {e}"
        );
    }
    // Any loopback address is fine.
    let s = Server::start_at(dir.path(), 0, &[]);
    let o = run(&["ls", &s.host()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

#[test]
fn read_only_refuses_uploads_and_removals() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &["--read-only"]);
    std::fs::write(s.root.join("keep.txt"), b"keep").unwrap();
    let local = dir.path().join("up.txt");
    std::fs::write(&local, b"up").unwrap();
    let o = run(&["put", &s.host(), local.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("READ_ONLY") && e.contains("--read-only"), "{e}");
    assert!(!s.root.join("up.txt").exists());
    let o = run(&["rm", &s.host(), "keep.txt"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("READ_ONLY"));
    assert!(s.root.join("keep.txt").exists());
    let back = dir.path().join("back.txt");
    let o = run(&["get", &s.host(), "keep.txt", back.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(&back).unwrap(), b"keep");
}

#[test]
fn the_allow_list_runs_only_the_programs_named() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(
        dir.path(),
        &[
            "--allow-exec",
            "--allow-cmd",
            "echo",
            "--allow-cmd",
            "/bin/true",
        ],
    );
    let o = run(&["exec", &s.host(), "--", "echo", "allowed"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "allowed\n");
    let o = run(&["exec", &s.host(), "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    for argv in [&["ls"][..], &["/bin/echo", "x"], &["./echo"], &["true"]] {
        let host = s.host();
        let mut a = vec!["exec", host.as_str(), "--"];
        a.extend_from_slice(argv);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(255), "{argv:?}");
        let e = text(&o.stderr);
        assert!(
            e.contains("NOT_ALLOWED") && e.contains("allow-list") && e.contains("--allow-cmd"),
            "{argv:?}: {e}"
        );
    }
    // Shell lines cannot be checked: refused.
    let o = run(&["exec", &s.host(), "--shell", "echo hi"]);
    assert_eq!(o.status.code(), Some(255));
    let e = text(&o.stderr);
    assert!(e.contains("NOT_ALLOWED") && e.contains("shell"), "{e}");
    // --allow-cmd without --allow-exec is a usage error.
    let o = run(&["serve", "--listen", "127.0.0.1:0", "--allow-cmd", "ls"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--allow-exec"));
}

#[test]
fn max_transfers_refuses_the_excess_as_busy() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &["--max-transfers", "1"]);
    random_file(&s.root.join("big.bin"), 64 << 20);
    std::fs::write(s.root.join("small.txt"), b"small").unwrap();
    // A download that is never read holds the only transfer slot.
    let mut hog = Peer::new(tcp_from(Ipv4Addr::LOCALHOST, s.port));
    hog.handshake(None, [1; 16]).unwrap();
    hog.request(
        1,
        Message::Get {
            path: "big.bin",
            offset: 0,
        },
        &[],
    )
    .unwrap();
    let g = hog.recv().unwrap();
    assert!(
        matches!(g.message(), Message::FileInfo { .. }),
        "{}",
        g.describe()
    );
    let back = dir.path().join("small.txt");
    let o = run(&["get", &s.host(), "small.txt", back.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("BUSY") && e.contains("--max-transfers"), "{e}");
    // Other requests are still served.
    let o = run(&["stat", &s.host(), "small.txt"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // Once the hog is gone, the slot is free again.
    drop(hog);
    assert!(wait_until(Duration::from_secs(60), || {
        let o = run(&[
            "get",
            &s.host(),
            "small.txt",
            back.to_str().unwrap(),
            "--force",
        ]);
        o.status.code() == Some(0)
    }));
    assert_eq!(std::fs::read(&back).unwrap(), b"small");
}

#[test]
fn failed_authentications_back_off_per_address() {
    let dir = TempDir::new().unwrap();
    let (s, key, _) = keyed_server(dir.path(), &[]);
    let attacker = Ipv4Addr::new(127, 0, 0, 7);
    // Three wrong proofs from one address...
    for i in 0..3u8 {
        let mut p = Peer::new(tcp_from(attacker, s.port));
        let e = p.handshake(Some([i; 32]), [i; 16]).unwrap_err();
        assert!(e.contains("AuthOk") || e.contains("Auth"), "{e}");
    }
    // ...and that address is refused at once, before any handshake.
    let mut p = Peer::new(tcp_from(attacker, s.port));
    let g = p.recv().unwrap();
    let (code, msg) = g.error().unwrap();
    assert_eq!(code, ErrorCode::BUSY);
    assert!(
        msg.contains("too many failed authentications") && msg.contains("127.0.0.7"),
        "{msg}"
    );
    p.expect_closed().unwrap();
    // Clients elsewhere are not affected.
    let o = run(&["ls", &s.host(), "--key-file", key.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(s.log().contains("backing off"));
}

/// A man in the middle on 127.0.0.1: forwards connections to `port`,
/// flipping one bit at byte `at` of the stream going `to_client` or not.
fn tamper_proxy(port: u16, at: usize, to_client: bool) -> Relay {
    Relay::start(
        port,
        Tamper {
            to_server: (!to_client).then_some(at),
            to_client: to_client.then_some(at),
        },
    )
}

#[test]
fn tampering_on_the_path_is_detected_both_ways() {
    let dir = TempDir::new().unwrap();
    let (s, key, _) = keyed_server(dir.path(), &[]);
    let kf = key.to_str().unwrap();
    random_file(&s.root.join("down.bin"), 1 << 20);

    // Server to client: a bit flipped inside a Data body of a download.
    let p = tamper_proxy(s.port, 100_000, true);
    let local = dir.path().join("down.bin");
    let o = run(&[
        "get",
        &p.host(),
        "down.bin",
        local.to_str().unwrap(),
        "--key-file",
        kf,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("integrity check failed: the connection was tampered with or corrupted"),
        "{e}"
    );
    assert!(!local.exists(), "nothing unverified is put in place");

    // Client to server: a bit flipped inside a Data body of an upload.
    let up = dir.path().join("up.bin");
    random_file(&up, 1 << 20);
    let p = tamper_proxy(s.port, 100_000, false);
    let o = run(&["put", &p.host(), up.to_str().unwrap(), "--key-file", kf]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("INTEGRITY") && e.contains("tampered"), "{e}");
    assert!(!s.root.join("up.bin").exists());
    assert!(s.wait_log("integrity check failed", Duration::from_secs(30)));

    // Without tampering, the same transfers through a faithful relay work.
    let p = tamper_proxy(s.port, usize::MAX, true);
    let o = run(&[
        "get",
        &p.host(),
        "down.bin",
        local.to_str().unwrap(),
        "--key-file",
        kf,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sha256sum(&local), sha256sum(&s.root.join("down.bin")));
}

/// A fake server: answers Hello with a HelloAck demanding authentication,
/// and Auth with an AuthOk whose proof is made up (it has no key).
fn impostor() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut p = Peer::new(s);
        let hello = p.recv().unwrap();
        assert!(matches!(hello.message(), Message::Hello(_)));
        let ack = tether_proto::HelloAck {
            version: 1,
            max_header: 8192,
            max_chunk: 65536,
            caps: tether_proto::Caps::AUTH_PSK.union(tether_proto::Caps::SEAL),
            nonce: [9; 16],
            agent: "impostor",
            max_requests: 64,
            max_name: 255,
            max_path: 4095,
        };
        p.request(0, Message::HelloAck(ack), &[]).unwrap();
        let auth = p.recv().unwrap();
        assert!(matches!(auth.message(), Message::Auth(_)));
        p.request(
            0,
            Message::AuthOk(tether_proto::Proof { mac: [0; 32] }),
            &[],
        )
        .unwrap();
        // Whatever comes next (nothing should), then close.
        let _ = p.recv();
    });
    port
}

#[test]
fn a_server_that_cannot_prove_the_key_is_refused() {
    let dir = TempDir::new().unwrap();
    let key = dir.path().join("k");
    keygen(&key);
    let port = impostor();
    let o = run(&[
        "ls",
        &format!("127.0.0.1:{port}"),
        "--key-file",
        key.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("did not prove that it holds the key") && e.contains("key"),
        "{e}"
    );
}
