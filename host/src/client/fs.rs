//! `tether ls`, `tether stat`, `tether rm`.

use tether_proto::message::EntryKind;
use tether_proto::Message;

use super::Session;
use crate::conn::{Msg, OwnedEntry};
use crate::error::Error;

/// List a directory; `each` is called per entry as it arrives. Returns the count.
pub async fn list(
    sess: &mut Session,
    path: &str,
    mut each: impl FnMut(&OwnedEntry),
) -> Result<u64, Error> {
    let id = sess.next_id();
    sess.send(id, Message::List { path }, &[]).await?;
    let mut n = 0;
    loop {
        match sess.recv(id).await?.msg {
            Msg::ListEntry(e) => {
                n += 1;
                each(&e);
            }
            Msg::Done { .. } => return Ok(n),
            other => return Err(sess.unexpected(other, "ListEntry or Done")),
        }
    }
}

/// Describe one path.
pub async fn stat(sess: &mut Session, path: &str) -> Result<OwnedEntry, Error> {
    let id = sess.next_id();
    sess.send(id, Message::Stat { path }, &[]).await?;
    match sess.recv(id).await?.msg {
        Msg::StatReply(e) => Ok(e),
        other => Err(sess.unexpected(other, "StatReply")),
    }
}

/// Remove a file or an empty directory.
pub async fn remove(sess: &mut Session, path: &str) -> Result<(), Error> {
    let id = sess.next_id();
    sess.send(id, Message::Remove { path }, &[]).await?;
    match sess.recv(id).await?.msg {
        Msg::Done { .. } => Ok(()),
        other => Err(sess.unexpected(other, "Done")),
    }
}

/// One line for an entry: kind, size, modification time (UTC), name.
pub fn format_entry(e: &OwnedEntry) -> String {
    let kind = match e.kind {
        EntryKind::File => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Other => '?',
    };
    let when = chrono::DateTime::from_timestamp(e.modified as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into());
    let name = if e.kind == EntryKind::Dir {
        format!("{}/", e.name)
    } else {
        e.name.clone()
    };
    format!("{kind} {:>14} {when} {name}", e.size)
}
