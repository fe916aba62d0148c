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
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tether_tests::http::{
    chromium_dom, ensure_tools, header, hostile_suite, json_field, split, textbook_get,
    without_date, HOSTILE_RESPONSES,
};
use tether_tests::tap::{enter, sim_bin, Netns, DEV_IP};
use tether_tests::{tether_bin, text, wait_output, TempDir};

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

/// `curl -sS -i EXTRA http://DEV_IP/PATH`: the whole response.
fn curl(ns: &Netns, extra: &[&str], path: &str) -> String {
    tether_tests::http::curl(ns, DEV_IP, extra, path)
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
    assert_eq!(without_date(&hhead), without_date(&head));

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
    let (hc, hhead, hbody) = split(&curl(&ns, &["-I"], "/status.json"));
    assert_eq!((hc, hbody.as_str()), (200, ""));
    assert_eq!(
        header(&hhead, "Content-Type"),
        Some("application/json"),
        "{hhead}"
    );
    let len: usize = header(&hhead, "Content-Length").unwrap().parse().unwrap();
    assert!(len > 200, "{hhead}");

    // A browser renders the keyed page without names too.
    let dom = chromium_dom(&ns, &format!("http://{DEV_IP}/"));
    assert!(
        dom.contains("Names are not shown: the device is keyed."),
        "{dom}"
    );
    assert!(!dom.contains("secret-plans"), "{dom}");

    let (c404, _, _) = split(&curl(&ns, &[], "/secret-plans.bin"));
    let (c405, h405, _) = split(&curl(&ns, &["-X", "POST", "-d", "x=1"], "/"));
    assert_eq!((c404, c405), (404, 405));
    assert_eq!(header(&h405, "Allow"), Some("GET, HEAD"));

    // The textbook socket client reads one whole response, then the close.
    let resp = textbook_get(&ns, DEV_IP, dir.path(), "/");
    let (code, head, body) = split(&resp);
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

    let dom = chromium_dom(&ns, &format!("http://{DEV_IP}/"));
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

#[test]
fn hostile_http_clients_get_their_status_while_tether_is_served() {
    let Some(ns) = enter("sim_http", "tether-httph") else {
        return;
    };
    ensure_tools();
    let dir = TempDir::new().unwrap();
    let mut dev = Device::start(&ns, dir.path(), None);
    // Each case is followed by a ping and a command over tether.
    hostile_suite(&ns, DEV_IP, dir.path(), &|case| {
        let pong = tether_ok(&ns, None, &["ping", DEV_IP, "-c", "1"]);
        assert!(pong.contains("1 received"), "after {case}: {pong}");
        assert_eq!(
            tether_ok(&ns, None, &["exec", DEV_IP, "--", "echo", "still", "here"]),
            "still here\n",
            "after {case}"
        );
    });

    // Afterwards: the page and tether as before, and the tether side saw none of it.
    let (code, _, json) = split(&curl(&ns, &[], "/status.json"));
    assert_eq!(code, 200);
    let got = json_field(
        &ns,
        &json,
        dir.path(),
        "j['security']['bad_frames'], j['connections']['errors_sent'], j['connections']['http_requests']",
    );
    assert_eq!(got, format!("0 0 {HOSTILE_RESPONSES}"));
    assert_eq!(
        tether_ok(&ns, None, &["exec", DEV_IP, "--", "echo", "after"]),
        "after\n"
    );
    dev.assert_alive();
}
