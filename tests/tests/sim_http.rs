//! The simulated device's status page (`tether-sim --http`) over a real TAP
//! in a network namespace this test creates, read by curl, by a plain
//! Python socket client and by headless Chromium; hostile HTTP clients get
//! their status (or a close) while the device keeps serving tether.
//!
//! Needs root, /dev/net/tun and iproute2: without them the tests report
//! themselves SKIPPED on the terminal and pass. As root, curl, python3 and
//! chromium are installed with apt-get when missing; if that fails the test
//! fails (it never skips silently as root).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tether_tests::tap::{enter, sim_bin, Netns, DEV_IP};
use tether_tests::{tether_bin, text, wait_output, TempDir};

/// The textbook client: connect, send one request, read until the close.
const TEXTBOOK: &str = r#"
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
const HOSTILE: &str = r#"
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

/// Install what the tests drive, once per process (idempotent: nothing is
/// installed when everything is there). Panics if it cannot.
fn ensure_tools() {
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

/// A device in `ns` serving its status page, up once it answers a UDP ping.
struct Device {
    child: Child,
    log: PathBuf,
}

impl Device {
    fn start(ns: &Netns, dir: &Path, key: Option<&Path>) -> Device {
        let log = dir.join("sim.log");
        let mut sim = ns.exec(&sim_bin());
        sim.args(["--tap", "tap0", "--http"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(k) = key {
            sim.arg("--key-file").arg(k);
        }
        let mut d = Device {
            child: sim.spawn().expect("spawn tether-sim"),
            log,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while !ns
            .tether(&["-qq", "ping", DEV_IP, "-c", "1", "--timeout", "200ms"])
            .status
            .success()
        {
            d.assert_alive();
            assert!(Instant::now() < end, "the device never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_alive(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("tether-sim exited ({st}): {}", self.log());
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `program args` in `ns` (at most 90 s).
fn run_in(ns: &Netns, program: &str, args: &[&str]) -> Output {
    let mut c = ns.exec(Path::new(program));
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    wait_output(c.spawn().expect("spawn"), Duration::from_secs(90))
}

/// The tether client in `ns`, with `key` if given; asserts success.
fn tether_ok(ns: &Netns, key: Option<&Path>, args: &[&str]) -> String {
    let mut c = ns.exec(&tether_bin());
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(k) = key {
        c.env("TETHER_KEY_FILE", k);
    }
    let o = wait_output(c.spawn().expect("spawn tether"), Duration::from_secs(60));
    assert!(o.status.success(), "tether {args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

/// `curl -sS -i ARGS URL-path`: the whole response, head and body.
fn curl(ns: &Netns, extra: &[&str], path: &str) -> String {
    let url = format!("http://{DEV_IP}{path}");
    let mut args = vec!["-sS", "-i", "--max-time", "20"];
    args.extend_from_slice(extra);
    args.push(&url);
    let o = run_in(ns, "curl", &args);
    assert!(o.status.success(), "curl {args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

/// Status code, a header's value and the body of a response.
fn split(resp: &str) -> (u16, String, String) {
    let (head, body) = resp.split_once("\r\n\r\n").expect("a head");
    let code = head[9..12].parse().expect("a status line");
    (code, head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(": ")?;
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// Check JSON with Python's parser; returns `python3 -c EXPR` of it as `j`.
fn json_field(ns: &Netns, json: &str, dir: &Path, expr: &str) -> String {
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

#[test]
fn keyed_device_page_read_by_curl_and_a_plain_socket_client() {
    let Some(ns) = enter("sim_http", "tether-http") else {
        return;
    };
    ensure_tools();
    let dir = TempDir::new().unwrap();
    let key = dir.path().join("sim.key");
    tether_ok(&ns, None, &["keygen", key.to_str().unwrap()]);
    let mut dev = Device::start(&ns, dir.path(), Some(&key));
    let k = Some(key.as_path());
    let local = dir.path().join("secret-plans.bin");
    std::fs::write(&local, vec![7u8; 5000]).unwrap();
    tether_ok(
        &ns,
        k,
        &["put", DEV_IP, local.to_str().unwrap(), "secret-plans.bin"],
    );
    tether_ok(&ns, k, &["exec", DEV_IP, "--", "led", "on"]);

    let (code, head, page) = split(&curl(&ns, &[], "/"));
    assert_eq!(code, 200, "{head}");
    assert_eq!(
        header(&head, "Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        header(&head, "Content-Length"),
        Some(&*page.len().to_string())
    );
    assert_eq!(header(&head, "Connection"), Some("close"));
    for shown in [
        "<h1>tether-sim/",
        "<tr><th>IP address</th><td>192.168.69.1</td></tr>",
        "<tr><th>LED</th><td>on</td></tr>",
        "<tr><th>Files</th><td>1 of 32</td></tr>",
        "<td>5000 of 2097152 bytes (0%)</td>",
        "required: connections authenticate",
        "Names are not shown: the device is keyed.",
    ] {
        assert!(page.contains(shown), "{shown} missing:\n{page}");
    }
    assert!(
        !page.contains("secret-plans"),
        "a keyed device showed a name"
    );

    // HEAD: the same headers (Date aside), no body.
    let (hc, hhead, hbody) = split(&curl(&ns, &["-I"], "/"));
    assert_eq!((hc, hbody.as_str()), (200, ""));
    let strip = |h: &str| {
        h.lines()
            .filter(|l| !l.starts_with("Date:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&hhead), strip(&head));

    let (code, head, json) = split(&curl(&ns, &[], "/status.json"));
    assert_eq!(
        (code, header(&head, "Content-Type")),
        (200, Some("application/json"))
    );
    assert!(!json.contains("secret-plans"));
    let got = json_field(
        &ns,
        &json,
        dir.path(),
        "j['keyed'], j['led'], j['ip'], j['store']['files'], j['store']['used'], j['files'], j['connections']['accepted'] >= 2",
    );
    assert_eq!(got, "True True 192.168.69.1 1 5000 None True");

    let (c404, _, _) = split(&curl(&ns, &[], "/secret-plans.bin"));
    let (c405, h405, _) = split(&curl(&ns, &["-X", "POST", "-d", "x=1"], "/"));
    assert_eq!((c404, c405), (404, 405));
    assert_eq!(header(&h405, "Allow"), Some("GET, HEAD"));

    // The textbook socket client reads one whole response, then the close.
    let script = dir.path().join("textbook.py");
    std::fs::write(&script, TEXTBOOK).unwrap();
    let o = run_in(&ns, "python3", &[script.to_str().unwrap(), DEV_IP, "/"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let (code, head, body) = split(&text(&o.stdout));
    assert_eq!(code, 200);
    assert_eq!(
        header(&head, "Content-Length"),
        Some(&*body.len().to_string())
    );
    assert!(body.contains("<h1>tether-sim/") && body.ends_with("</body></html>\n"));
    dev.assert_alive();
}

#[test]
fn unkeyed_device_page_rendered_by_headless_chromium() {
    let Some(ns) = enter("sim_http", "tether-httpc") else {
        return;
    };
    ensure_tools();
    let dir = TempDir::new().unwrap();
    let mut dev = Device::start(&ns, dir.path(), None);
    let name = "<b>bold&co.txt";
    let local = dir.path().join("f.txt");
    std::fs::write(&local, b"hello").unwrap();
    tether_ok(&ns, None, &["put", DEV_IP, local.to_str().unwrap(), name]);

    let (code, _, json) = split(&curl(&ns, &[], "/status.json"));
    assert_eq!(code, 200);
    let files = json_field(&ns, &json, dir.path(), "j['keyed'], j['files']");
    assert_eq!(files, format!("False [{{'name': '{name}', 'size': 5}}]"));

    let profile = TempDir::new().unwrap();
    let url = format!("http://{DEV_IP}/");
    let o = run_in(
        &ns,
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
            &url,
        ],
    );
    let dom = text(&o.stdout);
    assert!(o.status.success(), "chromium: {}\n{dom}", text(&o.stderr));
    for shown in [
        "<title>tether-sim/",
        "<h1>tether-sim/",
        "<th>Uptime</th>",
        "<td>192.168.69.1</td>",
        "<th>Wall time</th>",
        "none: anyone who reaches the device is served",
        // The name is text, not markup: the DOM holds it escaped.
        "<th>&lt;b&gt;bold&amp;co.txt</th><td>5 bytes</td>",
        "</body></html>",
    ] {
        assert!(
            dom.contains(shown),
            "{shown} missing from the rendered page:\n{dom}"
        );
    }
    assert!(!dom.contains("<b>bold"), "the file name became markup");
    dev.assert_alive();
}

/// Run the hostile client in `ns`: (response, how it ended).
fn hostile(ns: &Netns, script: &Path, args: &[&str]) -> (String, String) {
    let mut full = vec![script.to_str().unwrap(), DEV_IP];
    full.extend_from_slice(args);
    let o = run_in(ns, "python3", &full);
    assert!(o.status.success(), "{}", text(&o.stderr));
    (text(&o.stdout), text(&o.stderr).trim().to_string())
}

fn code_of(resp: &str) -> Option<u16> {
    resp.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[test]
fn hostile_http_clients_get_their_status_while_tether_is_served() {
    let Some(ns) = enter("sim_http", "tether-httph") else {
        return;
    };
    ensure_tools();
    let dir = TempDir::new().unwrap();
    let mut dev = Device::start(&ns, dir.path(), None);
    let script = dir.path().join("hostile.py");
    std::fs::write(&script, HOSTILE).unwrap();
    let payload = |name: &str, bytes: Vec<u8>| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };

    // A slowloris holds one HTTP slot: a line a second, never finishing.
    let mut slow = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..40 {
        slow.extend_from_slice(format!("X-Slow-{i}: a\r\n").as_bytes());
    }
    let slow = payload("slow", slow);
    let ns_ref = &ns;
    let script_ref = &script;
    std::thread::scope(|s| {
        let t0 = Instant::now();
        let slowloris = s.spawn(move || hostile(ns_ref, script_ref, &["slow", &slow, "1"]));
        std::thread::sleep(Duration::from_millis(500));

        // Meanwhile, one after another on the other slot, and tether.
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
            let (resp, end) = hostile(&ns, &script, &["send", &payload(name, bytes)]);
            assert_eq!(code_of(&resp), Some(want), "{name}: {end}\n{resp:.300}");
            assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{name}: one response");
            assert!(
                end.starts_with("end: eof") || end.starts_with("end: reset"),
                "{name}: {end}"
            );
            let pong = tether_ok(&ns, None, &["ping", DEV_IP, "-c", "1"]);
            assert!(pong.contains("1 received"), "{pong}");
        }
        let (resp, end) = hostile(&ns, &script, &["endless"]);
        assert_eq!(code_of(&resp), Some(431), "endless headers: {end}");
        assert_eq!(
            tether_ok(&ns, None, &["exec", DEV_IP, "--", "echo", "still", "here"]),
            "still here\n"
        );

        let (resp, end) = slowloris.join().unwrap();
        let took = t0.elapsed();
        assert_eq!(code_of(&resp), Some(408), "slowloris: {end}\n{resp}");
        assert!(end.starts_with("end: eof"), "{end}");
        assert!(
            took >= Duration::from_secs(9) && took < Duration::from_secs(30),
            "408 after {took:?}"
        );
    });

    // Afterwards: the page and tether as before, and the tether side saw none of it.
    let (code, _, json) = split(&curl(&ns, &[], "/status.json"));
    assert_eq!(code, 200);
    let got = json_field(
        &ns,
        &json,
        dir.path(),
        "j['security']['bad_frames'], j['connections']['errors_sent'], j['connections']['http_requests'] >= 6",
    );
    assert_eq!(got, "0 0 True");
    assert_eq!(
        tether_ok(&ns, None, &["exec", DEV_IP, "--", "echo", "after"]),
        "after\n"
    );
    dev.assert_alive();
}
