//! Paths: every way out of the served root, names the rules refuse, the
//! limits HelloAck announces, directories on servers with and without
//! `DIRS`, and symbolic links (PROTOCOL.md section 2.2, paths).

use tether_proto::message::EntryKind;
use tether_proto::{Caps, ErrorCode as C, Kind, Message};

use super::kit::{ask, must, one, put, round_trip};
use super::Then::Open as Stays;
use super::{case, err, Ack, Act, After, Case, Expect, Fx, Observed, Phrase, Stage::Open, BOTH};
use crate::peer::Peer;

fn get(path: &'static str) -> Message<'static> {
    Message::Get { path, offset: 0 }
}

fn stat(path: &'static str) -> Message<'static> {
    Message::Stat { path }
}

/// The limit a path refusal states: the path's own when it is over it
/// (checked first), else the name's.
fn limit_of(a: &Ack, path_len: usize) -> String {
    let n = if path_len > usize::from(a.max_path) {
        a.max_path
    } else {
        a.max_name
    };
    format!("limit of {n} bytes")
}

/// Every case of this family.
pub fn cases() -> Vec<Case> {
    let mut v = escapes();
    v.extend(names());
    v.extend(the_root_and_directories());
    v.extend(symlinks());
    v
}

fn escapes() -> Vec<Case> {
    let refused = |id, phrase| err(id, C::PATH_REFUSED, phrase, Stays);
    let c = |name, act, expect| case(name, BOTH, Open, act, expect);
    vec![
        c("path ..", one(5, stat("..")), refused(5, "..")),
        c("path a/../..", one(5, get("a/../..")), refused(5, "..")),
        c(
            "path a/../../etc/passwd",
            one(59, get("a/../../etc/passwd")),
            refused(59, ".."),
        ),
        c(
            "path ../outside/canary.txt",
            one(5, get("../outside/canary.txt")),
            refused(5, ".."),
        ),
        c(
            "path ./../x (Remove)",
            one(62, Message::Remove { path: "./../x" }),
            refused(62, ".."),
        ),
        c(
            "put to ../outside",
            Act::Script(|p, _| put(p, "../outside/new.txt", b"escape")),
            refused(40, ".."),
        ),
        c(
            "absolute path",
            one(5, get("/etc/passwd")),
            refused(5, "absolute"),
        ),
        c(
            "path //etc/passwd",
            one(5, get("//etc/passwd")),
            refused(5, "absolute"),
        ),
        c("a drive prefix", one(5, get("C:/x")), refused(5, "drive")),
        c(
            "backslash separators (Get)",
            one(5, get("..\\outside\\canary.txt")),
            refused(5, "backslash"),
        ),
        c(
            "backslash separators (Stat)",
            one(67, stat("..\\..\\x")),
            refused(67, "backslash"),
        ),
        c(
            "percent-encoded ../ is a literal name",
            one(5, get("%2e%2e%2foutside%2fcanary.txt")),
            err(5, C::NOT_FOUND, "", Stays),
        ),
        c(
            "percent-encoded separators are a literal name",
            one(66, get("..%2f..%2fetc%2fpasswd")),
            err(66, C::NOT_FOUND, "", Stays),
        ),
        c(
            "put to a percent-encoded name stays inside",
            Act::Script(|p, _| round_trip(p, "%2e%2e%2fescape.txt", b"stays inside")),
            Expect::Ok,
        )
        .after(After::Content(
            "%2e%2e%2fescape.txt",
            b"stays inside".to_vec(),
        )),
    ]
}

fn names() -> Vec<Case> {
    let refused = |id, phrase: Phrase| err(id, C::PATH_REFUSED, phrase, Stays);
    let c = |name, act, expect| case(name, BOTH, Open, act, expect);
    vec![
        c(
            "NUL in a path",
            one(5, stat("hello.txt\0../../x")),
            refused(5, "control".into()),
        ),
        c(
            "NUL in a Put's name",
            Act::Script(|p, _| put(p, "a\0b", b"x")),
            refused(40, "control".into()),
        ),
        c(
            "control characters in a path",
            one(5, stat("\x1b[2Jhello")),
            refused(5, "control".into()),
        ),
        c(
            "a newline in a name",
            one(65, stat("hello.txt\n")),
            refused(65, "control".into()),
        ),
        c(
            "a name one byte over max_name",
            Act::Script(|p, fx| put(p, &"n".repeat(usize::from(fx.ack.max_name) + 1), b"x")),
            refused(40, Phrase::Of(|a| limit_of(a, usize::from(a.max_name) + 1))),
        ),
        c(
            "a name at max_name",
            Act::Script(|p, fx| {
                let name = "m".repeat(usize::from(fx.ack.max_name.min(fx.ack.max_path)));
                ask(p, 5, Message::Stat { path: &name })
            }),
            err(5, C::NOT_FOUND, "", Stays),
        ),
        c(
            "a name of twice max_name (Stat)",
            Act::Script(|p, fx| {
                let name = "n".repeat(2 * usize::from(fx.ack.max_name) + 2);
                ask(p, 69, Message::Stat { path: &name })
            }),
            refused(
                69,
                Phrase::Of(|a| limit_of(a, 2 * usize::from(a.max_name) + 2)),
            ),
        ),
        c(
            "a path one byte over max_path",
            Act::Script(|p, fx| {
                let mut path = "d/".repeat(usize::from(fx.ack.max_path) / 2 + 1);
                path.truncate(usize::from(fx.ack.max_path) + 1);
                ask(p, 5, Message::Stat { path: &path })
            }),
            refused(5, Phrase::Of(|a| format!("limit of {} bytes", a.max_path))),
        ),
        c(
            "a name reserved for partial uploads",
            Act::Script(|p, _| put(p, ".x.tether-part", b"x")),
            refused(40, "reserved".into()),
        ),
        c(
            "get of a missing file",
            one(83, get("missing.txt")),
            err(83, C::NOT_FOUND, "", Stays),
        ),
    ]
}

fn s_stat_root(p: &mut Peer<'_>, _: &Fx<'_>) -> Result<Observed, String> {
    p.request(5, stat("."), &[])?;
    let g = must(p, 5, Kind::StatReply)?;
    match g.message() {
        Message::StatReply(e) if e.name == "." && e.kind == EntryKind::Dir => Ok(Observed::Done),
        m => Err(format!("the root is {m:?}")),
    }
}

fn s_list_root(p: &mut Peer<'_>, _: &Fx<'_>) -> Result<Observed, String> {
    // One entry per name, in byte order, counted by Done.
    p.request(5, Message::List { path: "" }, &[])?;
    let mut names = Vec::new();
    loop {
        let g = p.recv_checked()?;
        match g.message() {
            Message::ListEntry(e) if g.id == 5 => names.push(e.name.to_string()),
            Message::Done {
                bytes,
                sha256: None,
            } if g.id == 5 => {
                let mut sorted = names.clone();
                sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                let fixture = ["chunk.bin", "empty.bin", "hello.txt"];
                return if bytes != names.len() as u64 || sorted != names {
                    Err(format!("{bytes} counted, listed {names:?}"))
                } else if !fixture.iter().all(|f| names.iter().any(|n| n == f)) {
                    Err(format!("the fixture is not all listed: {names:?}"))
                } else {
                    Ok(Observed::Done)
                };
            }
            _ => return Ok(Observed::Frame(g)),
        }
    }
}

fn the_root_and_directories() -> Vec<Case> {
    let c = |name, act, expect| case(name, BOTH, Open, act, expect);
    let flat = |id| err(id, C::PATH_REFUSED, "flat", Stays);
    vec![
        c("Stat of the root", Act::Script(s_stat_root), Expect::Ok),
        c(
            "List of the root: sorted and counted",
            Act::Script(s_list_root),
            Expect::Ok,
        ),
        c(
            "Get of the root",
            one(80, get("")),
            err(80, C::IS_DIRECTORY, "root", Stays),
        ),
        c(
            "Put to the root",
            Act::Script(|p, _| put(p, ".", b"x")),
            err(40, C::IS_DIRECTORY, "root", Stays),
        ),
        c(
            "Remove of the root (\"\")",
            one(5, Message::Remove { path: "" }),
            err(5, C::PATH_REFUSED, "root", Stays),
        ),
        c(
            "Remove of the root (\".\")",
            one(82, Message::Remove { path: "." }),
            err(82, C::PATH_REFUSED, "root", Stays),
        ),
        c(
            "List of a file",
            one(81, Message::List { path: "hello.txt" }),
            err(81, C::NOT_DIRECTORY, "not a directory", Stays),
        ),
        c(
            "a directory in a path on a flat server (Remove)",
            one(
                63,
                Message::Remove {
                    path: "sub/hello.txt",
                },
            ),
            flat(63),
        )
        .unless(Caps::DIRS),
        c(
            "a directory in a path on a flat server (Put)",
            Act::Script(|p, _| put(p, "sub/new.txt", b"x")),
            flat(40),
        )
        .unless(Caps::DIRS)
        .after(After::Missing("sub")),
        c(
            "Put creates parents",
            Act::Script(|p, _| round_trip(p, "new/sub/made.txt", b"made")),
            Expect::Ok,
        )
        .needs(Caps::DIRS)
        .after(After::Content("new/sub/made.txt", b"made".to_vec())),
        c(
            "get of a directory",
            one(5, get("dir")),
            err(5, C::IS_DIRECTORY, "directory", Stays),
        )
        .needs(Caps::DIRS),
        c(
            "put onto a directory",
            Act::Script(|p, _| put(p, "dir", b"x")),
            err(40, C::IS_DIRECTORY, "directory", Stays),
        )
        .needs(Caps::DIRS),
        c(
            "a file used as a directory",
            Act::Script(|p, _| put(p, "hello.txt/x", b"x")),
            err(40, C::NOT_DIRECTORY, "", Stays),
        )
        .needs(Caps::DIRS),
        c(
            "Remove of a directory that is not empty",
            one(5, Message::Remove { path: "dir" }),
            err(5, C::NOT_EMPTY, "", Stays),
        )
        .needs(Caps::DIRS),
    ]
}

fn symlinks() -> Vec<Case> {
    let out = |id| err(id, C::PATH_REFUSED, "outside", Stays);
    let c = |name, act, expect| case(name, BOTH, Open, act, expect).needs(Caps::DIRS);
    vec![
        c(
            "symlink pointing out of the root",
            one(5, get("link_out/canary.txt")),
            out(5),
        ),
        c(
            "put through a symlink pointing out",
            Act::Script(|p, _| put(p, "link_out/evil.txt", b"evil")),
            out(40),
        ),
        c(
            "remove through a symlink pointing out",
            one(
                5,
                Message::Remove {
                    path: "link_out/canary.txt",
                },
            ),
            out(5),
        ),
        c(
            "list through a symlink pointing out",
            one(5, Message::List { path: "link_out" }),
            out(5),
        ),
        c(
            "file symlink pointing out",
            one(5, get("link_file_out")),
            out(5),
        ),
        c("absolute symlink", one(5, get("abs_link")), out(5)),
        c(
            "symlink loop",
            one(5, get("loop_a")),
            err(5, C::PATH_REFUSED, "symbolic links", Stays),
        ),
    ]
}
