//! The simulated device as a client over a real TAP: `push` puts a stored
//! file to a `tether serve` on the TAP's host side (the core's blocking
//! client driver over the device's smoltcp socket), `fetch` gets it back
//! under another name; both compared with SHA-256. Keyed: the device and
//! the server share the key, so the session is sealed.
//!
//! Needs root, /dev/net/tun and iproute2; without them it reports itself
//! SKIPPED on the terminal and passes.

use std::io::Write as _;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tether_tests::tap::{enter, sim_bin, Netns, DEV_IP, HOST_IP};
use tether_tests::{tether, tether_bin, wait_output, TempDir};

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tether failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tether ARGS` in the namespace with the key.
fn keyed(ns: &Netns, key: &Path, args: &[&str]) -> Output {
    let mut c = ns.exec(&tether_bin());
    c.env("TETHER_KEY_FILE", key)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    wait_output(c.spawn().expect("spawn tether"), Duration::from_secs(60))
}

/// Poll `jobs` on the device until the last job ended; its line.
fn wait_job(ns: &Netns, key: &Path, log: &Path) -> String {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let line = ok(&keyed(ns, key, &["exec", DEV_IP, "--", "jobs"]))
            .trim()
            .to_string();
        if line.contains(": done: ") || line.contains(": failed: ") {
            return line;
        }
        assert!(
            Instant::now() < end,
            "the job never ended: {line}\nlog:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn simulated_device_pushes_to_and_fetches_from_tether_serve_over_tap() {
    let Some(ns) = enter("sim_push", "tether-simpush") else {
        return;
    };
    let dir = TempDir::new().unwrap();
    let key = dir.path().join("device.key");
    assert!(tether().arg("keygen").arg(&key).status().unwrap().success());
    let log_path = dir.path().join("sim.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut sim = ns.exec(&sim_bin());
    sim.args(["--tap", "tap0", "--seed", "11", "--key-file"])
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(log);
    let mut child = sim.spawn().expect("spawn tether-sim");
    let end = Instant::now() + Duration::from_secs(20);
    while !ns
        .tether(&["-qq", "ping", DEV_IP, "-c", "1", "--timeout", "200ms"])
        .status
        .success()
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "tether-sim exited: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        assert!(Instant::now() < end, "the device never answered");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A file on the device, put there by the real client.
    let file: Vec<u8> = (0..700_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let digest = hex::encode(Sha256::digest(&file));
    let local = dir.path().join("up.bin");
    std::fs::write(&local, &file).unwrap();
    ok(&keyed(
        &ns,
        &key,
        &["put", DEV_IP, local.to_str().unwrap(), "up.bin"],
    ));

    // The device pushes it to a keyed tether serve on the host side.
    let served = dir.path().join("served");
    std::fs::create_dir(&served).unwrap();
    let server = ns.serve(&served, 7117, Some(&key));
    let started = ok(&keyed(
        &ns,
        &key,
        &["exec", DEV_IP, "--", "push", HOST_IP, "up.bin"],
    ));
    assert!(started.contains("started"), "{started}");
    let line = wait_job(&ns, &key, &log_path);
    assert!(
        line.contains(": done: 700000 B in ")
            && line.contains(&digest)
            && line.ends_with(", sealed"),
        "{line}\nserver log:\n{}",
        server.log()
    );
    let _ = writeln!(
        std::io::stderr(),
        "sim_push: push 700,000 B, sealed: {line}"
    );
    let copy = std::fs::read(served.join("up.bin")).expect("the server's copy");
    assert_eq!(
        hex::encode(Sha256::digest(&copy)),
        digest,
        "the server's copy differs"
    );

    // ... and fetches it back under another name.
    let host = format!("{HOST_IP}:7117");
    ok(&keyed(
        &ns,
        &key,
        &["exec", DEV_IP, "--", "fetch", &host, "up.bin", "back.bin"],
    ));
    let line = wait_job(&ns, &key, &log_path);
    assert!(
        line.contains("fetch up.bin from")
            && line.contains(": done: 700000 B")
            && line.contains(&digest),
        "{line}\nserver log:\n{}",
        server.log()
    );
    let _ = writeln!(
        std::io::stderr(),
        "sim_push: fetch 700,000 B, sealed: {line}"
    );
    assert_eq!(
        ok(&keyed(
            &ns,
            &key,
            &["exec", DEV_IP, "--", "sha256", "back.bin"]
        )),
        format!("{digest}  back.bin\n")
    );
    let back = dir.path().join("back.bin");
    ok(&keyed(
        &ns,
        &key,
        &["get", DEV_IP, "back.bin", back.to_str().unwrap()],
    ));
    assert!(std::fs::read(&back).unwrap() == file, "back.bin differs");

    // The server's errors end the job, and say why.
    ok(&keyed(
        &ns,
        &key,
        &["exec", DEV_IP, "--", "fetch", HOST_IP, "nope.bin"],
    ));
    let line = wait_job(&ns, &key, &log_path);
    assert!(
        line.contains("failed") && line.contains("NOT_FOUND"),
        "{line}"
    );
    drop(server);
    // Nobody listening.
    ok(&keyed(
        &ns,
        &key,
        &["exec", DEV_IP, "--", "push", HOST_IP, "up.bin"],
    ));
    let line = wait_job(&ns, &key, &log_path);
    assert!(
        line.contains("failed") && line.contains("cannot connect"),
        "{line}"
    );
    // A server without the key is refused by the device.
    let open_root = dir.path().join("open");
    std::fs::create_dir(&open_root).unwrap();
    let open = ns.serve(&open_root, 7118, None);
    let to_open = format!("{HOST_IP}:7118");
    ok(&keyed(
        &ns,
        &key,
        &["exec", DEV_IP, "--", "push", &to_open, "up.bin"],
    ));
    let line = wait_job(&ns, &key, &log_path);
    assert!(
        line.contains("failed") && line.contains("does not authenticate"),
        "{line}"
    );
    assert!(!open_root.join("up.bin").exists());
    drop(open);
    // Usage errors, and the device serves on.
    assert_eq!(
        keyed(
            &ns,
            &key,
            &["exec", DEV_IP, "--", "push", "nowhere", "up.bin"]
        )
        .status
        .code(),
        Some(2)
    );
    assert_eq!(
        ok(&keyed(
            &ns,
            &key,
            &["exec", DEV_IP, "--", "echo", "still", "here"]
        )),
        "still here\n"
    );
    assert!(child.try_wait().unwrap().is_none(), "tether-sim exited");
    let _ = child.kill();
    let _ = child.wait();
}
