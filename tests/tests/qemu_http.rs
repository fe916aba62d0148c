//! The QEMU image's status page (issue 14): the real firmware booted in
//! QEMU's `mps2-an386`, its LAN9118 on a TAP in a network namespace, port 80
//! read by curl, by a plain Python socket client and by headless Chromium;
//! hostile HTTP clients get their status (or a close) while the image keeps
//! serving tether.
//!
//! Needs root, /dev/net/tun, iproute2 and qemu-system-arm (`make test`
//! installs it); without them it reports itself SKIPPED on the terminal,
//! and under CI (CI set) a missing qemu-system-arm fails instead. As root,
//! curl, python3 and chromium are installed with apt-get when missing.

use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tether_tests::http::{
    chromium_dom, curl, ensure_tools, header, hostile_suite, json_field, split, textbook_get,
    without_date, HOSTILE_RESPONSES,
};
use tether_tests::qemu::{image, missing_qemu, prov_block, random_seed, Qemu, DEV_IP};
use tether_tests::tap::{enter, skip, Netns};
use tether_tests::{tether_bin, text, wait_output, TempDir};

/// A namespace with the image booted in it (with `key` if given), up once
/// it answers a UDP ping; `None` when the test cannot run here.
fn boot(test: &str, prefix: &str, dir: &Path, key: Option<[u8; 32]>) -> Option<(Netns, Qemu)> {
    let ns = enter(test, prefix)?;
    if let Some(why) = missing_qemu() {
        assert!(std::env::var_os("CI").is_none(), "under CI: {why}");
        skip(test, &why);
        return None;
    }
    ensure_tools();
    let image = image();
    // Linux re-sends an unanswered ARP request only after 1 s.
    let mut c = ns.exec(Path::new("sh"));
    c.args([
        "-c",
        "echo 100 > /proc/sys/net/ipv4/neigh/tap0/retrans_time_ms",
    ]);
    assert!(c.status().unwrap().success());
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut q = Qemu::boot(&ns, &image, &prov_block(key, random_seed(), unix_ms), dir);
    let end = Instant::now() + Duration::from_secs(30);
    let ping = [
        "-qq",
        "ping",
        DEV_IP,
        "-c",
        "1",
        "--timeout",
        "100ms",
        "--retries",
        "0",
    ];
    while !ns.tether(&ping).status.success() {
        assert!(q.running(), "QEMU exited; log:\n{}", q.log_text());
        assert!(Instant::now() < end, "no answer; log:\n{}", q.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = q.log_text();
    assert!(
        log.contains(&format!("status page on http://{DEV_IP}:80/")),
        "{log}"
    );
    Some((ns, q))
}

/// The tether client in `ns`, with the key file if given; asserts success.
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
fn keyed_image_page_read_by_curl_a_socket_client_and_chromium() {
    let dir = TempDir::new().unwrap();
    let key_file = dir.path().join("device.key");
    assert!(tether_tests::tether()
        .arg("keygen")
        .arg(&key_file)
        .status()
        .unwrap()
        .success());
    let key_hex = std::fs::read_to_string(&key_file).unwrap();
    let key: [u8; 32] = hex::decode(key_hex.trim()).unwrap().try_into().unwrap();
    let Some((ns, mut q)) = boot("qemu_http", "tether-qhttp", dir.path(), Some(key)) else {
        return;
    };
    let k = Some(key_file.as_path());
    let local = dir.path().join("secret-plans.bin");
    std::fs::write(&local, vec![7u8; 5000]).unwrap();
    tether_ok(
        &ns,
        k,
        &["put", DEV_IP, local.to_str().unwrap(), "secret-plans.bin"],
    );
    tether_ok(&ns, k, &["exec", DEV_IP, "--", "led", "on"]);
    let mem = tether_ok(&ns, k, &["exec", DEV_IP, "--", "mem"]);
    assert!(
        mem.contains("status page (2): sockets + request buffers + state"),
        "{mem}"
    );

    let (code, head, page) = split(&curl(&ns, DEV_IP, &[], "/"));
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
        "<h1>tether-qemu/",
        "<tr><th>IP address</th><td>192.168.69.2</td></tr>",
        "<tr><th>LED</th><td>on</td></tr>",
        "<tr><th>Files</th><td>1 of 16</td></tr>",
        "<td>5000 of 12582912 bytes (0%)</td>",
        "required: connections authenticate",
        "Names are not shown: the device is keyed.",
    ] {
        assert!(page.contains(shown), "{shown} missing:\n{page}");
    }
    assert!(
        !page.contains("secret-plans"),
        "a keyed device showed a name"
    );

    // HEAD: the same headers (Date aside), no body; for the JSON too.
    let (hc, hhead, hbody) = split(&curl(&ns, DEV_IP, &["-I"], "/"));
    assert_eq!((hc, hbody.as_str()), (200, ""));
    assert_eq!(without_date(&hhead), without_date(&head));
    let (code, head, json) = split(&curl(&ns, DEV_IP, &[], "/status.json"));
    assert_eq!(
        (code, header(&head, "Content-Type")),
        (200, Some("application/json"))
    );
    assert!(!json.contains("secret-plans"));
    // The provisioning block set the clock: the page's wall time is now.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let got = json_field(
        &ns,
        &json,
        dir.path(),
        &format!(
            "j['keyed'], j['led'], j['ip'], j['store']['files'], j['store']['used'], j['files'], \
             j['connections']['accepted'] >= 3, j['agent'].startswith('tether-qemu/'), \
             abs(j['unix_ms'] - {now_ms}) < 120000, j['connections']['http_requests']"
        ),
    );
    assert_eq!(
        got, "True True 192.168.69.2 1 5000 None True True True 2",
        "{json}"
    );
    let (hc, hhead, hbody) = split(&curl(&ns, DEV_IP, &["-I"], "/status.json"));
    assert_eq!((hc, hbody.as_str()), (200, ""));
    assert_eq!(header(&hhead, "Content-Type"), Some("application/json"));

    // Errors: another path, another method, an HTTP version.
    let (c404, _, _) = split(&curl(&ns, DEV_IP, &[], "/secret-plans.bin"));
    let (c405, h405, _) = split(&curl(&ns, DEV_IP, &["-X", "POST", "-d", "x=1"], "/"));
    assert_eq!((c404, c405), (404, 405));
    assert_eq!(header(&h405, "Allow"), Some("GET, HEAD"));
    let (c400, _, _) = split(&curl(&ns, DEV_IP, &["-H", "Host:"], "/"));
    assert_eq!(c400, 400, "HTTP/1.1 without a Host");

    // The textbook socket client reads one whole response, then the close.
    let (code, head, body) = split(&textbook_get(&ns, DEV_IP, dir.path(), "/"));
    assert_eq!(code, 200);
    assert_eq!(
        header(&head, "Content-Length"),
        Some(&*body.len().to_string())
    );
    assert!(body.contains("<h1>tether-qemu/") && body.ends_with("</body></html>\n"));

    // A browser renders it, names still hidden.
    let dom = chromium_dom(&ns, &format!("http://{DEV_IP}/"));
    for shown in [
        "<title>tether-qemu/",
        "<h1>tether-qemu/",
        "<td>192.168.69.2</td>",
        "required: connections authenticate",
        "Names are not shown: the device is keyed.",
        "</body></html>",
    ] {
        assert!(dom.contains(shown), "{shown} missing from the DOM:\n{dom}");
    }
    assert!(!dom.contains("secret-plans"), "{dom}");

    // Read-only: the store and the LED are as they were; tether still serves.
    let ls = tether_ok(&ns, k, &["ls", DEV_IP]);
    assert!(ls.contains("secret-plans.bin"), "{ls}");
    let (_, _, json) = split(&curl(&ns, DEV_IP, &[], "/status.json"));
    let got = json_field(&ns, &json, dir.path(), "j['led'], j['store']['files']");
    assert_eq!(got, "True 1");
    assert!(q.running(), "QEMU exited; log:\n{}", q.log_text());
    let log = q.log_text();
    assert!(
        log.contains("http 0: 200 OK") || log.contains("http 1: 200 OK"),
        "{log}"
    );
}

#[test]
fn unkeyed_image_page_in_chromium_and_hostile_clients_while_tether_is_served() {
    let dir = TempDir::new().unwrap();
    let Some((ns, mut q)) = boot("qemu_http", "tether-qhttph", dir.path(), None) else {
        return;
    };
    let t0 = Instant::now();
    // A transfer runs over tether the whole time the hostile clients do.
    let file: Vec<u8> = (0..512 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let up = dir.path().join("up.bin");
    std::fs::write(&up, &file).unwrap();
    let hostile_dir = TempDir::new().unwrap();
    std::thread::scope(|s| {
        let ns = &ns;
        let (up, dir) = (&up, dir.path());
        let transfers = s.spawn(move || {
            let mut rounds = 0;
            let end = Instant::now() + Duration::from_secs(10);
            while rounds < 2 || Instant::now() < end {
                let up = up.to_str().unwrap();
                tether_ok(ns, None, &["put", "--force", DEV_IP, up, "up.bin"]);
                let back = dir.join(format!("back{rounds}.bin"));
                tether_ok(ns, None, &["get", DEV_IP, "up.bin", back.to_str().unwrap()]);
                assert!(std::fs::read(&back).unwrap() == file, "round {rounds}");
                rounds += 1;
            }
            rounds
        });
        hostile_suite(ns, DEV_IP, hostile_dir.path(), &|case| {
            let pong = tether_ok(ns, None, &["ping", DEV_IP, "-c", "1"]);
            assert!(pong.contains("1 received"), "after {case}: {pong}");
            assert_eq!(
                tether_ok(ns, None, &["exec", DEV_IP, "--", "echo", "still", "here"]),
                "still here\n",
                "after {case}"
            );
        });
        let rounds = transfers.join().unwrap();
        let _ = writeln!(
            std::io::stderr(),
            "qemu_http: hostile suite in {:?}, {rounds} put+get rounds of 512 KiB meanwhile",
            t0.elapsed()
        );
    });

    // The page counted exactly the hostile responses; the tether side saw
    // none of it.
    let (code, _, json) = split(&curl(&ns, DEV_IP, &[], "/status.json"));
    assert_eq!(code, 200);
    let got = json_field(
        &ns,
        &json,
        dir.path(),
        "j['security']['bad_frames'], j['connections']['errors_sent'], j['connections']['http_requests']",
    );
    assert_eq!(got, format!("0 0 {HOSTILE_RESPONSES}"), "{json}");

    // Unkeyed, the page lists names: as text, not markup.
    let name = "<b>bold&co.txt";
    let local = dir.path().join("f.txt");
    std::fs::write(&local, b"hello").unwrap();
    tether_ok(&ns, None, &["put", DEV_IP, local.to_str().unwrap(), name]);
    let (_, _, json) = split(&curl(&ns, DEV_IP, &[], "/status.json"));
    let files = json_field(
        &ns,
        &json,
        dir.path(),
        "j['keyed'], sorted((f['name'], f['size']) for f in j['files'])",
    );
    assert_eq!(files, format!("False [('{name}', 5), ('up.bin', 524288)]"));
    let dom = chromium_dom(&ns, &format!("http://{DEV_IP}/"));
    for shown in [
        "<h1>tether-qemu/",
        "<th>Uptime</th>",
        "<th>Wall time</th>",
        "none: anyone who reaches the device is served",
        "<th>&lt;b&gt;bold&amp;co.txt</th><td>5 bytes</td>",
        "<th>up.bin</th><td>524288 bytes</td>",
        "</body></html>",
    ] {
        assert!(dom.contains(shown), "{shown} missing from the DOM:\n{dom}");
    }
    assert!(!dom.contains("<b>bold"), "the file name became markup");
    assert!(q.running(), "QEMU exited; log:\n{}", q.log_text());
}
