//! Connecting: retries for refused connections, and clear messages for
//! refused, timed-out and non-tether ports; `tether shell` reconnecting.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use tether_tests::{free_port, run, tether, text, wait_limit, Server, TempDir};

#[test]
fn refused_without_retries_is_a_clear_error() {
    let port = free_port();
    let o = run(&["ls", &format!("127.0.0.1:{port}")]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("refused") && e.contains("tether serve"), "{e}");
}

#[test]
fn refused_connections_are_retried_until_the_server_appears() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("hello.txt"), b"hi").unwrap();
    let port = free_port();
    let mut client = tether()
        .args(["--retries", "40", "--retry-delay", "100ms"])
        .args(["stat", &format!("127.0.0.1:{port}"), "hello.txt"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Start the server only once the client has been refused.
    let mut err = BufReader::new(client.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(
        line.contains("refused") && line.contains("retrying"),
        "{line}"
    );
    let _s = Server::start_at(&root, port, &[]);
    let st = wait_limit(&mut client, Duration::from_secs(120)).expect("the client finishes");
    let mut out = String::new();
    std::io::Read::read_to_string(client.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(st.code(), Some(0), "{out}");
    assert!(out.contains("hello.txt"), "{out}");
}

#[test]
fn a_port_that_does_not_speak_tether_is_named_as_such() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().take(1) {
            let mut s = s.unwrap();
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n");
            std::thread::sleep(Duration::from_secs(5));
        }
    });
    let o = run(&["ls", &format!("127.0.0.1:{port}")]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("does not speak tether") && e.contains("port"),
        "{e}"
    );
}

#[test]
fn a_silent_port_times_out_with_a_clear_error() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Accepts (by the backlog) but never answers.
    let o = run(&[
        "--connect-timeout",
        "1s",
        "ls",
        &format!("127.0.0.1:{port}"),
    ]);
    drop(l);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("did not answer the tether handshake"), "{e}");
    assert!(e.contains("--connect-timeout"), "{e}");
}

#[test]
fn the_server_closes_connections_that_never_say_hello() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &["--handshake-timeout", "500ms"]);
    let mut c = tether_tests::raw::RawConn::connect(s.port);
    let f = c.recv().expect("an Error frame");
    assert_eq!(f.error_code, Some(13), "{f:?}"); // TIMEOUT
    assert!(c.recv().is_none());
}

#[test]
fn usage_errors_exit_2_and_help_teaches() {
    let o = run(&["get"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["ls", "host:notaport"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("HOST:PORT"), "{}", text(&o.stderr));
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let h = text(&o.stdout);
    for word in [
        "serve", "exec", "shell", "get", "put", "ls", "stat", "rm", "echo", "time", "ping", "7117",
    ] {
        assert!(h.contains(word), "help lacks {word}:\n{h}");
    }
}

#[test]
fn shell_runs_lines_ignores_empty_ones_and_reconnects_after_a_restart() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &["--allow-exec"]);
    let (root, port) = (s.root.clone(), s.port);
    let mut sh = tether()
        .args(["shell", &s.host()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = sh.stdin.take().unwrap();
    let mut out = BufReader::new(sh.stdout.take().unwrap());
    let mut line = String::new();
    input
        .write_all(b"echo one\n\n   \necho two; echo err >&2\n")
        .unwrap();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "one\n");
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "two\n");
    // Two requests: the blank lines ran nothing.
    assert!(tether_tests::wait_until(Duration::from_secs(30), || s
        .log()
        .matches("op=exec")
        .count()
        >= 2));
    assert_eq!(s.log().matches("op=exec").count(), 2, "{}", s.log());

    // Restart the server on the same port; the next line reconnects.
    drop(s);
    let s2 = Server::start_at(&root, port, &["--allow-exec"]);
    input.write_all(b"echo three\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "three\n");
    input.write_all(b"exit\n").unwrap();
    let st = wait_limit(&mut sh, Duration::from_secs(60)).expect("shell leaves on exit");
    assert_eq!(st.code(), Some(0));
    assert!(s2.wait_log("op=exec", Duration::from_secs(30)));
    assert_eq!(s2.log().matches("op=exec").count(), 1, "{}", s2.log());
    let mut err = String::new();
    std::io::Read::read_to_string(sh.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("err") && err.contains("reconnecting"), "{err}");
}

#[test]
fn idle_connections_are_closed_with_a_timeout_error() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &["--idle-timeout", "500ms"]);
    let mut c = tether_tests::raw::RawConn::handshaken(s.port);
    let f = c.recv().expect("an Error frame");
    assert_eq!((f.id, f.error_code), (0, Some(13)), "{f:?}"); // TIMEOUT
    assert!(f.debug.contains("idle"), "{f:?}");
    assert!(c.recv().is_none());
}

#[test]
fn an_upload_that_stops_sending_times_out_and_stays_resumable() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &["--idle-timeout", "1s"]);
    let mut c = tether_tests::raw::RawConn::handshaken(s.port);
    c.send(
        1,
        tether_proto::Message::Put {
            path: "x.bin",
            size: 100,
            force: false,
            resume: true,
        },
    );
    let f = c.recv().expect("PutReady");
    assert!(f.debug.starts_with("PutReady"), "{f:?}");
    // Then nothing: the connection is closed once the idle timeout passes.
    let mut saw_timeout = false;
    while let Some(f) = c.recv() {
        if f.id == 0 && f.error_code == Some(13) {
            saw_timeout = true;
            assert!(f.debug.contains("upload"), "{f:?}");
        }
    }
    assert!(saw_timeout);
    assert!(s.root.join(".x.bin.tether-part").exists());
    assert!(!s.root.join("x.bin").exists());
}
