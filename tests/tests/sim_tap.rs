//! The simulated device over a real TAP interface inside a network
//! namespace this test creates, driven by the real `tether` client.
//!
//! Needs root, /dev/net/tun and iproute2. Without them the test reports
//! itself SKIPPED on the terminal (past the harness's output capture) and
//! passes: it cannot run here, which says nothing about the code.

use std::process::Output;
use tether_tests::tap::{enter, Sim, DEV_IP};
use tether_tests::TempDir;

/// Why this machine cannot run the TAP test, if it cannot.
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tether failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn device_over_tap_in_a_namespace_with_the_tether_client() {
    let Some(ns) = enter("sim_tap", "tether-simtest") else {
        return;
    };
    let dir = TempDir::new().unwrap();
    let pcap = dir.path().join("sim.pcap");
    let pcap_arg = pcap.to_str().unwrap();
    let sim = Sim::start(
        &ns,
        &["--seed", "7", "--pcap", pcap_arg],
        &dir.path().join("sim.log"),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let out = ok(&ns.tether(&["ping", DEV_IP, "-c", "2", "-i", "50ms"]));
    assert!(out.contains("2 received"), "{out}");
    assert_eq!(
        ok(&ns.tether(&["exec", DEV_IP, "--", "echo", "over", "tap"])),
        "over tap\n"
    );
    assert_eq!(
        ok(&ns.tether(&["exec", DEV_IP, "--", "led", "on"])),
        "led on\n"
    );
    let failed = ns.tether(&["exec", DEV_IP, "--", "no-such-command"]);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("no-such-command"));

    let file: Vec<u8> = (0..300_000u32).map(|i| (i * 31 + i / 977) as u8).collect();
    let local = dir.path().join("up.bin");
    std::fs::write(&local, &file).unwrap();
    ok(&ns.tether(&["put", DEV_IP, local.to_str().unwrap(), "up.bin"]));
    let back = dir.path().join("back.bin");
    ok(&ns.tether(&["get", DEV_IP, "up.bin", back.to_str().unwrap()]));
    assert!(
        std::fs::read(&back).unwrap() == file,
        "the file came back different"
    );
    assert!(ok(&ns.tether(&["ls", DEV_IP])).contains("up.bin"));
    let t = ok(&ns.tether(&["time", DEV_IP]));
    assert!(t.starts_with("20") && t.trim_end().ends_with('Z'), "{t}");
    assert_eq!(ok(&ns.tether(&["echo", DEV_IP, "tap"])), "TAP\n");

    drop(sim);
    drop(ns);
    // The capture holds the session: a pcap header and the frames.
    let cap = std::fs::read(&pcap).unwrap();
    assert_eq!(&cap[..4], &0xa1b2_c3d4u32.to_le_bytes(), "not a pcap file");
    assert!(cap.len() > 600_000, "capture of {} bytes", cap.len());
}
