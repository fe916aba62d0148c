//! `tether exec` against `tether serve`, both the real binary.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

use tether_tests::{run, signal, tether, text, wait_limit, wait_until, Server, TempDir};

fn exec_server() -> (TempDir, Server) {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &["--allow-exec"]);
    (dir, s)
}

#[test]
fn first_output_arrives_while_the_command_still_runs() {
    let (_d, s) = exec_server();
    // The command prints, then waits for a file that the test creates only
    // after it has seen the first line: a buffered client would deadlock.
    let mut child = tether()
        .args([
            "exec",
            &s.host(),
            "--shell",
            "echo first; while [ ! -e go ]; do sleep 0.05; done; echo second",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "first\n");
    assert!(
        child.try_wait().unwrap().is_none(),
        "client ended before the command"
    );
    std::fs::write(s.root.join("go"), b"").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let st = wait_limit(&mut child, Duration::from_secs(60)).expect("client exits");
    assert_eq!(rest, "second\n");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn exit_codes_are_the_remote_ones() {
    let (_d, s) = exec_server();
    let h = s.host();
    let o = run(&["exec", &h, "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
    let o = run(&["exec", &h, "--shell", "exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    let o = run(&["exec", &h, "--", "true"]);
    assert_eq!(o.status.code(), Some(0));
    let o = run(&["exec", &h, "--", "false"]);
    assert_eq!(o.status.code(), Some(1));
    // Killed by a signal: 128 + 9, and a note on stderr.
    let o = run(&["exec", &h, "--shell", "kill -9 $$"]);
    assert_eq!(o.status.code(), Some(137));
    assert!(text(&o.stderr).contains("signal 9"), "{}", text(&o.stderr));
}

#[test]
fn argv_runs_without_a_shell() {
    let (_d, s) = exec_server();
    let o = run(&["exec", &s.host(), "--", "echo", "$HOME;", "a  b", "*"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), "$HOME; a  b *\n");
    // A shell line is a shell line.
    let o = run(&["exec", &s.host(), "--shell", "echo a | tr a b"]);
    assert_eq!(text(&o.stdout), "b\n");
}

#[test]
fn stderr_is_kept_apart_from_stdout() {
    let (_d, s) = exec_server();
    let o = run(&[
        "exec",
        &s.host(),
        "--shell",
        "echo out1; echo err1 >&2; echo out2; echo err2 >&2",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), "out1\nout2\n");
    assert_eq!(text(&o.stderr), "err1\nerr2\n");
}

#[test]
fn non_utf8_output_arrives_byte_exact() {
    let (_d, s) = exec_server();
    let mut data: Vec<u8> = (0..=255u8).cycle().take(256 * 300).collect();
    data.extend_from_slice(b"\xff\xfe\x00\xc3\x28\xa0\xa1\xe2\x28\xa1\x80");
    std::fs::write(s.root.join("bytes.bin"), &data).unwrap();
    let o = run(&["exec", &s.host(), "--", "cat", "bytes.bin"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(o.stdout, data, "stdout differs");
    let o = run(&["exec", &s.host(), "--shell", "cat bytes.bin >&2"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(o.stderr, data, "stderr differs");
    assert!(o.stdout.is_empty());
}

#[test]
fn exec_is_refused_without_allow_exec() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &[]);
    let o = run(&["exec", &s.host(), "--", "touch", "created"]);
    assert_eq!(o.status.code(), Some(255));
    let e = text(&o.stderr);
    assert!(e.contains("exec is disabled on this server"), "{e}");
    assert!(e.contains("--allow-exec"), "{e}");
    assert!(!s.root.join("created").exists());
    // The server still serves files.
    let o = run(&["ls", &s.host()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

#[test]
fn a_missing_program_is_a_clear_error() {
    let (_d, s) = exec_server();
    let o = run(&["exec", &s.host(), "--", "no-such-program-tether-test"]);
    assert_eq!(o.status.code(), Some(255));
    let e = text(&o.stderr);
    assert!(
        e.contains("cannot start 'no-such-program-tether-test'"),
        "{e}"
    );
    // A usage error: exit status 2.
    let o = run(&["exec", &s.host()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("no command given"));
}

#[test]
fn timeout_kills_the_remote_command() {
    let (_d, s) = exec_server();
    let o = run(&[
        "exec",
        &s.host(),
        "--timeout",
        "1",
        "--shell",
        "echo $$ > pid; echo started; exec sleep 600",
    ]);
    assert_eq!(o.status.code(), Some(124), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "started\n");
    assert!(text(&o.stderr).contains("--timeout"));
    let pid = std::fs::read_to_string(s.root.join("pid")).unwrap();
    let proc = format!("/proc/{}", pid.trim());
    assert!(
        wait_until(Duration::from_secs(30), || !std::path::Path::new(&proc)
            .exists()),
        "the remote command still runs"
    );
}

#[test]
fn ctrl_c_cancels_the_remote_command() {
    let (_d, s) = exec_server();
    let mut child = tether()
        .args([
            "exec",
            &s.host(),
            "--shell",
            "echo $$ > pid; echo started; exec sleep 600",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    signal(child.id(), "INT");
    let st = wait_limit(&mut child, Duration::from_secs(60)).expect("client exits");
    assert_eq!(st.code(), Some(130));
    let pid = std::fs::read_to_string(s.root.join("pid")).unwrap();
    let proc = format!("/proc/{}", pid.trim());
    assert!(
        wait_until(Duration::from_secs(30), || !std::path::Path::new(&proc)
            .exists()),
        "the remote command survived the cancel"
    );
    assert!(
        s.wait_log("Cancelled", Duration::from_secs(30)),
        "{}",
        s.log()
    );
}
