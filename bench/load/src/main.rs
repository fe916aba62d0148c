//! `tether-bench-load`: the many-clients row of `make bench`.
//!
//! ```text
//! tether-bench-load idle  --addr A:P --server-pid PID [--connections 5000] [--concurrency 64]
//!                         [--waves 2] [--probes 20] [--key-file K] [--pause]
//! tether-bench-load mixed --addr A:P --dir DIR [--clients 200] [--seconds 30] [--size 65536]
//! ```
//!
//! `idle` opens N connections that complete the handshake (Hello/HelloAck,
//! and Auth/AuthOk with a key) and then say nothing, reads the server's
//! VmRSS/VmHWM before, with all open and after they close, for each wave,
//! and times new clients (connect + handshake + Ping/Pong) while they are
//! held. With `--pause` it prints `HELD <wave>` once a wave is open and
//! waits for a line on stdin (so the caller can time its own clients).
//!
//! `mixed` runs C clients, each on its own connection doing exec `true`,
//! put of a SIZE-byte file and get of it back (SHA-256 checked) until the
//! time is up; BUSY answers are retried after 20 ms and counted apart.
//!
//! Both print one line `RESULT {json}` at the end.

mod args;
mod idle;
mod mixed;
mod wire;

use std::time::Duration;

/// Median, 99th percentile and max of `v` (sorted in place), in the unit given.
pub fn percentiles(v: &mut [f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

/// Milliseconds of `d` as f64.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A JSON string literal.
pub fn jstr(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A JSON number (NaN as null).
pub fn jnum(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let mode = argv.next().unwrap_or_default();
    let a = match args::Args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tether-bench-load: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = match mode.as_str() {
        "idle" => rt.block_on(idle::run(&a)),
        "mixed" => rt.block_on(mixed::run(&a)),
        _ => Err("usage: tether-bench-load idle|mixed --addr HOST:PORT ...".into()),
    };
    match result {
        Ok(json) => println!("RESULT {json}"),
        Err(e) => {
            eprintln!("tether-bench-load: {e}");
            std::process::exit(1);
        }
    }
}
