//! The datagram services over UDP: echo, time, ping; retries after a lost
//! datagram; sizes that do not fit one datagram are clear errors.

use std::net::UdpSocket;
use std::time::Duration;

use tether_tests::{run, text, LossyUdpRelay, Server, TempDir};

fn server() -> (TempDir, Server) {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &[]);
    (dir, s)
}

#[test]
fn echo_answers_upper_cased() {
    let (_d, s) = server();
    let o = run(&["echo", &s.host(), "Hello, tether ü"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "HELLO, TETHER ü\n");
}

#[test]
fn time_answers_in_the_format_asked() {
    let (_d, s) = server();
    let o = run(&["time", &s.host()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let t = text(&o.stdout);
    let t = t.trim();
    // %Y-%m-%dT%H:%M:%SZ
    assert_eq!(t.len(), 20, "{t}");
    assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    let o = run(&["time", &s.host(), "year %Y"]);
    let t = text(&o.stdout);
    assert!(t.starts_with("year 20") && t.trim().len() == 9, "{t}");
    let o = run(&["time", &s.host(), "%Q"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("invalid time format"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_dropped_first_datagram_is_retried() {
    let (_d, s) = server();
    let relay = LossyUdpRelay::start(format!("127.0.0.1:{}", s.port).parse().unwrap(), 1);
    let host = format!("127.0.0.1:{}", relay.port);
    let o = run(&["echo", &host, "again", "--timeout", "1s"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "AGAIN\n");
    // Answered on a later attempt (the second, unless the machine is very slow).
    assert!(
        text(&o.stderr).contains("answered on attempt"),
        "{}",
        text(&o.stderr)
    );
    assert!(relay.seen() >= 2);

    let relay = LossyUdpRelay::start(format!("127.0.0.1:{}", s.port).parse().unwrap(), 1);
    let host = format!("127.0.0.1:{}", relay.port);
    let o = run(&["time", &host, "%Y", "--timeout", "1s"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("20"));
    assert!(
        text(&o.stderr).contains("answered on attempt"),
        "{}",
        text(&o.stderr)
    );
    assert!(relay.seen() >= 2);
}

#[test]
fn no_reply_after_all_retries_is_a_clear_error() {
    let (_d, s) = server();
    let relay = LossyUdpRelay::start(format!("127.0.0.1:{}", s.port).parse().unwrap(), 100);
    let host = format!("127.0.0.1:{}", relay.port);
    let o = run(&["--retries", "2", "echo", &host, "x", "--timeout", "200ms"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("no reply") && e.contains("3 attempt"), "{e}");
    assert!(tether_tests::wait_until(Duration::from_secs(10), || relay
        .seen()
        == 3));
}

#[test]
fn too_large_for_a_datagram_is_refused_not_truncated() {
    let (_d, s) = server();
    // A request that does not fit: refused by the client before sending.
    let long = "x".repeat(2000);
    let o = run(&["echo", &s.host(), &long]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("1472") && e.contains("shorten"), "{e}");
    // A reply that would not fit: the server answers TOO_LARGE.
    let fmt = "%s".repeat(300);
    let o = run(&["time", &s.host(), &fmt]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("TOO_LARGE") && e.contains("datagram"), "{e}");
}

#[test]
fn ping_reports_round_trip_times() {
    let (_d, s) = server();
    let o = run(&["ping", &s.host(), "-c", "3", "-i", "50ms"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let t = text(&o.stdout);
    assert_eq!(t.matches("time=").count(), 3, "{t}");
    assert!(t.contains("3 sent, 3 received, 0% loss"), "{t}");
}

#[test]
fn garbage_datagrams_get_bad_frame_and_other_requests_unexpected() {
    let (_d, s) = server();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.connect(("127.0.0.1", s.port)).unwrap();
    let mut buf = [0u8; 2048];
    sock.send(b"definitely not a frame").unwrap();
    let n = sock.recv(&mut buf).unwrap();
    let h = tether_proto::datagram::parse_reply(&buf[..n]).unwrap();
    assert_eq!(h.request_id, 0);
    assert!(
        matches!(h.message, tether_proto::Message::Error { code, .. } if code.0 == 1),
        "{:?}",
        h.message
    );
    // A valid frame the datagram service does not serve.
    let mut out = [0u8; 256];
    let f = tether_proto::encode_frame(
        &tether_proto::Header::new(9, tether_proto::Message::Stat { path: "x" }),
        &[],
        &mut out,
    )
    .unwrap();
    sock.send(f).unwrap();
    let n = sock.recv(&mut buf).unwrap();
    let h = tether_proto::datagram::parse_reply(&buf[..n]).unwrap();
    assert_eq!(h.request_id, 9);
    assert!(
        matches!(h.message, tether_proto::Message::Error { code, .. } if code.0 == 8),
        "{:?}",
        h.message
    );
    // Still serving.
    let o = run(&["echo", &s.host(), "ok"]);
    assert_eq!(text(&o.stdout), "OK\n");
}
