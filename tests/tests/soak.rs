//! The soak suite: `make soak` runs the long form (`SOAK=long`, release
//! build); `cargo test -p tether-tests --test soak` the short one. It
//! drives only the real `tether` and `tether-sim` binaries, prints one
//! line per check and `N passed, M failed`, and exits non-zero on any
//! failure. `SOAK_SEED=N` repeats a run, `SOAK_ONLY=prefix,prefix` picks
//! checks. What each family checks: `tests/src/soak/`.

use tether_tests::soak::kill::Victim;
use tether_tests::soak::{change, kill, load, messages, names, retry, waves, Suite, Target};

fn main() {
    let mut suite = Suite::from_env();
    kills(&mut suite);
    changes(&mut suite);
    host_rest(&mut suite);
    host_load(&mut suite);
    device(&mut suite);
    std::process::exit(suite.finish());
}

/// kill -9 of either side during either transfer, on both targets.
fn kills(suite: &mut Suite) {
    let victims = [
        ("client-put", Victim::ClientPut),
        ("client-get", Victim::ClientGet),
        ("server-put", Victim::ServerPut),
        ("server-get", Victim::ServerGet),
    ];
    let n = suite.form.pick(3, 20);
    for (name, v) in victims {
        suite.host(&format!("kill-{name}"), &[], |env| kill::trials(env, v, n));
    }
    let n = suite.form.pick(2, 20);
    for (name, v) in victims {
        let name = name.replace("server", "device");
        suite.device(&format!("device-kill-{name}"), &[], |env| {
            kill::trials(env, v, n)
        });
    }
}

/// Files that change while they are sent (D3).
fn changes(suite: &mut Suite) {
    use change::Change::*;
    for c in [Overwrite, Grow, Shrink] {
        let name = format!("{c:?}").to_lowercase();
        suite.host(&format!("change-put-{name}"), &[], |env| {
            change::put(env, c, 4 << 20, 4 << 20)
        });
        suite.host(&format!("change-get-{name}"), &[], |env| {
            let remote = env.target.root().join("moving.bin");
            change::get(env, c, &remote, 32 << 20, 32 << 20)
        });
        suite.device(&format!("device-change-put-{name}"), &[], |env| {
            change::put(env, c, 512 << 10, 512 << 10)
        });
    }
    suite.device("device-change-get-replaced", &[], change::device_replaced);
}

/// Names, BUSY, reruns and messages on `tether serve`.
fn host_rest(suite: &mut Suite) {
    let form = suite.form;
    suite.host("names-lengths", &[], |env| {
        names::round_trips(env, &names::length_cases(form, env.target.max_name()))
    });
    suite.host("names-depth", &[], |env| {
        names::round_trips(env, &names::depth_cases(form))
    });
    suite.host(
        "busy-transfer-limit",
        &["--max-transfers", "1"],
        retry::transfer_limit,
    );
    suite.host("busy-same-upload", &[], retry::same_upload);
    suite.host(
        "busy-connection-limit",
        &["--max-connections", "1"],
        retry::connection_limit,
    );
    suite.host("rerun-completed-put", &[], retry::rerun_completed);
    suite.host(
        "messages-causes-once",
        &["--max-transfers", "1"],
        messages::causes_once,
    );
    suite.host("messages-missing-dir", &[], messages::missing_dir);
    suite.host("messages-rates", &[], messages::rates);
}

/// Many clients at once, and waves of idle ones, on `tether serve`.
fn host_load(suite: &mut Suite) {
    let form = suite.form;
    let many = load::Load {
        clients: 200,
        secs: form.pick(10, 60),
        size: 64 << 10,
        all_retry: false,
    };
    suite.host("many-clients", &["--allow-exec"], |env| {
        load::run(env, many)
    });
    let n = form.pick(1000, 5000);
    suite.host("idle-waves", &["--max-connections", "12000"], |env| {
        waves::waves(env, n)
    });
}

/// The rest against the simulated device.
fn device(suite: &mut Suite) {
    let form = suite.form;
    suite.device("device-names-lengths", &[], |env| {
        names::round_trips(env, &names::length_cases(form, env.target.max_name()))
    });
    suite.device("device-busy-backoff", &[], retry::device_backoff);
    suite.device("device-rerun-completed-put", &[], retry::rerun_completed);
    let many = load::Load {
        clients: 6,
        secs: form.pick(5, 30),
        size: 16 << 10,
        all_retry: true,
    };
    suite.device("device-many-clients", &[], |env| load::run(env, many));
}
