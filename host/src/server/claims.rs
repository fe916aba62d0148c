//! Destinations being uploaded to. A destination has at most one upload
//! request at a time (another is refused BUSY). When that request ends,
//! its writer may still be writing the last bytes and keeping the partial;
//! the next upload to the destination waits for it before it looks at the
//! partial, so a resume right after a cancel finds every byte.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tether_proto::ErrorCode;

use super::files::Fail;

/// The registry (one per server).
#[derive(Debug, Default)]
pub struct Claims {
    map: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    /// An upload request holds it.
    active: bool,
    /// The last writer to work on it.
    writer: Arc<Finished>,
}

/// Set when a writer is done with its destination.
#[derive(Debug, Default)]
pub struct Finished {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Finished {
    fn finish(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Wait (blocking) until finished, at most `max`.
    fn wait(&self, max: Duration) {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.cv.wait_timeout_while(done, max, |d| !*d);
    }
}

impl Claims {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claim `path` for an upload request, or BUSY while another holds it.
    /// The request keeps the [`Held`]; its writer takes the [`Writing`].
    pub fn claim(self: &Arc<Self>, path: &str) -> Result<(Held, Writing), Fail> {
        let mut map = self.lock();
        let prev = match map.get(path) {
            Some(e) if e.active => {
                return Err(Fail::new(
                    ErrorCode::BUSY,
                    format!("another upload to '{path}' is in progress; try again later"),
                ))
            }
            Some(e) => Some(e.writer.clone()),
            None => None,
        };
        let mine = Arc::new(Finished::default());
        map.insert(
            path.to_string(),
            Entry {
                active: true,
                writer: mine.clone(),
            },
        );
        let held = Held {
            claims: self.clone(),
            path: path.to_string(),
            writer: mine.clone(),
        };
        let writing = Writing {
            claims: self.clone(),
            path: path.to_string(),
            prev,
            mine,
        };
        Ok((held, writing))
    }

    /// Destinations claimed now (by a request or a finishing writer).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Forget `path`'s entry if `writer`'s and no request holds it.
    fn release(&self, path: &str, writer: &Arc<Finished>, request_ended: bool) {
        let mut map = self.lock();
        let Some(e) = map.get_mut(path) else {
            return;
        };
        if !Arc::ptr_eq(&e.writer, writer) {
            return;
        }
        if request_ended {
            e.active = false;
        }
        if !e.active && *writer.done.lock().unwrap_or_else(|e| e.into_inner()) {
            map.remove(path);
        }
    }
}

/// The upload request's hold on its destination (dropped when it ends).
#[derive(Debug)]
pub struct Held {
    claims: Arc<Claims>,
    path: String,
    writer: Arc<Finished>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.claims.release(&self.path, &self.writer, true);
    }
}

/// The writer's hold on its destination (dropped when it is done).
#[derive(Debug)]
pub struct Writing {
    claims: Arc<Claims>,
    path: String,
    prev: Option<Arc<Finished>>,
    mine: Arc<Finished>,
}

impl Writing {
    /// Wait (blocking) for the writer of the upload before this one, if it
    /// is still finishing (at most `max`).
    pub fn wait_for_previous(&self, max: Duration) {
        if let Some(p) = &self.prev {
            p.wait(max);
        }
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        self.mine.finish();
        self.claims.release(&self.path, &self.mine, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_at_a_time_and_the_next_writer_waits_for_the_last() {
        let claims = Arc::new(Claims::default());
        let (held, writing) = claims.claim("a").unwrap();
        assert_eq!(claims.claim("a").unwrap_err().code, ErrorCode::BUSY);
        assert!(claims.claim("b").is_ok());
        // The request ends; its writer is still busy.
        drop(held);
        let (held2, writing2) = claims.claim("a").unwrap();
        let waiter = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            writing2.wait_for_previous(Duration::from_secs(10));
            (t.elapsed(), writing2)
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(writing);
        let (waited, writing2) = waiter.join().unwrap();
        assert!(waited >= Duration::from_millis(90), "{waited:?}");
        drop(held2);
        drop(writing2);
        assert_eq!(claims.len(), 0);
    }
}
