//! Requests that run something on the server: Exec (PROTOCOL.md section
//! 2.2, Exec) and Time (section 2.2, Time).

use tether_proto::{Argv, Caps, Command, ErrorCode as C, Exec, ExitStatus, Kind, Message};

use super::kit::{ask, exec_msg, frames, must, one};
use super::Then::Open as Stays;
use super::{case, err, Act, After, Case, Expect, Fx, Observed, Stage::Open, BOTH};
use crate::peer::Peer;

fn run(p: &mut Peer<'_>, argv: &[&str]) -> Result<Observed, String> {
    let mut b = Vec::new();
    ask(p, 5, exec_msg(argv, &mut b))
}

fn s_touch(p: &mut Peer<'_>, _: &Fx<'_>) -> Result<Observed, String> {
    // The command the other cases rely on runs, and exits 0.
    let mut b = Vec::new();
    p.request(5, exec_msg(&["touch", "touched.txt"], &mut b), &[])?;
    exited_0(p)
}

fn s_touch_shell(p: &mut Peer<'_>, _: &Fx<'_>) -> Result<Observed, String> {
    let line = Command::Shell("touch shell-touched.txt");
    let exec = Exec {
        command: line,
        timeout_ms: Some(60_000),
    };
    p.request(5, Message::Exec(exec), &[])?;
    exited_0(p)
}

/// Output of request 5, if any, then `Exit{Code(0)}`.
fn exited_0(p: &mut Peer<'_>) -> Result<Observed, String> {
    loop {
        let g = p.recv_checked()?;
        match g.message() {
            Message::Output { .. } if g.id == 5 => {}
            Message::Exit {
                status: ExitStatus::Code(0),
            } if g.id == 5 => return Ok(Observed::Done),
            _ => return Ok(Observed::Frame(g)),
        }
    }
}

/// Every case of this family.
pub fn cases() -> Vec<Case> {
    let failed = |phrase| err(5, C::EXEC_FAILED, phrase, Stays);
    let c = |name, act, expect| case(name, BOTH, Open, act, expect).needs(Caps::EXEC);
    vec![
        c("exec of touch", Act::Script(s_touch), Expect::Ok)
            .after(After::Content("touched.txt", Vec::new())),
        c("a shell line", Act::Script(s_touch_shell), Expect::Ok)
            .needs(Caps::SHELL)
            .after(After::Content("shell-touched.txt", Vec::new())),
        c(
            "exec of an empty argv",
            frames(vec![(
                5,
                Message::Exec(Exec {
                    command: Command::Argv(Argv("")),
                    timeout_ms: None,
                }),
                vec![],
            )]),
            failed("empty"),
        ),
        c(
            "exec of an empty program name",
            Act::Script(|p, _| run(p, &["", "x"])),
            failed("empty"),
        ),
        c(
            "exec of a program that does not exist",
            Act::Script(|p, _| run(p, &["no-such-program-xyz"])),
            failed("no-such-program-xyz"),
        ),
        c(
            "exec of a program that does not exist, with arguments",
            Act::Script(|p, _| run(p, &["no-such-program-xyz", "-rf", "/"])),
            failed("no-such-program-xyz"),
        ),
        case(
            "Echo upper-cases ASCII letters only",
            BOTH,
            Open,
            Act::Script(|p, _| {
                p.request(
                    6,
                    Message::Echo {
                        text: "héllo, wörld 42",
                    },
                    &[],
                )?;
                match must(p, 6, Kind::EchoReply)?.message() {
                    Message::EchoReply {
                        text: "HéLLO, WöRLD 42",
                    } => Ok(Observed::Done),
                    m => Err(format!("{m:?}")),
                }
            }),
            Expect::Ok,
        ),
        case(
            "an invalid time format",
            BOTH,
            Open,
            one(5, Message::Time { format: "%Q" }),
            err(5, C::INVALID_HEADER, "time format", Stays),
        ),
        case(
            "a time text too long",
            BOTH,
            Open,
            Act::Script(|p, _| {
                let f = "%Y".repeat(100);
                ask(p, 84, Message::Time { format: &f })
            }),
            err(84, C::TOO_LARGE, "", Stays),
        ),
        case(
            "a time in the empty format",
            BOTH,
            Open,
            Act::Script(|p, _| {
                p.request(6, Message::Time { format: "" }, &[])?;
                let g = must(p, 6, Kind::TimeReply)?;
                match g.message() {
                    Message::TimeReply { text, .. } if text.len() == 20 && text.ends_with('Z') => {
                        Ok(Observed::Done)
                    }
                    m => Err(format!("not %Y-%m-%dT%H:%M:%SZ: {m:?}")),
                }
            }),
            Expect::Ok,
        ),
    ]
}
