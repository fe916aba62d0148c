//! The servers the catalogue runs against: `tether serve` ([`host`]), the
//! simulated device over the virtual wire ([`virt`]) and over a real TAP
//! in a network namespace ([`tap`]).

pub mod host;
pub mod tap;
pub mod virt;

use tether_proto::{Argv, Command, Exec, Message};

use crate::peer::Peer;

/// The key of keyed configurations.
pub const KEY: [u8; 32] = *b"tether conformance test key 0003";

/// What must hold on a simulated device after every case: no upload is
/// left claimed (a slot no connection will ever release), as its `mem`
/// command reports.
pub fn device_invariants(p: &mut Peer<'_>) -> Result<(), String> {
    let mut buf = vec![0u8; 8];
    let a = Argv::join(&["mem"], &mut buf).map_err(|e| format!("{e:?}"))?;
    let exec = Exec {
        command: Command::Argv(a),
        timeout_ms: None,
    };
    p.request(6, Message::Exec(exec), &[])?;
    let mut out = Vec::new();
    loop {
        let g = p.recv_checked()?;
        match g.message() {
            Message::Output { .. } => out.extend_from_slice(&g.body),
            Message::Exit { .. } => break,
            _ => return Err(format!("mem: {}", g.describe())),
        }
    }
    let out = String::from_utf8_lossy(&out);
    if !out.contains(" 0 upload(s) in progress") {
        return Err(format!("an upload was left claimed: {out}"));
    }
    Ok(())
}
