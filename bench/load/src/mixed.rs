//! C clients at once, each on its own connection: exec `true`, put a small
//! file, get it back (SHA-256 checked), over and over for a fixed time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tether_host::addr::HostSpec;
use tether_host::client::{self, exec, transfer, ConnectOpts, Session};
use tether_host::conn::OwnedCommand;
use tether_host::Error;
use tether_proto::{ErrorCode, ExitStatus};

use crate::args::Args;
use crate::{jnum, jstr, ms, percentiles};

/// What one client did.
#[derive(Default)]
struct Tally {
    /// Latencies in ms of completed exec, put, get.
    lat: [Vec<f64>; 3],
    busy: u64,
    errors: u64,
    reconnects: u64,
    first_error: Option<String>,
}

fn is_busy(e: &Error) -> bool {
    matches!(e, Error::Remote { code, .. } | Error::Rejected { code, .. } if *code == ErrorCode::BUSY)
}

enum Step {
    Done,
    Busy,
    Fail(String),
}

async fn step(sess: &mut Session, op: usize, local: &Path, back: &Path, remote: &str) -> Step {
    let force = transfer::TransferOpts {
        force: true,
        ..Default::default()
    };
    let r = match op {
        0 => match exec::exec(sess, &OwnedCommand::Argv(vec!["true".into()]), None).await {
            Ok(ExitStatus::Code(0)) => Ok(()),
            Ok(other) => return Step::Fail(format!("exec true ended {other:?}")),
            Err(e) => Err(e),
        },
        1 => transfer::put(sess, local, remote, &force).await.map(drop),
        _ => match transfer::get(sess, remote, back, &force).await {
            Ok(_) if std::fs::read(back).ok() != std::fs::read(local).ok() => {
                return Step::Fail("the file that came back differs".into())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        },
    };
    match r {
        Ok(()) => Step::Done,
        Err(e) if is_busy(&e) => Step::Busy,
        Err(e) => Step::Fail(e.to_string()),
    }
}

async fn client(i: usize, a: &Args, deadline: Instant) -> Tally {
    let mut t = Tally::default();
    let host = HostSpec {
        host: a.addr.ip().to_string(),
        port: a.addr.port(),
    };
    let opts = ConnectOpts {
        retries: 10,
        retry_delay: Duration::from_millis(20),
        ..Default::default()
    };
    let local = a.dir.join(format!("c{i}.bin"));
    let back: PathBuf = a.dir.join(format!("c{i}.back"));
    let remote = format!("c{i}.bin");
    let mut sess: Option<Session> = None;
    let mut op = 1; // put first, so that get has something to fetch
    while Instant::now() < deadline {
        let s = match &mut sess {
            Some(s) => s,
            None => match client::connect(&host, &opts).await {
                Ok(s) => sess.insert(s),
                Err(e) => {
                    t.errors += 1;
                    t.first_error.get_or_insert(e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let start = Instant::now();
        match step(s, op, &local, &back, &remote).await {
            Step::Done => {
                t.lat[op].push(ms(start.elapsed()));
                op = (op + 1) % 3;
            }
            Step::Busy => {
                t.busy += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Step::Fail(e) => {
                t.errors += 1;
                t.reconnects += 1;
                t.first_error.get_or_insert(e);
                sess = None;
            }
        }
    }
    t
}

pub async fn run(a: &Args) -> Result<String, String> {
    std::fs::create_dir_all(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
    for i in 0..a.clients {
        let data: Vec<u8> = (0..a.size).map(|j| (j * 7 + i * 13) as u8).collect();
        std::fs::write(a.dir.join(format!("c{i}.bin")), data).map_err(|e| e.to_string())?;
    }
    let a = std::sync::Arc::new(a.clone());
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.seconds);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..a.clients {
        let a = a.clone();
        set.spawn(async move { client(i, &a, deadline).await });
    }
    let mut all = Tally::default();
    while let Some(t) = set.join_next().await {
        let t = t.map_err(|e| e.to_string())?;
        for k in 0..3 {
            all.lat[k].extend_from_slice(&t.lat[k]);
        }
        all.busy += t.busy;
        all.errors += t.errors;
        all.reconnects += t.reconnects;
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let ops: usize = all.lat.iter().map(Vec::len).sum();
    let mut per_op = Vec::new();
    for (k, name) in ["exec", "put", "get"].iter().enumerate() {
        let n = all.lat[k].len();
        let (p50, p99, max) = percentiles(&mut all.lat[k]);
        per_op.push(format!(
            "\"{name}\": {{\"n\": {n}, \"median_ms\": {}, \"p99_ms\": {}, \"max_ms\": {}}}",
            jnum(p50),
            jnum(p99),
            jnum(max)
        ));
    }
    Ok(format!(
        "{{\"clients\": {}, \"seconds\": {secs:.3}, \"size\": {}, \"ops\": {ops}, \"ops_per_s\": {}, \
         \"busy\": {}, \"errors\": {}, \"reconnects\": {}, \"first_error\": {}, {}}}",
        a.clients,
        a.size,
        jnum(ops as f64 / secs),
        all.busy,
        all.errors,
        all.reconnects,
        all.first_error.as_deref().map_or("null".into(), jstr),
        per_op.join(", ")
    ))
}
