//! Busy servers and reruns. D2: `--retries` retries a BUSY reply (the
//! transfer limit, another upload to the same path, a backed-off peer)
//! until the server has room. D6: rerunning a put whose destination
//! already holds the same bytes succeeds and says so; different bytes are
//! still refused without `--force`.

use std::time::{Duration, Instant};

use super::{ok, s, Bg, Env, HostTarget, Outcome, Target};
use crate::{random_file, sha256sum, text, wait_until};

/// A slow put of 8 MiB at 4 MiB/s to `name` that holds a transfer slot;
/// returns once the server holds its partial.
fn slow_put<T: Target>(env: &Env<T>, local: &std::path::Path, name: &str) -> Result<Bg, String> {
    random_file(local, 8 << 20);
    let mut c = env.target.client();
    c.args([
        "put",
        &env.target.host(),
        s(local),
        name,
        "--limit-rate",
        "4M",
    ]);
    let child = Bg::spawn(c);
    if !wait_until(Duration::from_secs(30), || {
        env.target.remote_partial(name) > 0
    }) {
        return Err("the slow upload did not start".into());
    }
    Ok(child)
}

/// `--max-transfers 1`, one slow upload running: a get without retries
/// is refused as BUSY at once; with `--retries 6` it waits its turn.
pub fn transfer_limit<T: Target>(env: &mut Env<T>) -> Outcome {
    let small = env.dir.path().join("small.bin");
    random_file(&small, 64 << 10);
    env.target.seed("small.bin", &small)?;
    let holder = slow_put(env, &env.dir.path().join("hold.bin"), "hold.bin")?;
    let host = env.target.host();
    let back = env.dir.path().join("small.got");
    let o = env.target.run(&["get", &host, "small.bin", s(&back)]);
    if o.status.success() || !text(&o.stderr).contains("BUSY") {
        return Err(format!(
            "without retries a get while the limit is reached should be refused as BUSY: {}",
            text(&o.stderr).trim()
        ));
    }
    let t = Instant::now();
    let o = env.target.run(&[
        "get",
        &host,
        "small.bin",
        s(&back),
        "--retries",
        "6",
        "--retry-delay",
        "300ms",
    ]);
    let took = t.elapsed().as_secs_f64();
    ok("holder", &holder.finish(Duration::from_secs(60)))?;
    ok(
        &format!("get --retries 6 --retry-delay 300ms gave up after {took:.2} s"),
        &o,
    )?;
    if sha256sum(&back) != sha256sum(&small) {
        return Err("the retried get brought a different file".into());
    }
    Ok(format!(
        "BUSY announced without retries; with them the get waited {took:.1} s for the slot"
    ))
}

/// One slow upload to a path: a second upload to the same path with
/// `--retries` waits until the first is done, then replaces it (`--force`).
pub fn same_upload<T: Target>(env: &mut Env<T>) -> Outcome {
    let holder = slow_put(env, &env.dir.path().join("first.bin"), "same.bin")?;
    let second = env.dir.path().join("second.bin");
    random_file(&second, 64 << 10);
    let t = Instant::now();
    let o = env.target.run(&[
        "put",
        &env.target.host(),
        s(&second),
        "same.bin",
        "--force",
        "--retries",
        "6",
        "--retry-delay",
        "300ms",
    ]);
    let took = t.elapsed().as_secs_f64();
    ok("the first upload", &holder.finish(Duration::from_secs(60)))?;
    ok(
        &format!("put --retries 6 to a path being uploaded gave up after {took:.2} s"),
        &o,
    )?;
    match env.target.remote_sha("same.bin") {
        Some(h) if h == sha256sum(&second) => Ok(format!(
            "the second upload waited {took:.1} s, then replaced the first"
        )),
        _ => Err("the destination does not hold the second upload".into()),
    }
}

/// `--max-connections 1` held by an idle connection for a second: `ls`
/// with retries gets in once it closes.
pub fn connection_limit(env: &mut Env<HostTarget>) -> Outcome {
    let held = super::idle::IdleConns::open(env.target.server.port, 1)?;
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        drop(held);
    });
    let o = env.target.run(&[
        "ls",
        &env.target.host(),
        "--retries",
        "6",
        "--retry-delay",
        "300ms",
    ]);
    let _ = release.join();
    ok("ls --retries 6 at the connection limit", &o)
        .map(|_| "the client got in once the connection closed".into())
}

/// A device backs off an address after a wrong key (BUSY for a second):
/// the right key with `--retries` gets in once the back-off ends.
pub fn device_backoff(env: &mut Env<super::device::DeviceTarget>) -> Outcome {
    let dir = env.dir.path().to_path_buf();
    env.target.use_key(&dir)?;
    let wrong = dir.join("wrong.key");
    ok("keygen", &env.target.run(&["keygen", s(&wrong)]))?;
    let host = env.target.host();
    let o = env.target.run(&["ls", &host, "--key-file", s(&wrong)]);
    if o.status.success() {
        return Err("a wrong key was accepted".into());
    }
    let t = Instant::now();
    let o = env
        .target
        .run(&["ls", &host, "--retries", "6", "--retry-delay", "300ms"]);
    let took = t.elapsed().as_secs_f64();
    ok(
        &format!("ls --retries 6 with the right key during the back-off gave up after {took:.2} s"),
        &o,
    )
    .map(|_| format!("the right key got in after {took:.1} s of back-off"))
}

/// D6: a put whose destination already holds the same bytes, rerun after
/// the client died once everything was committed, and rerun again: each
/// succeeds and says the file is already there. Different bytes are
/// still refused (EXISTS) and left alone.
pub fn rerun_completed<T: Target>(env: &mut Env<T>) -> Outcome {
    let local = env.dir.path().join("done.bin");
    let size = env.target.capacity().map_or(4 << 20, |c| c / 4);
    random_file(&local, size);
    let want = sha256sum(&local);
    let host = env.target.host();
    let mut c = env.target.client();
    c.args(["put", &host, s(&local), "done.bin"]);
    let child = Bg::spawn(c);
    let committed = wait_until(Duration::from_secs(60), || {
        env.target.remote_sha("done.bin").as_deref() == Some(want.as_str())
    });
    drop(child); // SIGKILL, if it still runs
    if !committed {
        return Err("the first put never committed".into());
    }
    for round in ["after the killed put", "once more"] {
        let o = env.target.run(&["put", &host, s(&local), "done.bin"]);
        ok(&format!("rerun {round}, destination identical"), &o)?;
        let e = text(&o.stderr).to_lowercase();
        if !["already", "identical", "same", "up to date", "unchanged"]
            .iter()
            .any(|w| e.contains(w))
        {
            return Err(format!(
                "rerun {round} succeeded without saying the file was already there: {}",
                e.trim()
            ));
        }
    }
    refuse_different(env, &host)
}

fn refuse_different<T: Target>(env: &mut Env<T>, host: &str) -> Outcome {
    let other = env.dir.path().join("other.bin");
    random_file(&other, env.target.capacity().map_or(4 << 20, |c| c / 4));
    let before = env.target.remote_sha("done.bin");
    let o = env.target.run(&["put", host, s(&other), "done.bin"]);
    if o.status.code() != Some(1) || !text(&o.stderr).contains("EXISTS") {
        return Err(format!(
            "a put of different bytes without --force was not refused with EXISTS: {}",
            text(&o.stderr).trim()
        ));
    }
    if env.target.remote_sha("done.bin") != before {
        return Err("a refused put changed the destination".into());
    }
    Ok("reruns of a committed put succeed and say so; different bytes are refused (EXISTS)".into())
}
