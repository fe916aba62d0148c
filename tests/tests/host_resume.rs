//! Interrupted transfers: a client killed with SIGKILL, a server stopped
//! with SIGTERM. The destination never holds a partial file, and the next
//! run continues from the partial (checked by the bytes that cross the
//! network, not only by the result).

use std::process::Stdio;
use std::time::Duration;

use tether_tests::{
    file_len, number_after, number_before, random_file, run, sha256sum, tether, text, wait_limit,
    wait_until, Server, TempDir,
};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 100 * MIB;

#[test]
fn get_killed_with_sigkill_resumes_from_its_partial() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &[]);
    random_file(&s.root.join("big.bin"), SIZE);
    let local = dir.path().join("big.bin");
    let part = dir.path().join("big.bin.tether-part");
    let mut child = tether()
        .args(["get", &s.host(), "big.bin", local.to_str().unwrap()])
        .args(["--limit-rate", "20M"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || file_len(&part) >= 10 * MIB),
        "the download did not progress"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !local.exists(),
        "a partial download appeared under the final name"
    );
    let have = file_len(&part);
    assert!((10 * MIB..SIZE).contains(&have), "partial of {have} bytes");

    let o = run(&["get", &s.host(), "big.bin", local.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert_eq!(number_after(&e, "resumed at "), Some(have), "{e}");
    assert_eq!(number_before(&e, " transferred"), Some(SIZE - have), "{e}");
    assert_eq!(sha256sum(&local), sha256sum(&s.root.join("big.bin")));
    assert!(!part.exists());
    // The server agrees on what it sent.
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("from {have}")))
        .unwrap_or_else(|| panic!("no resumed get in the log:\n{log}"));
    assert!(line.contains(&format!("bytes={}", SIZE - have)), "{line}");
}

#[test]
fn put_killed_with_sigkill_resumes_from_the_servers_partial() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &[]);
    let local = dir.path().join("big.bin");
    random_file(&local, SIZE);
    let dest = s.root.join("dst/big.bin");
    let part = s.root.join("dst/.big.bin.tether-part");
    let mut child = tether()
        .args(["put", &s.host(), local.to_str().unwrap(), "dst/big.bin"])
        .args(["--limit-rate", "20M"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || file_len(&part) >= 10 * MIB),
        "the upload did not progress"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        s.wait_log("kept for resuming", Duration::from_secs(60)),
        "{}",
        s.log()
    );
    assert!(
        !dest.exists(),
        "a partial upload appeared under the final name"
    );
    let have = file_len(&part);
    assert!((10 * MIB..SIZE).contains(&have), "partial of {have} bytes");

    let o = run(&["put", &s.host(), local.to_str().unwrap(), "dst/big.bin"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert_eq!(number_after(&e, "resumed at "), Some(have), "{e}");
    assert_eq!(number_before(&e, " transferred"), Some(SIZE - have), "{e}");
    assert_eq!(sha256sum(&dest), sha256sum(&local));
    assert!(!part.exists());
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("resumed at {have}")))
        .unwrap_or_else(|| panic!("no resumed put in the log:\n{log}"));
    assert!(line.contains(&format!("bytes={}", SIZE - have)), "{line}");
}

#[test]
fn a_server_stopped_mid_upload_keeps_it_resumable() {
    let dir = TempDir::new().unwrap();
    let mut s = Server::start(dir.path(), &["--shutdown-grace", "1s"]);
    let local = dir.path().join("f.bin");
    random_file(&local, 40 * MIB);
    let part = s.root.join(".f.bin.tether-part");
    let mut child = tether()
        .args(["put", &s.host(), local.to_str().unwrap()])
        .args(["--limit-rate", "10M"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(60), || file_len(&part) >= 4 * MIB));
    let st = s
        .terminate(Duration::from_secs(60))
        .expect("the server stops");
    assert_eq!(st.code(), Some(0));
    assert!(s.log().contains("shutting down"), "{}", s.log());
    let st = wait_limit(&mut child, Duration::from_secs(60)).expect("the client stops");
    assert_eq!(st.code(), Some(1));
    assert!(!s.root.join("f.bin").exists());
    let have = file_len(&part);
    assert!(have >= 4 * MIB, "partial of {have} bytes");

    let root = s.root.clone();
    drop(s);
    let s = Server::start_at(&root, 0, &[]);
    let o = run(&["put", &s.host(), local.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert_eq!(number_after(&e, "resumed at "), Some(have), "{e}");
    assert_eq!(sha256sum(&root.join("f.bin")), sha256sum(&local));
}

#[test]
fn a_mismatched_server_partial_restarts_the_upload() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &[]);
    let local = dir.path().join("f.bin");
    random_file(&local, 3 * MIB);
    random_file(&s.root.join(".f.bin.tether-part"), MIB);
    let o = run(&["put", &s.host(), local.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(e.contains("did not match"), "{e}");
    assert_eq!(number_before(&e, " transferred"), Some(3 * MIB), "{e}");
    assert_eq!(sha256sum(&s.root.join("f.bin")), sha256sum(&local));
    assert!(!s.root.join(".f.bin.tether-part").exists());
}

#[test]
fn no_resume_starts_over() {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &[]);
    random_file(&s.root.join("f.bin"), 2 * MIB);
    let local = dir.path().join("f.bin");
    // A correct prefix, but --no-resume: everything is sent again.
    let data = std::fs::read(s.root.join("f.bin")).unwrap();
    std::fs::write(dir.path().join("f.bin.tether-part"), &data[..MIB as usize]).unwrap();
    let o = run(&[
        "get",
        "--no-resume",
        &s.host(),
        "f.bin",
        local.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        number_before(&text(&o.stderr), " transferred"),
        Some(2 * MIB)
    );
    assert_eq!(std::fs::read(&local).unwrap(), data);
}

#[test]
fn a_download_in_flight_finishes_during_the_shutdown_grace() {
    let dir = TempDir::new().unwrap();
    let mut s = Server::start(dir.path(), &["--shutdown-grace", "60s"]);
    random_file(&s.root.join("f.bin"), 20 * MIB);
    let local = dir.path().join("f.bin");
    let part = dir.path().join("f.bin.tether-part");
    let child = tether()
        .args(["get", &s.host(), "f.bin", local.to_str().unwrap()])
        .args(["--limit-rate", "8M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(60), || file_len(&part) >= 2 * MIB));
    tether_tests::signal(s.pid(), "TERM");
    // New connections are no longer accepted while the transfer drains.
    assert!(s.wait_log("shutting down", Duration::from_secs(30)));
    let o = run(&["ls", &s.host()]);
    assert_eq!(o.status.code(), Some(1));
    let o = tether_tests::wait_output(child, Duration::from_secs(120));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sha256sum(&local), sha256sum(&s.root.join("f.bin")));
    let st = s.terminate(Duration::from_secs(60));
    assert!(st.is_some(), "the server did not stop after the transfer");
}
