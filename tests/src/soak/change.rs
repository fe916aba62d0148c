//! Files that change while they are sent (D3): overwritten in place,
//! grown, shrunk, during a put (the client's file) and during a get (the
//! server's file). Expected: the transfer fails saying the file "changed
//! while being sent", the destination keeps its old content, and a rerun
//! sends the new version.

use std::path::Path;
use std::time::Duration;

use super::{ok, repeated_clause, s, Bg, Env, Outcome, Target};
use crate::{random_file, sha256sum, text};

/// What happens to the file while it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Its first and last eighths are overwritten in place.
    Overwrite,
    /// An eighth more is appended.
    Grow,
    /// It is cut to three quarters.
    Shrink,
}

impl Change {
    /// Apply it to the file at `p` of `size` bytes.
    fn apply(self, p: &Path, size: u64) {
        let eighth = size / 8;
        match self {
            Change::Overwrite => {
                overwrite(p, 0, eighth);
                overwrite(p, size - eighth, eighth);
            }
            Change::Grow => append(p, eighth),
            Change::Shrink => shrink(p, size * 3 / 4),
        }
    }
}

/// What a destination holds after the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    Nothing,
    Old,
    Changed,
    Original,
    Torn,
}

impl Holds {
    /// Classify digest `got` against the old destination, the file before
    /// the change and after it.
    fn of(got: Option<&str>, old: &str, orig: &str, new: &str) -> Holds {
        match got {
            None => Holds::Nothing,
            Some(h) if h == old => Holds::Old,
            Some(h) if h == new => Holds::Changed,
            Some(h) if h == orig => Holds::Original,
            Some(_) => Holds::Torn,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Holds::Nothing => "nothing",
            Holds::Old => "its old content",
            Holds::Changed => "the changed file",
            Holds::Original => "the file as it was before the change",
            Holds::Torn => "a torn copy (neither the file before nor after the change)",
        }
    }
}

/// The verdict on a transfer during which the file changed.
fn judge(o: &std::process::Output, change: Change, holds: Holds) -> Result<(), String> {
    let e = text(&o.stderr);
    if o.status.success() {
        return Err(format!(
            "exit 0, and the destination holds {}",
            holds.text()
        ));
    }
    let said = e.contains("changed while being sent")
        || (change == Change::Shrink && e.contains("shrank"));
    if !said {
        return Err(format!(
            "failed without saying the file changed while being sent: {}",
            e.trim()
        ));
    }
    if holds != Holds::Old {
        return Err(format!(
            "failed as it should, but the destination holds {}",
            holds.text()
        ));
    }
    match repeated_clause(&e) {
        Some(c) => Err(format!(
            "the message states its cause twice ({c:?}): {}",
            e.trim()
        )),
        None => Ok(()),
    }
}

/// Put a file that changes part-way (`size` bytes at `rate` B/s, the
/// change at 30% of the expected time: its first eighth is sent, its last
/// not yet read); the destination exists beforehand, so `--force` is given.
pub fn put<T: Target>(env: &mut Env<T>, change: Change, size: u64, rate: u64) -> Outcome {
    let local = env.dir.path().join("moving.bin");
    let old = env.dir.path().join("old.bin");
    random_file(&local, size);
    random_file(&old, 4096);
    let (orig, old_sha) = (sha256sum(&local), sha256sum(&old));
    env.target.seed("moving.bin", &old)?;
    let host = env.target.host();
    let mut c = env.target.client();
    c.args([
        "put",
        &host,
        s(&local),
        "moving.bin",
        "--force",
        "--limit-rate",
        &rate.to_string(),
    ]);
    let child = Bg::spawn(c);
    // The change must come after the client opened the file (it judges
    // "unchanged" against the file as opened): a client slow to start
    // would otherwise send the changed file whole, rightly.
    let opened = std::time::Instant::now();
    while !child.has_open(&local) && opened.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_secs_f64(0.3 * size as f64 / rate as f64));
    change.apply(&local, size);
    let o = child.finish(Duration::from_secs(60));
    let new = sha256sum(&local);
    let got = env.target.remote_sha("moving.bin");
    judge(&o, change, Holds::of(got.as_deref(), &old_sha, &orig, &new))?;
    let o = env
        .target
        .run(&["put", &host, s(&local), "moving.bin", "--force"]);
    ok("the rerun failed", &o)?;
    match env.target.remote_sha("moving.bin") {
        Some(h) if h == new => Ok(format!(
            "{change:?} during a put: refused, old destination kept, the rerun sent the new file"
        )),
        h => Err(format!(
            "after the rerun the destination holds {}",
            Holds::of(h.as_deref(), &old_sha, &orig, &new).text()
        )),
    }
}

/// Get a file that changes on the server part-way (`size` bytes at
/// `rate` B/s); the local destination exists, so `--force` is given. The
/// change comes at 30% of the expected time; a server reads at most about
/// 10 MiB (loopback socket buffers) ahead of the client, so with 32 MiB
/// its first eighth has been sent and its last quarter not yet read.
pub fn get<T: Target>(
    env: &mut Env<T>,
    change: Change,
    remote: &Path,
    size: u64,
    rate: u64,
) -> Outcome {
    let dest = env.dir.path().join("moving.got");
    random_file(remote, size);
    random_file(&dest, 4096);
    let (orig, old_sha) = (sha256sum(remote), sha256sum(&dest));
    let host = env.target.host();
    let mut c = env.target.client();
    c.args([
        "get",
        &host,
        "moving.bin",
        s(&dest),
        "--force",
        "--limit-rate",
        &rate.to_string(),
    ]);
    let child = Bg::spawn(c);
    std::thread::sleep(Duration::from_secs_f64(0.3 * size as f64 / rate as f64));
    change.apply(remote, size);
    let o = child.finish(Duration::from_secs(60));
    let new = sha256sum(remote);
    let got = sha256sum(&dest);
    judge(&o, change, Holds::of(Some(&got), &old_sha, &orig, &new))?;
    let o = env
        .target
        .run(&["get", &host, "moving.bin", s(&dest), "--force"]);
    ok("the rerun failed", &o)?;
    match sha256sum(&dest) {
        h if h == new => Ok(format!("{change:?} during a get: refused, old destination kept, the rerun fetched the new file")),
        h => Err(format!("after the rerun the destination holds {}", Holds::of(Some(&h), &old_sha, &orig, &new).text())),
    }
}

/// On the device, a file replaced (through its second connection) while a
/// get reads it: the get fails saying so, or delivers exactly the old
/// file; never a mix.
pub fn device_replaced<T: Target>(env: &mut Env<T>) -> Outcome {
    let (first, second) = (
        env.dir.path().join("first.bin"),
        env.dir.path().join("second.bin"),
    );
    random_file(&first, 512 << 10);
    random_file(&second, 64 << 10);
    env.target.seed("moving.bin", &first)?;
    let dest = env.dir.path().join("moving.got");
    let host = env.target.host();
    let mut c = env.target.client();
    c.args(["get", &host, "moving.bin", s(&dest), "--limit-rate", "256K"]);
    let child = Bg::spawn(c);
    std::thread::sleep(Duration::from_millis(600));
    ok(
        "the replacing put",
        &env.target
            .run(&["put", &host, s(&second), "moving.bin", "--force"]),
    )?;
    let o = child.finish(Duration::from_secs(60));
    let (a, b) = (sha256sum(&first), sha256sum(&second));
    let got = dest.exists().then(|| sha256sum(&dest));
    match (o.status.success(), got) {
        (true, Some(h)) if h == a => {
            Ok("the get delivered the file as it was when it started".into())
        }
        (true, Some(h)) if h == b => {
            Err("exit 0 with the replacement, which was not what the get started on".into())
        }
        (true, _) => Err("exit 0 with a torn copy".into()),
        (false, None) if text(&o.stderr).contains("changed while being sent") => {
            Ok("the get failed: changed while being sent".into())
        }
        (false, None) => Err(format!(
            "nothing torn was kept, but the message does not say the file changed while being sent: {}",
            text(&o.stderr).trim()
        )),
        (false, Some(_)) => Err("failed, yet the final name exists".into()),
    }
}

/// Overwrite `len` bytes of `path` at `at` in place with fresh random bytes.
pub fn overwrite(path: &Path, at: u64, len: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut data = vec![0u8; len as usize];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut r| r.read_exact(&mut data))
        .expect("random bytes");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for overwrite");
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&data).expect("overwrite");
}

/// Append `len` random bytes to `path`.
pub fn append(path: &Path, len: u64) {
    let size = crate::file_len(path);
    overwrite(path, size, len);
}

/// Cut `path` to `len` bytes.
pub fn shrink(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .expect("truncate");
}
