//! `tether get/put/ls/stat/rm` against `tether serve`: verified transfers,
//! --force, and confinement to the served root.

use std::collections::BTreeMap;
use std::path::Path;

use tether_tests::{number_before, random_file, run, sha256sum, text, Server, TempDir};

const MIB: u64 = 1 << 20;

fn server() -> (TempDir, Server) {
    let dir = TempDir::new().unwrap();
    let s = Server::start(dir.path(), &[]);
    (dir, s)
}

/// The `<hex>  <path>` line a transfer prints.
fn printed_digest(stdout: &[u8]) -> String {
    let t = text(stdout);
    let line = t.lines().next().expect("a digest line");
    let (hex, _) = line.split_once("  ").expect("sha256sum format");
    assert_eq!(hex.len(), 64, "{line}");
    hex.to_string()
}

#[test]
fn put_and_get_100_mib_verified_by_an_independent_sha256() {
    let (dir, s) = server();
    let local = dir.path().join("big.bin");
    random_file(&local, 100 * MIB);
    let want = sha256sum(&local);

    let o = run(&["put", &s.host(), local.to_str().unwrap(), "data/big.bin"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(printed_digest(&o.stdout), want);
    assert_eq!(
        text(&o.stdout),
        format!("{want}  {}\n", local.display()),
        "sha256sum format"
    );
    assert_eq!(sha256sum(&s.root.join("data/big.bin")), want);
    assert_eq!(
        number_before(&text(&o.stderr), " transferred"),
        Some(100 * MIB)
    );
    // No partial left behind.
    assert!(!s.root.join("data/.big.bin.tether-part").exists());

    let back = dir.path().join("back.bin");
    let o = run(&["get", &s.host(), "data/big.bin", back.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(printed_digest(&o.stdout), want);
    assert_eq!(sha256sum(&back), want);
    assert!(!dir.path().join("back.bin.tether-part").exists());
    // The server logged one line per request with bytes.
    let log = s.log();
    assert!(log.contains("bytes=104857600"), "{log}");
}

#[test]
fn existing_destinations_need_force() {
    let (dir, s) = server();
    let a = dir.path().join("a.txt");
    let b = dir.path().join("b.txt");
    std::fs::write(&a, b"new content").unwrap();
    std::fs::write(&b, b"local original").unwrap();
    std::fs::write(s.root.join("a.txt"), b"remote original").unwrap();

    // put onto an existing remote file
    let o = run(&["put", &s.host(), a.to_str().unwrap(), "a.txt"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert_eq!(
        std::fs::read(s.root.join("a.txt")).unwrap(),
        b"remote original"
    );
    let o = run(&["put", &s.host(), a.to_str().unwrap(), "a.txt", "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(s.root.join("a.txt")).unwrap(), b"new content");

    // get onto an existing local file
    let o = run(&["get", &s.host(), "a.txt", b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&b).unwrap(), b"local original");
    let o = run(&["get", &s.host(), "a.txt", b.to_str().unwrap(), "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(&b).unwrap(), b"new content");
}

#[test]
fn ls_stat_rm() {
    let (dir, s) = server();
    std::fs::create_dir(s.root.join("sub")).unwrap();
    std::fs::write(s.root.join("sub/one.txt"), b"12345").unwrap();
    std::fs::write(s.root.join("two.txt"), b"").unwrap();
    let o = run(&["ls", &s.host()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let l = text(&o.stdout);
    assert!(
        l.lines()
            .any(|x| x.starts_with('d') && x.ends_with(" sub/")),
        "{l}"
    );
    assert!(
        l.lines()
            .any(|x| x.starts_with('-') && x.ends_with(" two.txt")),
        "{l}"
    );
    assert_eq!(l.lines().count(), 2);
    let o = run(&["ls", &s.host(), "sub"]);
    assert!(text(&o.stdout).contains(" 5 ") && text(&o.stdout).contains("one.txt"));
    let o = run(&["stat", &s.host(), "sub/one.txt"]);
    assert_eq!(o.status.code(), Some(0));
    let st = text(&o.stdout);
    assert!(
        st.starts_with('-') && st.contains(" 5 ") && st.contains("sub/one.txt"),
        "{st}"
    );
    // rm a directory that is not empty: refused; then the file, then the directory.
    let o = run(&["rm", &s.host(), "sub"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("not empty"), "{}", text(&o.stderr));
    let o = run(&["rm", &s.host(), "sub/one.txt"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = run(&["rm", &s.host(), "sub"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!s.root.join("sub").exists());
    // Missing paths: a clear error that says what to do.
    let o = run(&["stat", &s.host(), "nope.txt"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("NOT_FOUND") && e.contains("tether ls"), "{e}");
    let o = run(&[
        "get",
        &s.host(),
        "nope.txt",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!dir.path().join("x").exists());
}

#[test]
fn get_restarts_when_the_local_partial_does_not_match() {
    let (dir, s) = server();
    random_file(&s.root.join("f.bin"), 3 * MIB);
    let local = dir.path().join("f.bin");
    // A partial with other content than the remote file's prefix.
    random_file(&dir.path().join("f.bin.tether-part"), MIB);
    let o = run(&["get", &s.host(), "f.bin", local.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(e.contains("did not match"), "{e}");
    assert_eq!(number_before(&e, " transferred"), Some(3 * MIB));
    assert_eq!(sha256sum(&local), sha256sum(&s.root.join("f.bin")));
}

/// Every file below `dir` with its content.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            for (k, v) in snapshot(&p) {
                m.insert(format!("{}/{k}", e.file_name().to_string_lossy()), v);
            }
        } else {
            m.insert(
                e.file_name().to_string_lossy().into(),
                std::fs::read(&p).unwrap(),
            );
        }
    }
    m
}

#[test]
fn every_path_escape_is_refused_and_nothing_outside_is_touched() {
    let (dir, s) = server();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, s.root.join("link_out")).unwrap();
    std::os::unix::fs::symlink("../outside/secret.txt", s.root.join("link_file")).unwrap();
    std::fs::create_dir(s.root.join("sub")).unwrap();
    let upload = dir.path().join("upload.txt");
    std::fs::write(&upload, b"attacker data").unwrap();
    let before = snapshot(&outside);
    let here = dir.path().join("fetched");

    let forms = [
        "../outside/secret.txt",
        "../../etc/passwd",
        "..",
        "sub/../../outside/secret.txt",
        "/etc/passwd",
        "//etc/passwd",
        "link_out/secret.txt",
        "link_out/new.txt",
        "a\\..\\..\\outside",
        "bad\nname",
        "C:/windows",
    ];
    for form in forms {
        for op in ["get", "put", "ls", "stat", "rm"] {
            let args: Vec<&str> = match op {
                "get" => vec!["get", "--force", form, here.to_str().unwrap()],
                "put" => vec!["put", "--force", upload.to_str().unwrap(), form],
                other => vec![other, form],
            };
            let h = s.host();
            let mut full = vec![args[0], h.as_str()];
            full.extend_from_slice(&args[1..]);
            let o = run(&full);
            let e = text(&o.stderr);
            assert_eq!(
                o.status.code(),
                Some(1),
                "{op} {form:?} was not refused: {e}"
            );
            assert!(
                e.contains("PATH_REFUSED") || e.contains("refused"),
                "{op} {form:?}: {e}"
            );
        }
    }
    // Following the links out is refused too.
    for args in [
        vec!["get", "link_out"],
        vec!["ls", "link_out"],
        vec!["get", "link_file"],
    ] {
        let h = s.host();
        let mut full = vec![args[0], h.as_str()];
        full.extend_from_slice(&args[1..]);
        full.push(here.to_str().unwrap());
        if args[0] == "ls" {
            full.pop();
        }
        let o = run(&full);
        let e = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert!(
            e.contains("PATH_REFUSED") || e.contains("IS_DIRECTORY"),
            "{args:?}: {e}"
        );
    }
    // Replacing the link itself (with --force) stays inside: the link is
    // replaced, its target is not written.
    let o = run(&["put", &s.host(), upload.to_str().unwrap(), "link_file"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let o = run(&[
        "put",
        "--force",
        &s.host(),
        upload.to_str().unwrap(),
        "link_file",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!s.root.join("link_file").is_symlink());
    // rm of the link removes the link only.
    let o = run(&["rm", &s.host(), "link_out"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    assert_eq!(
        snapshot(&outside),
        before,
        "something outside the root changed"
    );
    assert!(!here.exists());
    // And the server still serves.
    let o = run(&["ls", &s.host()]);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn empty_files_and_default_names() {
    let (dir, s) = server();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    // REMOTE defaults to the file's name in the root; ending in '/' puts it inside.
    let o = run(&["put", &s.host(), empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(printed_digest(&o.stdout), EMPTY);
    assert_eq!(std::fs::read(s.root.join("empty.txt")).unwrap(), b"");
    let o = run(&["put", &s.host(), empty.to_str().unwrap(), "in/"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(s.root.join("in/empty.txt").is_file());
    // LOCAL a directory: the remote name inside it.
    let into = dir.path().join("into");
    std::fs::create_dir(&into).unwrap();
    let o = run(&["get", &s.host(), "in/empty.txt", into.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(printed_digest(&o.stdout), EMPTY);
    assert_eq!(std::fs::read(into.join("empty.txt")).unwrap(), b"");
}
