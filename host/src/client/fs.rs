//! `tether ls`, `stat` and `rm`.

use tether_proto::client::{Event, Request};
use tether_proto::message::EntryKind;
use tether_proto::Entry;

use super::remote::{closed, Nothing};
use super::Remote;
use crate::error::Error;

/// Run one request to its end, handing its entries to `each` (a Stat ends
/// with its entry).
async fn run(
    remote: &mut Remote,
    r: Request<'_>,
    mut each: impl FnMut(&Entry<'_>),
) -> Result<(), Error> {
    let ends_with_entry = matches!(r, Request::Stat { .. });
    let req = remote.request(r).await?;
    let host = remote.host.clone();
    let mut result = None;
    while result.is_none() {
        remote
            .step(&mut Nothing, &mut |ev, _| {
                match ev {
                    Event::Entry { req: r, entry } if r == req => {
                        each(&entry);
                        if ends_with_entry {
                            result = Some(Ok(()));
                        }
                    }
                    Event::Finished { req: r, .. } if r == req => result = Some(Ok(())),
                    Event::Failed {
                        req: r,
                        code,
                        message,
                        ..
                    } if r == req => {
                        result = Some(Err(Error::Remote {
                            code,
                            message: message.to_string(),
                        }))
                    }
                    Event::Closed(e) => result = Some(Err(closed(&host, e))),
                    _ => {}
                }
                Ok(())
            })
            .await?;
    }
    result.unwrap_or(Ok(()))
}

/// List a directory, calling `each` per entry (sorted by name).
pub async fn list(
    remote: &mut Remote,
    path: &str,
    each: impl FnMut(&Entry<'_>),
) -> Result<(), Error> {
    run(remote, Request::List { path }, each).await
}

/// Describe one path: calls `each` with its entry.
pub async fn stat(
    remote: &mut Remote,
    path: &str,
    each: impl FnMut(&Entry<'_>),
) -> Result<(), Error> {
    run(remote, Request::Stat { path }, each).await
}

/// Remove a file or an empty directory.
pub async fn remove(remote: &mut Remote, path: &str) -> Result<(), Error> {
    run(remote, Request::Remove { path }, |_| {}).await
}

/// One line for an entry named `name`: kind, size, modification time
/// (UTC), name.
pub fn format_entry(name: &str, e: &Entry<'_>) -> String {
    let kind = match e.kind {
        EntryKind::File => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Other => '?',
    };
    let when = chrono::DateTime::from_timestamp(e.modified as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into());
    let slash = if e.kind == EntryKind::Dir { "/" } else { "" };
    format!("{kind} {:>14} {when} {name}{slash}", e.size)
}
