//! Waves of idle, handshaken connections; the server's memory and a new
//! client's latency while they are held.

use std::io::BufRead as _;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::args::Args;
use crate::wire::{Conn, Refusal};
use crate::{jnum, jstr, ms, percentiles};

/// VmRSS and VmHWM of `pid` in KiB, and its open file descriptors.
fn rss(pid: u32) -> Result<(u64, u64, usize), String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("server pid {pid}: {e}"))?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    Ok((field("VmRSS:"), field("VmHWM:"), fds))
}

#[derive(Default)]
struct Opened {
    streams: Vec<TcpStream>,
    busy: usize,
    failed: usize,
    first_error: Option<String>,
}

/// Open `n` connections, at most `limit` handshakes in flight.
async fn open_wave(a: &Args, key: Option<[u8; 32]>) -> Opened {
    let mut o = Opened::default();
    let mut set = JoinSet::new();
    let mut started = 0;
    while started < a.connections || !set.is_empty() {
        while started < a.connections && set.len() < a.concurrency {
            let addr = a.addr;
            set.spawn(async move { Conn::open(addr, key).await.map(Conn::into_stream) });
            started += 1;
        }
        match set.join_next().await.expect("a task").expect("task ran") {
            Ok(s) => o.streams.push(s),
            Err(Refusal::Busy) => o.busy += 1,
            Err(Refusal::Other(e)) => {
                o.failed += 1;
                o.first_error.get_or_insert(e);
            }
        }
    }
    o
}

/// New clients, one after another: connect + handshake + Ping/Pong, in ms.
async fn probe(a: &Args, key: Option<[u8; 32]>) -> Result<Vec<f64>, String> {
    let mut v = Vec::new();
    for i in 0..a.probes {
        let t = Instant::now();
        let mut c = Conn::open(a.addr, key)
            .await
            .map_err(|e| format!("probe: {e:?}"))?;
        c.ping(i as u64)
            .await
            .map_err(|e| format!("probe ping: {e:?}"))?;
        v.push(ms(t.elapsed()));
        drop(c);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(v)
}

fn probe_json(v: &mut [f64]) -> String {
    let within = v.iter().filter(|&&x| x <= 10.0).count();
    let n = v.len();
    let (p50, p99, max) = percentiles(v);
    format!(
        "{{\"n\": {n}, \"within_10ms\": {within}, \"median_ms\": {}, \"p99_ms\": {}, \"max_ms\": {}}}",
        jnum(p50),
        jnum(p99),
        jnum(max)
    )
}

/// Wait for the caller's go-ahead (a line on stdin) after saying `HELD wave`.
fn pause(wave: usize) {
    println!("HELD {wave}");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

pub async fn run(a: &Args) -> Result<String, String> {
    let key = a.key()?.map(|k| k.0);
    let before = rss(a.server_pid)?;
    let mut unloaded = probe(a, key).await?;
    let mut waves = Vec::new();
    for wave in 1..=a.waves {
        let t = Instant::now();
        let o = open_wave(a, key).await;
        let open_s = t.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let held = rss(a.server_pid)?;
        let mut probes = probe(a, key).await?;
        if a.pause {
            pause(wave);
        }
        let open = o.streams.len();
        drop(o.streams);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = rss(a.server_pid)?;
        waves.push(format!(
            "{{\"wave\": {wave}, \"open\": {open}, \"busy\": {}, \"failed\": {}, \"first_error\": {}, \
             \"open_seconds\": {open_s:.3}, \"rss_held_kib\": {}, \"hwm_held_kib\": {}, \"fds_held\": {}, \
             \"rss_after_kib\": {}, \"hwm_after_kib\": {}, \"fds_after\": {}, \"probe\": {}}}",
            o.busy,
            o.failed,
            o.first_error.as_deref().map_or("null".into(), jstr),
            held.0,
            held.1,
            held.2,
            after.0,
            after.1,
            after.2,
            probe_json(&mut probes)
        ));
    }
    Ok(format!(
        "{{\"connections\": {}, \"keyed\": {}, \"rss_before_kib\": {}, \"hwm_before_kib\": {}, \
         \"fds_before\": {}, \"probe_unloaded\": {}, \"waves\": [{}]}}",
        a.connections,
        key.is_some(),
        before.0,
        before.1,
        before.2,
        probe_json(&mut unloaded),
        waves.join(", ")
    ))
}
