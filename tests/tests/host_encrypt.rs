//! Encryption between the `tether` client and `tether serve`, through the
//! real binary: `--encrypt` (or TETHER_ENCRYPT) with a key makes every
//! frame after AuthOk `SEALED | ENCRYPTED` both ways; a relay on the path
//! sees none of the contents (and does see them without `--encrypt`); a
//! flipped ciphertext bit ends the session with nothing acted on; frames
//! with the wrong protection are refused by both sides; a client that
//! requires encryption refuses a server that does not offer it, and
//! `--encrypt` without a key is a usage error.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tether_proto::handshake::{ServerHandshake, ServerPolicy};
use tether_proto::wire::{Flags, PREFIX_LEN};
use tether_proto::{Caps, ErrorCode, Message};
use tether_tests::peer::{
    encrypted_frame, fix_checksum, frame, header, prefix, raw_frame, sealed_frame, tcp, Peer,
    RecvError,
};
use tether_tests::relay::{contains, frames, Relay, Tamper};
use tether_tests::{file_len, random_file, run, sha256sum, tether, text, Server, TempDir};

/// Run `tether ARGS` with extra environment variables.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = tether();
    c.args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tether_tests::wait_output(c.spawn().expect("spawn tether"), Duration::from_secs(120))
}

/// `tether keygen PATH`; returns the key's bytes.
fn keygen(path: &Path) -> [u8; 32] {
    let o = run(&["keygen", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let hex = std::fs::read_to_string(path).unwrap();
    let mut k = [0u8; 32];
    hex::decode_to_slice(hex.trim(), &mut k).unwrap();
    k
}

/// A server with a new key in `dir` and `extra` options.
fn keyed_server(dir: &Path, extra: &[&str]) -> (Server, PathBuf, [u8; 32]) {
    let key = dir.join("server.key");
    let k = keygen(&key);
    let mut args = vec!["--key-file", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Server::start(dir, &args), key, k)
}

fn ok(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

#[test]
fn encrypted_exec_and_transfers_are_byte_exact() {
    let dir = TempDir::new().unwrap();
    let (s, key, _) = keyed_server(dir.path(), &["--allow-exec"]);
    let kf = key.to_str().unwrap();
    assert!(
        s.wait_log(
            "encrypted (ChaCha20-Poly1305) for clients that ask",
            Duration::from_secs(30)
        ),
        "{}",
        s.log()
    );

    // exec: stdout, stderr and the exit code, encrypted (-vv shows the session).
    let o = run(&[
        "exec",
        &s.host(),
        "--key-file",
        kf,
        "--encrypt",
        "-vv",
        "--shell",
        "printf 'to stdout\\n'; printf 'to stderr\\n' >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "to stdout\n");
    let e = text(&o.stderr);
    assert!(e.contains("to stderr\n"), "{e}");
    assert!(e.contains("authenticated, encrypted"), "{e}");

    // put and get of a few MiB (not a multiple of the chunk), by --encrypt and by TETHER_ENCRYPT.
    let local = dir.path().join("data.bin");
    random_file(&local, (5 << 20) + 12345);
    let want = sha256sum(&local);
    let o = run(&[
        "put",
        &s.host(),
        local.to_str().unwrap(),
        "--key-file",
        kf,
        "--encrypt",
    ]);
    ok(&o);
    assert!(text(&o.stdout).starts_with(&want), "{}", text(&o.stdout));
    assert_eq!(sha256sum(&s.root.join("data.bin")), want);
    let back = dir.path().join("back.bin");
    let o = run_env(
        &["get", &s.host(), "data.bin", back.to_str().unwrap(), "-vv"],
        &[("TETHER_KEY_FILE", kf), ("TETHER_ENCRYPT", "1")],
    );
    ok(&o);
    assert!(
        text(&o.stderr).contains("authenticated, encrypted"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(sha256sum(&back), want);
    // An empty file and exactly one chunk both ways.
    for (name, size) in [("empty.bin", 0u64), ("chunk.bin", 256 * 1024)] {
        let up = dir.path().join(name);
        random_file(&up, size);
        ok(&run(&[
            "put",
            &s.host(),
            up.to_str().unwrap(),
            "--key-file",
            kf,
            "--encrypt",
        ]));
        let down = dir.path().join(format!("{name}.back"));
        ok(&run(&[
            "get",
            &s.host(),
            name,
            down.to_str().unwrap(),
            "--key-file",
            kf,
            "--encrypt",
        ]));
        assert_eq!(
            std::fs::read(&down).unwrap(),
            std::fs::read(&up).unwrap(),
            "{name}"
        );
    }
    // TETHER_ENCRYPT=0 means off: the same key, sealed only.
    let o = run_env(
        &["ls", &s.host(), "-vv"],
        &[("TETHER_KEY_FILE", kf), ("TETHER_ENCRYPT", "0")],
    );
    ok(&o);
    let e = text(&o.stderr);
    assert!(
        e.contains("authenticated, sealed") && !e.contains("encrypted"),
        "{e}"
    );
}

const CONTENT: &[u8] = b"CONTENT-MARKER-9b4c07e1";
const NAME: &str = "NAME-MARKER-31f0aa.bin";
/// printf joins its two arguments: the output holds OUTPUT, the command line only its halves.
const ARG: &str = "OUTPUT-MARK";
const OUTPUT: &[u8] = b"OUTPUT-MARKER-5d1e92";

/// Run `tether ARGS` through a fresh recording relay in front of `port`
/// (ARGS hold `HOST` where the address goes); returns the output and the
/// bytes seen going to the server and to the client.
fn through_relay(port: u16, args: &[&str]) -> (Output, Vec<u8>, Vec<u8>) {
    let r = Relay::faithful(port);
    let host = r.host();
    let args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "HOST" { host.as_str() } else { a })
        .collect();
    let o = run(&args);
    (o, r.to_server(), r.to_client())
}

/// Every frame of a recorded connection: the two handshake frames
/// unprotected, every later one with `flags`, and nothing but whole frames.
fn assert_protection(stream: &[u8], flags: u8, what: &str) {
    let f = frames(stream);
    assert!(
        f.len() >= 3,
        "{what}: {} frames in {} bytes",
        f.len(),
        stream.len()
    );
    assert_eq!(
        f.last().unwrap().end,
        stream.len(),
        "{what}: trailing bytes"
    );
    assert!(f[..2].iter().all(|x| x.flags == 0), "{what}: {:?}", &f[..2]);
    assert!(
        f[2..].iter().all(|x| x.flags == flags),
        "{what}: frames after AuthOk must have flags {flags:#04x}: {:?}",
        f[2..].iter().map(|x| x.flags).collect::<Vec<_>>()
    );
}

#[test]
fn a_relay_sees_the_contents_only_without_encryption() {
    let dir = TempDir::new().unwrap();
    let (s, key, _) = keyed_server(dir.path(), &["--allow-exec"]);
    let kf = key.to_str().unwrap();
    // A file with the marker in several places, among random bytes.
    let local = dir.path().join(NAME);
    random_file(&local, 3 << 20);
    let mut data = std::fs::read(&local).unwrap();
    for at in [0, 1 << 20, (3 << 20) - CONTENT.len()] {
        data[at..at + CONTENT.len()].copy_from_slice(CONTENT);
    }
    std::fs::write(&local, &data).unwrap();
    let want = sha256sum(&local);

    for encrypt in [true, false] {
        let mut base = vec!["--key-file", kf];
        if encrypt {
            base.push("--encrypt");
        }
        let flags = if encrypt { 0x03 } else { 0x01 };
        let seen = |hay: &[u8], needle: &[u8]| contains(hay, needle) != encrypt;
        std::fs::remove_file(s.root.join(NAME)).ok();

        // put: the contents and the name go to the server.
        let mut args = vec!["put", "HOST", local.to_str().unwrap()];
        args.extend_from_slice(&base);
        let (o, up, down) = through_relay(s.port, &args);
        ok(&o);
        assert_eq!(sha256sum(&s.root.join(NAME)), want);
        assert!(
            seen(&up, CONTENT),
            "put, encrypt {encrypt}: file contents on the wire"
        );
        assert!(
            seen(&up, NAME.as_bytes()),
            "put, encrypt {encrypt}: file name on the wire"
        );
        assert_protection(&up, flags, "put, to the server");
        assert_protection(&down, flags, "put, to the client");

        // get: the contents come back.
        let back = dir.path().join(format!("back-{encrypt}.bin"));
        let mut args = vec!["get", "HOST", NAME, back.to_str().unwrap()];
        args.extend_from_slice(&base);
        let (o, up, down) = through_relay(s.port, &args);
        ok(&o);
        assert_eq!(sha256sum(&back), want);
        assert!(
            seen(&down, CONTENT),
            "get, encrypt {encrypt}: file contents on the wire"
        );
        assert!(
            seen(&up, NAME.as_bytes()),
            "get, encrypt {encrypt}: file name on the wire"
        );
        assert_protection(&up, flags, "get, to the server");
        assert_protection(&down, flags, "get, to the client");

        // exec: the command line goes out, its output comes back.
        let mut args = vec!["exec", "HOST"];
        args.extend_from_slice(&base);
        args.extend_from_slice(&["--", "printf", "%s%s\\n", ARG, "ER-5d1e92"]);
        let (o, up, down) = through_relay(s.port, &args);
        ok(&o);
        assert_eq!(o.stdout, [OUTPUT, b"\n"].concat());
        assert!(
            seen(&up, ARG.as_bytes()),
            "exec, encrypt {encrypt}: command line on the wire"
        );
        assert!(
            seen(&down, OUTPUT),
            "exec, encrypt {encrypt}: output on the wire"
        );
        assert_protection(&up, flags, "exec, to the server");
        assert_protection(&down, flags, "exec, to the client");
    }
}

/// The first body byte of frame `index` of a recorded stream.
fn body_offset(stream: &[u8], index: usize) -> usize {
    let f = frames(stream)[index];
    assert!(f.body_len > 0, "frame {index} has no body: {f:?}");
    f.start + PREFIX_LEN + f.header_len
}

#[test]
fn a_flipped_ciphertext_bit_ends_the_session_with_nothing_acted_on() {
    let dir = TempDir::new().unwrap();
    let (s, key, _) = keyed_server(dir.path(), &["--allow-exec"]);
    let kf = key.to_str().unwrap();
    random_file(&s.root.join("down.bin"), 1 << 20);

    // To the client, inside the first Data body of a download.
    let r = Relay::start(
        s.port,
        Tamper {
            to_server: None,
            to_client: Some(100_000),
        },
    );
    let local = dir.path().join("down.bin");
    let o = run(&[
        "get",
        &r.host(),
        "down.bin",
        local.to_str().unwrap(),
        "--key-file",
        kf,
        "--encrypt",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(
        e.contains("integrity check failed: the connection was tampered with or corrupted")
            && e.contains("does not decrypt"),
        "{e}"
    );
    assert!(!local.exists(), "nothing unverified is put in place");
    assert_eq!(
        file_len(&dir.path().join("down.bin.tether-part")),
        0,
        "nor written"
    );

    // To the server, inside the first Data body of an upload.
    let up = dir.path().join("up.bin");
    random_file(&up, 1 << 20);
    let r = Relay::start(
        s.port,
        Tamper {
            to_server: Some(100_000),
            to_client: None,
        },
    );
    let o = run(&[
        "put",
        &r.host(),
        up.to_str().unwrap(),
        "--key-file",
        kf,
        "--encrypt",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(e.contains("INTEGRITY") && e.contains("tampered"), "{e}");
    assert!(
        !s.root.join("up.bin").exists(),
        "the upload was not committed"
    );
    assert_eq!(
        file_len(&s.root.join(".up.bin.tether-part")),
        0,
        "nor written"
    );
    assert!(
        s.wait_log("integrity check failed", Duration::from_secs(30)),
        "{}",
        s.log()
    );

    // The tag of an Exec request (found in a faithful run of a command of
    // the same length): the command does not run.
    let exec = |host: &str, file: &str| {
        run(&[
            "exec",
            host,
            "--key-file",
            kf,
            "--encrypt",
            "--",
            "touch",
            file,
        ])
    };
    let (o, faithful_up) = {
        let r = Relay::faithful(s.port);
        let o = exec(&r.host(), "a.txt");
        (o, r.to_server())
    };
    ok(&o);
    assert!(s.root.join("a.txt").exists());
    let exec_frame = frames(&faithful_up)[2];
    let r = Relay::start(
        s.port,
        Tamper {
            to_server: Some(exec_frame.end - 1),
            to_client: None,
        },
    );
    let o = exec(&r.host(), "b.txt");
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(e.contains("INTEGRITY"), "{e}");
    assert!(
        !s.root.join("b.txt").exists(),
        "the command ran from an unverified request"
    );

    // The body of a command's Output frame: nothing of it is written.
    let (o, _, down) = through_relay(
        s.port,
        &[
            "exec",
            "HOST",
            "--key-file",
            kf,
            "--encrypt",
            "--",
            "printf",
            "visible",
        ],
    );
    ok(&o);
    assert_eq!(text(&o.stdout), "visible");
    let at = body_offset(&down, 2);
    let r = Relay::start(
        s.port,
        Tamper {
            to_server: None,
            to_client: Some(at),
        },
    );
    let o = run(&[
        "exec",
        &r.host(),
        "--key-file",
        kf,
        "--encrypt",
        "--",
        "printf",
        "visible",
    ]);
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stderr));
    assert!(
        o.stdout.is_empty(),
        "unverified output was shown: {:?}",
        text(&o.stdout)
    );
    assert!(
        text(&o.stderr).contains("integrity check failed"),
        "{}",
        text(&o.stderr)
    );

    // The server still serves.
    ok(&run(&["ls", &s.host(), "--key-file", kf, "--encrypt"]));
}

/// Expect `Error{code}` with request id 0 from the server, then the close.
fn expect_error_then_close(p: &mut Peer<'_>, code: ErrorCode, phrase: &str, case: &str) {
    let g = p
        .recv_checked()
        .unwrap_or_else(|e| panic!("{case}: no valid reply: {e}"));
    let (c, m) = g
        .error()
        .unwrap_or_else(|| panic!("{case}: expected an Error, got {}", g.describe()));
    assert_eq!((g.id, c), (0, code), "{case}: {m}");
    assert!(m.contains(phrase), "{case}: {m}");
    p.expect_closed().unwrap_or_else(|e| panic!("{case}: {e}"));
}

#[test]
fn the_server_refuses_frames_with_the_wrong_protection() {
    let dir = TempDir::new().unwrap();
    let (s, key, k) = keyed_server(dir.path(), &[]);
    let encrypted = |n: u8| {
        let mut p = Peer::new(tcp(s.port));
        p.handshake_caps(Some(k), [n; 16], Caps::ENCRYPT).unwrap();
        assert!(p.encrypted() && p.caps.contains(Caps::ENCRYPT));
        p
    };
    let ping = || header(9, Message::Ping { stamp: 1 });

    // A well-formed session: encrypted both ways (recv_checked requires it).
    let mut p = encrypted(1);
    p.ping_ok(1).unwrap();
    p.ping_ok(2).unwrap();

    // Sealed with the HMAC key instead of encrypted.
    let mut p = encrypted(2);
    p.ping_ok(1).unwrap();
    let f = p.sealed_frame_raw(&ping(), &[]);
    p.send(&f).unwrap();
    expect_error_then_close(
        &mut p,
        ErrorCode::INTEGRITY,
        "sealed but not encrypted",
        "HMAC-sealed",
    );

    // Neither sealed nor encrypted.
    let mut p = encrypted(3);
    p.send(&raw_frame(&ping(), &[])).unwrap();
    expect_error_then_close(&mut p, ErrorCode::INTEGRITY, "unsealed", "plain");

    // A frame sent twice: the second is a replay.
    let mut p = encrypted(4);
    let f = p.frame_raw(&ping(), &[]);
    p.send(&f).unwrap();
    let g = p.recv_checked().unwrap();
    assert!(
        matches!(g.message(), Message::Pong { stamp: 1 }),
        "{}",
        g.describe()
    );
    p.send(&f).unwrap();
    expect_error_then_close(&mut p, ErrorCode::INTEGRITY, "does not decrypt", "replay");

    // A bit of the ciphertext header flipped and the checksum recomputed.
    let mut p = encrypted(5);
    let mut f = p.frame_raw(&ping(), &[]);
    f[PREFIX_LEN] ^= 0x10;
    fix_checksum(&mut f);
    p.send(&f).unwrap();
    expect_error_then_close(
        &mut p,
        ErrorCode::INTEGRITY,
        "does not decrypt",
        "header bit",
    );

    // ENCRYPTED on a session that did not negotiate encryption (sealed only).
    let mut p = Peer::new(tcp(s.port));
    p.handshake(Some(k), [6; 16]).unwrap();
    assert!(p.sealed() && !p.encrypted());
    let h = ping();
    let mut f = prefix(&h, 0, Flags::SEALED.union(Flags::ENCRYPTED).bits());
    f.extend_from_slice(&h);
    f.extend_from_slice(&[0u8; 16]);
    p.send(&f).unwrap();
    expect_error_then_close(
        &mut p,
        ErrorCode::UNKNOWN_FLAGS,
        "0x02",
        "ENCRYPTED, sealed session",
    );

    // And on an unkeyed server.
    let plain = Server::start(&dir.path().join("plain"), &[]);
    let mut p = Peer::new(tcp(plain.port));
    p.handshake(None, [7; 16]).unwrap();
    p.send(&f).unwrap();
    expect_error_then_close(
        &mut p,
        ErrorCode::UNKNOWN_FLAGS,
        "0x02",
        "ENCRYPTED, no key",
    );

    assert!(s.wait_log("integrity check failed", Duration::from_secs(30)));
    // A well-behaved client is served afterwards.
    ok(&run(&[
        "ls",
        &s.host(),
        "--key-file",
        key.to_str().unwrap(),
        "--encrypt",
    ]));
}

/// What a fake server sends after a correct handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// An encrypted `Done` (the client is satisfied).
    Encrypted,
    /// A `Done` sealed with the HMAC key on an encrypted session.
    SealedOnly,
    /// An unprotected `Done` on an encrypted session.
    Plain,
    /// A frame flagged ENCRYPTED on a session without encryption.
    EncryptedFlagOnSealed,
}

/// A server holding `key` that offers ENCRYPT, completes the handshake with
/// the core's `ServerHandshake`, and answers the first request (`ls`) with
/// `reply`.
fn fake_server(key: [u8; 32], reply: Reply) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut p = Peer::new(s);
        let g = p.recv().unwrap();
        let Message::Hello(hello) = g.message() else {
            panic!("expected Hello, got {}", g.describe())
        };
        let policy = ServerPolicy {
            max_header: 8192,
            max_chunk: 256 * 1024,
            caps: Caps::FILES.union(Caps::ENCRYPT),
            max_requests: 64,
            max_name: 255,
            max_path: 4095,
        };
        let mut hs = ServerHandshake::new(Some(key));
        let ack = hs.handle_hello(&hello, &policy, [9; 16], "fake").unwrap();
        w.write_all(&frame(0, Message::HelloAck(ack), &[])).unwrap();
        let g = p.recv().unwrap();
        let Message::Auth(proof) = g.message() else {
            panic!("expected Auth, got {}", g.describe())
        };
        let (okp, mut keys) = hs.handle_auth(&proof).unwrap();
        w.write_all(&frame(0, Message::AuthOk(okp), &[])).unwrap();
        // The request (encrypted or sealed; it is not looked at).
        let _ = p.recv();
        let done = header(
            1,
            Message::Done {
                bytes: 0,
                sha256: None,
            },
        );
        let f = match reply {
            Reply::Encrypted => encrypted_frame(keys.encrypt.as_mut().unwrap(), &done, &[]),
            Reply::SealedOnly => sealed_frame(&mut keys.seal, &done, &[]),
            Reply::Plain => raw_frame(&done, &[]),
            Reply::EncryptedFlagOnSealed => {
                assert!(!keys.encrypted());
                let mut f = prefix(&done, 0, 0x03);
                f.extend_from_slice(&done);
                f.extend_from_slice(&[0u8; 16]);
                f
            }
        };
        w.write_all(&f).unwrap();
        // Until the client leaves.
        while !matches!(
            p.recv(),
            Err(RecvError::Closed | RecvError::Eof | RecvError::Io(_))
        ) {}
    });
    port
}

#[test]
fn the_client_refuses_frames_with_the_wrong_protection() {
    let dir = TempDir::new().unwrap();
    let key = dir.path().join("k");
    let k = keygen(&key);
    let kf = key.to_str().unwrap();
    for (reply, encrypt, want) in [
        (Reply::Encrypted, true, None),
        (
            Reply::SealedOnly,
            true,
            Some("integrity check failed: the connection was tampered with or corrupted (a frame arrived sealed but not encrypted"),
        ),
        (Reply::Plain, true, Some("integrity check failed: the connection was tampered with or corrupted (a frame arrived unsealed")),
        (Reply::EncryptedFlagOnSealed, false, Some("unknown frame flags 0x02")),
    ] {
        let port = fake_server(k, reply);
        let host = format!("127.0.0.1:{port}");
        let mut args = vec!["ls", host.as_str(), "--key-file", kf];
        if encrypt {
            args.push("--encrypt");
        }
        let o = run(&args);
        match want {
            None => ok(&o),
            Some(phrase) => {
                assert_eq!(o.status.code(), Some(1), "{reply:?}: {}", text(&o.stderr));
                assert!(text(&o.stderr).contains(phrase), "{reply:?}: {}", text(&o.stderr));
            }
        }
    }
}

#[test]
fn a_client_requiring_encryption_refuses_servers_without_it() {
    let dir = TempDir::new().unwrap();
    // A keyed server that does not offer it.
    let (s, key, _) = keyed_server(dir.path(), &["--no-encrypt"]);
    let kf = key.to_str().unwrap();
    assert!(s.wait_log(
        "encryption is not offered (--no-encrypt)",
        Duration::from_secs(30)
    ));
    let o = run(&["ls", &s.host(), "--key-file", kf, "--encrypt"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(
        e.contains("does not offer encryption, which --encrypt (or TETHER_ENCRYPT) requires")
            && e.contains("--no-encrypt")
            && e.contains("drop --encrypt"),
        "{e}"
    );
    // exec fails as tether's own failure.
    let o = run(&[
        "exec",
        &s.host(),
        "--key-file",
        kf,
        "--encrypt",
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("does not offer encryption"));
    // Without --encrypt the same client is served, sealed.
    let o = run(&["ls", &s.host(), "--key-file", kf, "-vv"]);
    ok(&o);
    assert!(text(&o.stderr).contains("authenticated, sealed"));

    // A server without a key cannot encrypt: refused even with --insecure.
    let plain = Server::start(&dir.path().join("plain"), &[]);
    let o = run(&[
        "ls",
        &plain.host(),
        "--key-file",
        kf,
        "--encrypt",
        "--insecure",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(
        e.contains("does not offer encryption")
            && e.contains("does not authenticate at all")
            && e.contains("--key-file"),
        "{e}"
    );
}

#[test]
fn encrypt_is_a_usage_error_where_it_cannot_be_met() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &[]);
    let h = s.host();
    // No key: nothing to derive encryption keys from.
    for (args, env) in [
        (vec!["ls", h.as_str(), "--encrypt"], vec![]),
        (vec!["ls", h.as_str()], vec![("TETHER_ENCRYPT", "1")]),
        (vec!["exec", h.as_str(), "--encrypt", "--", "true"], vec![]),
    ] {
        let o = run_env(&args, &env);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        let e = text(&o.stderr);
        assert!(
            e.contains("needs a key") && e.contains("--key-file"),
            "{args:?}: {e}"
        );
    }
    // serve offers it by itself; UDP is never encrypted.
    let o = run(&["serve", "--listen", "127.0.0.1:0", "--encrypt"]);
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(
        e.contains("for client commands") && e.contains("--no-encrypt"),
        "{e}"
    );
    for cmd in [&["ping", "-c", "1"][..], &["echo", "x"], &["time"]] {
        let mut args = vec![cmd[0], h.as_str()];
        args.extend_from_slice(&cmd[1..]);
        args.push("--encrypt");
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let e = text(&o.stderr);
        assert!(e.contains("UDP") && e.contains("neither encrypts"), "{e}");
    }
    // Off values and keygen are unaffected.
    ok(&run_env(&["ls", &s.host()], &[("TETHER_ENCRYPT", "0")]));
    ok(&run_env(
        &["keygen", dir.path().join("k").to_str().unwrap()],
        &[("TETHER_ENCRYPT", "1")],
    ));
}
