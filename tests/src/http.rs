//! HTTP clients for the status-page tests (`sim_http`, `qemu_http`): curl,
//! a plain Python socket client, headless Chromium and hostile clients,
//! each run inside a [`Netns`] against a device's address; and the hostile
//! suite both devices face.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::tap::Netns;
use crate::{text, wait_output};

/// The textbook client: connect, send one request, read until the close.
pub const TEXTBOOK: &str = r#"
import socket, sys
host, path = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect((host, 80))
s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
chunks = []
while True:
    data = s.recv(4096)
    if not data:
        break
    chunks.append(data)
s.close()
sys.stdout.buffer.write(b"".join(chunks))
"#;

/// A hostile client: sends (all at once, a line at a time, or without end)
/// while a thread reads until the device closes; prints what it read and,
/// on stderr, how the connection ended.
pub const HOSTILE: &str = r#"
import socket, sys, threading, time
host, mode = sys.argv[1], sys.argv[2]
s = socket.create_connection((host, 80), timeout=60)
got, st, done = bytearray(), {"end": "none", "sent": 0}, threading.Event()
def reader():
    try:
        while True:
            d = s.recv(65536)
            if not d:
                st["end"] = "eof"
                break
            got.extend(d)
    except ConnectionResetError:
        st["end"] = "reset"
    except socket.timeout:
        st["end"] = "timeout"
    done.set()
t = threading.Thread(target=reader)
t.start()
def send(b):
    try:
        s.sendall(b)
        st["sent"] += len(b)
        return True
    except OSError:
        return False
t0 = time.monotonic()
if mode == "send":
    send(open(sys.argv[3], "rb").read())
elif mode == "slow":
    for line in open(sys.argv[3], "rb").read().splitlines(keepends=True):
        if done.is_set() or not send(line):
            break
        done.wait(float(sys.argv[4]))
elif mode == "endless":
    send(b"GET / HTTP/1.1\r\nHost: x\r\n")
    i = 0
    while not done.is_set() and st["sent"] < 16 << 20 and send(b"X-Filler-%d: %s\r\n" % (i, b"a" * 60)):
        i += 1
t.join(90)
sys.stdout.buffer.write(bytes(got))
sys.stderr.write("end: %s after %.1f s, sent %d\n" % (st["end"], time.monotonic() - t0, st["sent"]))
"#;

/// Install what the tests drive (curl, python3, chromium), once per process
/// (idempotent: nothing is installed when everything is there). Panics if
/// it cannot: as root these tests never skip silently.
pub fn ensure_tools() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let have = |cmd: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = ["curl", "python3", "chromium"]
        .into_iter()
        .filter(|c| !have(c))
        .collect();
    if !missing.is_empty() {
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
                .map(|o| (o.status.success(), text(&o.stderr)))
                .unwrap_or_else(|e| (false, format!("cannot run apt-get: {e}")))
        };
        let (ok, err) = apt(&["update", "-qq"]);
        assert!(ok, "apt-get update failed: {err}");
        let mut args = vec!["install", "-y", "-qq"];
        args.extend(&missing);
        let (ok, err) = apt(&args);
        assert!(ok, "apt-get install {missing:?} failed: {err}");
        for c in &missing {
            assert!(have(c), "{c} still missing after apt-get install");
        }
    }
    *done = true;
}

/// Run `program args` in `ns` (at most 90 s).
pub fn run_in(ns: &Netns, program: &str, args: &[&str]) -> Output {
    let mut c = ns.exec(Path::new(program));
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    wait_output(c.spawn().expect("spawn"), Duration::from_secs(90))
}

/// `curl -sS -i EXTRA http://HOST/PATH`: the whole response, head and body.
pub fn curl(ns: &Netns, host: &str, extra: &[&str], path: &str) -> String {
    let url = format!("http://{host}{path}");
    let mut args = vec!["-sS", "-i", "--max-time", "20"];
    args.extend_from_slice(extra);
    args.push(&url);
    let o = run_in(ns, "curl", &args);
    assert!(o.status.success(), "curl {args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

/// Status code, head and body of a response.
pub fn split(resp: &str) -> (u16, String, String) {
    let (head, body) = resp.split_once("\r\n\r\n").expect("a head");
    let code = head[9..12].parse().expect("a status line");
    (code, head.to_string(), body.to_string())
}

/// A header's value.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(": ")?;
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The head without its `Date:` line (HEAD and GET may straddle a second).
pub fn without_date(head: &str) -> String {
    head.lines()
        .filter(|l| !l.starts_with("Date:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Check JSON with Python's parser; returns `python3 -c EXPR` of it as `j`.
pub fn json_field(ns: &Netns, json: &str, dir: &Path, expr: &str) -> String {
    let f = dir.join("status.json");
    std::fs::write(&f, json).unwrap();
    let code = format!("import json,sys; j=json.load(open(sys.argv[1])); print({expr})");
    let o = run_in(ns, "python3", &["-c", &code, f.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "not valid JSON? {}\n{json}",
        text(&o.stderr)
    );
    text(&o.stdout).trim().to_string()
}

/// The textbook socket client's GET `path` from `host`: what it read up to
/// the close.
pub fn textbook_get(ns: &Netns, host: &str, dir: &Path, path: &str) -> String {
    let script = dir.join("textbook.py");
    std::fs::write(&script, TEXTBOOK).unwrap();
    let o = run_in(ns, "python3", &[script.to_str().unwrap(), host, path]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
}

/// The DOM headless Chromium renders from `url`.
pub fn chromium_dom(ns: &Netns, url: &str) -> String {
    let profile = tempfile::TempDir::new().unwrap();
    let o = run_in(
        ns,
        "chromium",
        &[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            url,
        ],
    );
    let dom = text(&o.stdout);
    assert!(o.status.success(), "chromium: {}\n{dom}", text(&o.stderr));
    dom
}

/// Run the hostile client in `ns` against `host`: (response, how it ended).
pub fn hostile(ns: &Netns, script: &Path, host: &str, args: &[&str]) -> (String, String) {
    let mut full = vec![script.to_str().unwrap(), host];
    full.extend_from_slice(args);
    let o = run_in(ns, "python3", &full);
    assert!(o.status.success(), "{}", text(&o.stderr));
    (text(&o.stdout), text(&o.stderr).trim().to_string())
}

/// The status code of a response.
pub fn code_of(resp: &str) -> Option<u16> {
    resp.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The hostile suite, against the page on `host` (which serves at least
/// two HTTP connections at once): a slowloris holds one connection (a
/// header line a second, never finishing) while, one after another on the
/// other, garbage (400), a 64 KiB request line (414), 1,000 pipelined
/// requests (one 200, then the close), HTTP/2.0 (505) and never-ending
/// headers (431) each get their status and a close; the slowloris gets 408
/// about 10 s after it connected. `alive(case)` runs after each case and
/// must check that the device still serves tether. That is
/// [`HOSTILE_RESPONSES`] responses.
pub fn hostile_suite(ns: &Netns, host: &str, dir: &Path, alive: &(dyn Fn(&str) + Sync)) {
    let script = dir.join("hostile.py");
    std::fs::write(&script, HOSTILE).unwrap();
    let payload = |name: &str, bytes: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let mut slow = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..40 {
        slow.extend_from_slice(format!("X-Slow-{i}: a\r\n").as_bytes());
    }
    let slow = payload("slow", slow);
    let script_ref = &script;
    std::thread::scope(|s| {
        let t0 = Instant::now();
        let slowloris = s.spawn(move || hostile(ns, script_ref, host, &["slow", &slow, "1"]));
        std::thread::sleep(Duration::from_millis(500));

        let garbage: Vec<u8> = (0..64u32).map(|i| (i * 97 + 13) as u8).collect();
        let mut long = b"GET /".to_vec();
        long.resize(64 * 1024, b'a');
        long.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut pipelined = Vec::new();
        for _ in 0..1000 {
            pipelined.extend_from_slice(b"GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        let cases: [(&str, Vec<u8>, u16); 4] = [
            ("garbage", garbage, 400),
            ("long", long, 414),
            ("pipelined", pipelined, 200),
            ("v2", b"GET / HTTP/2.0\r\n\r\n".to_vec(), 505),
        ];
        for (name, bytes, want) in cases {
            let (resp, end) = hostile(ns, &script, host, &["send", &payload(name, bytes)]);
            assert_eq!(code_of(&resp), Some(want), "{name}: {end}\n{resp:.300}");
            assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{name}: one response");
            assert!(
                end.starts_with("end: eof") || end.starts_with("end: reset"),
                "{name}: {end}"
            );
            alive(name);
        }
        let (resp, end) = hostile(ns, &script, host, &["endless"]);
        assert_eq!(code_of(&resp), Some(431), "endless headers: {end}");
        alive("endless");

        let (resp, end) = slowloris.join().unwrap();
        let took = t0.elapsed();
        assert_eq!(code_of(&resp), Some(408), "slowloris: {end}\n{resp}");
        assert!(end.starts_with("end: eof"), "{end}");
        assert!(
            took >= Duration::from_secs(9) && took < Duration::from_secs(30),
            "408 after {took:?}"
        );
    });
}

/// The responses [`hostile_suite`] gets (each counted on the page).
pub const HOSTILE_RESPONSES: u64 = 6;
