//! Many clients at once, and clients that stall or misbehave: nobody
//! delays anybody else.

use std::time::Duration;

use tether_proto::Message;
use tether_tests::raw::RawConn;
use tether_tests::{random_file, run, text, Server, TempDir};

#[test]
fn fifty_concurrent_clients_each_exec_put_get_ls() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &["--allow-exec"]);
    let host = s.host();
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for i in 0..50 {
            let (host, base) = (host.clone(), dir.path().to_path_buf());
            handles.push(scope.spawn(move || {
                let local = base.join(format!("up{i}.bin"));
                random_file(&local, 64 * 1024 + i as u64 * 1000);
                let o = run(&["exec", &host, "--", "echo", &format!("client {i}")]);
                assert_eq!(o.status.code(), Some(0), "exec {i}: {}", text(&o.stderr));
                assert_eq!(text(&o.stdout), format!("client {i}\n"));
                let remote = format!("c{i}/file.bin");
                let o = run(&["put", &host, local.to_str().unwrap(), &remote]);
                assert_eq!(o.status.code(), Some(0), "put {i}: {}", text(&o.stderr));
                let back = base.join(format!("down{i}.bin"));
                let o = run(&["get", &host, &remote, back.to_str().unwrap()]);
                assert_eq!(o.status.code(), Some(0), "get {i}: {}", text(&o.stderr));
                assert_eq!(
                    std::fs::read(&back).unwrap(),
                    std::fs::read(&local).unwrap()
                );
                let o = run(&["ls", &host, &format!("c{i}")]);
                assert_eq!(o.status.code(), Some(0), "ls {i}: {}", text(&o.stderr));
                assert!(text(&o.stdout).contains("file.bin"));
            }));
        }
        for h in handles {
            h.join().expect("a client failed");
        }
    });
    let log = s.log();
    assert_eq!(log.matches("op=put").count(), 50);
    assert_eq!(log.matches("op=get").count(), 50);
}

#[test]
fn a_stalled_client_does_not_delay_others() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &["--allow-exec"]);
    random_file(&s.root.join("big.bin"), 64 << 20);
    std::fs::write(s.root.join("small.txt"), b"small").unwrap();

    // One client asks for a big file and never reads; the server's sends
    // to it block once the socket buffers are full.
    let mut stalled = RawConn::handshaken(s.port);
    stalled.send(
        1,
        Message::Get {
            path: "big.bin",
            offset: 0,
        },
    );
    // Another connects and never says Hello.
    let _silent = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // Everyone else is served.
    let out = dir.path().join("small.txt");
    let o = run(&["get", &s.host(), "small.txt", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), b"small");
    let o = run(&["exec", &s.host(), "--", "echo", "ok"]);
    assert_eq!(text(&o.stdout), "ok\n");
    let o = run(&["ls", &s.host()]);
    assert_eq!(o.status.code(), Some(0));
    // Even on the stalled connection's server side nothing finished: the
    // get is still in flight.
    assert!(!s.log().contains("op=get 'big.bin'"), "{}", s.log());
    drop(stalled);
}

#[test]
fn the_connection_limit_refuses_with_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &["--max-connections", "2"]);
    let a = RawConn::handshaken(s.port);
    let b = RawConn::handshaken(s.port);
    let o = run(&["ls", &s.host()]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("connection limit") && e.contains("try again later"),
        "{e}"
    );
    drop(a);
    drop(b);
    // With retries, a client gets in once a slot is free.
    let o = run(&["--retries", "20", "--retry-delay", "100ms", "ls", &s.host()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

#[test]
fn bad_frames_get_an_error_and_the_server_keeps_serving() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &[]);

    // Not a frame at all: an Error (BAD_FRAME), then the connection closes.
    let mut c = RawConn::connect(s.port);
    c.send_bytes(b"GET / HTTP/1.0\r\n\r\n");
    let f = c.recv().expect("an Error frame");
    assert_eq!(f.error_code, Some(1), "{f:?}");
    assert_eq!(f.id, 0);
    assert!(c.recv().is_none(), "the connection stays open");

    // A whole frame whose header does not parse (unknown kind 99): an
    // Error naming the request, and the connection goes on.
    let mut c = RawConn::handshaken(s.port);
    let header = [5u8, 99];
    let repr = tether_proto::wire::PrefixRepr {
        version: 1,
        flags: tether_proto::wire::Flags::empty(),
        header_len: 2,
        body_len: 0,
    };
    let mut prefix = [0u8; tether_proto::wire::PREFIX_LEN];
    repr.emit(
        &mut tether_proto::wire::Prefix::new_unchecked(&mut prefix[..]),
        &header,
    );
    let mut frame = prefix.to_vec();
    frame.extend_from_slice(&header);
    c.send_bytes(&frame);
    let f = c.recv().expect("an Error frame");
    assert_eq!((f.id, f.error_code), (5, Some(6)), "{f:?}");
    c.send(6, Message::Ping { stamp: 42 });
    let f = c.recv().expect("Pong");
    assert_eq!(f.id, 6);
    assert_eq!(f.debug, "Pong { stamp: 42 }");
    // A request id used twice while in flight, and a reply kind sent as a request.
    c.send(7, Message::Pong { stamp: 1 });
    let f = c.recv().expect("an Error frame");
    assert_eq!((f.id, f.error_code), (7, Some(8)), "{f:?}");

    // Others are unaffected.
    let o = run(&["ls", &s.host()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

#[test]
fn two_uploads_to_one_path_do_not_mix() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &[]);
    let a = dir.path().join("a.bin");
    random_file(&a, 8 << 20);
    let b = dir.path().join("b.bin");
    random_file(&b, 1 << 20);
    // The first upload is slow; while it runs, a second to the same path is refused.
    let slow = tether_tests::tether()
        .args(["put", &s.host(), a.to_str().unwrap(), "same.bin"])
        .args(["--limit-rate", "2M"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let part = s.root.join(".same.bin.tether-part");
    assert!(tether_tests::wait_until(Duration::from_secs(60), || {
        tether_tests::file_len(&part) > 0
    }));
    let o = run(&["put", &s.host(), b.to_str().unwrap(), "same.bin"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("another upload") && e.contains("BUSY"), "{e}");
    let o = tether_tests::wait_output(slow, Duration::from_secs(120));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        std::fs::read(s.root.join("same.bin")).unwrap(),
        std::fs::read(&a).unwrap()
    );
}
