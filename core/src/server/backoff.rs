//! Back-off after failed authentication, per peer, in a fixed table shared
//! by every connection of a server.
//!
//! A peer whose Auth proofs fail [`BackoffPolicy::threshold`] times, each
//! within [`BackoffPolicy::window_ms`] of the one before (or of the end of
//! the refusal the one before started), is refused (Error
//! `BUSY` at accept, then close) for [`BackoffPolicy::base_ms`], doubling
//! with every further failure up to [`BackoffPolicy::max_ms`]. A successful
//! authentication forgets the peer. The table holds `N` peers: a new one
//! takes a free or expired entry, else the entry whose refusal ends first,
//! so its memory is bounded whatever the number of addresses an attacker
//! has (the back-off slows guessing down; the 256-bit key is what makes it
//! hopeless).

use core::fmt;

/// Who is connecting: an IP address (IPv4 as an IPv4-mapped IPv6 address,
/// see [`Peer::ipv4`]) or, on links without addresses (a serial line),
/// [`Peer::UNKNOWN`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Peer(pub [u8; 16]);

impl Peer {
    /// A peer with no address: all such peers share one back-off entry.
    pub const UNKNOWN: Peer = Peer([0; 16]);

    /// An IPv4 peer (stored as `::ffff:a.b.c.d`).
    pub const fn ipv4(a: [u8; 4]) -> Peer {
        Peer([
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
        ])
    }

    /// An IPv6 peer.
    pub const fn ipv6(a: [u8; 16]) -> Peer {
        Peer(a)
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.0;
        if *self == Peer::UNKNOWN {
            write!(f, "unknown peer")
        } else if a[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
            write!(f, "{}.{}.{}.{}", a[12], a[13], a[14], a[15])
        } else {
            for (i, pair) in a.chunks(2).enumerate() {
                let sep = if i == 0 { "" } else { ":" };
                write!(f, "{sep}{:x}", u16::from_be_bytes([pair[0], pair[1]]))?;
            }
            Ok(())
        }
    }
}

/// How hard the table brakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Failures (each within `window_ms` of the previous) before a peer is refused.
    pub threshold: u32,
    /// Failures further apart than this start counting again.
    pub window_ms: u64,
    /// The first refusal period; it doubles with every further failure.
    pub base_ms: u64,
    /// The longest refusal period.
    pub max_ms: u64,
}

impl BackoffPolicy {
    /// A device: refused from the first failure, 1 s doubling up to 60 s.
    pub const DEVICE: BackoffPolicy = BackoffPolicy {
        threshold: 1,
        window_ms: 60_000,
        base_ms: 1_000,
        max_ms: 60_000,
    };
    /// A host: refused from the third failure within a minute of each
    /// other, 10 s doubling up to 15 minutes.
    pub const HOST: BackoffPolicy = BackoffPolicy {
        threshold: 3,
        window_ms: 60_000,
        base_ms: 10_000,
        max_ms: 15 * 60_000,
    };
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    peer: Peer,
    /// Consecutive failures; 0 means the entry is free.
    fails: u32,
    /// The last failure (monotonic ms).
    last_ms: u64,
    /// Refused until then (monotonic ms; 0: not refused).
    until_ms: u64,
}

const FREE: Entry = Entry {
    peer: Peer::UNKNOWN,
    fails: 0,
    last_ms: 0,
    until_ms: 0,
};

/// The back-off table of `N` peers (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Backoff<const N: usize> {
    policy: BackoffPolicy,
    entries: [Entry; N],
}

impl<const N: usize> Backoff<N> {
    /// An empty table.
    pub const fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            policy,
            entries: [FREE; N],
        }
    }

    /// The policy.
    pub fn policy(&self) -> BackoffPolicy {
        self.policy
    }

    /// Whether an entry's failures no longer count: the window runs from
    /// the last failure or, after a refusal, from its end (a guesser who
    /// waits out each refusal keeps climbing toward `max_ms`).
    fn expired(&self, e: &Entry, now_ms: u64) -> bool {
        let since = e.last_ms.max(e.until_ms);
        e.fails == 0
            || (now_ms.saturating_sub(since) > self.policy.window_ms && e.until_ms <= now_ms)
    }

    fn find(&self, peer: Peer) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.fails > 0 && e.peer == peer)
    }

    /// How many more milliseconds `peer` is refused (`None`: not refused).
    pub fn check(&self, peer: Peer, now_ms: u64) -> Option<u64> {
        let e = &self.entries[self.find(peer)?];
        (e.until_ms > now_ms).then(|| e.until_ms - now_ms)
    }

    /// `peer` failed to authenticate at `now_ms`; returns the refusal
    /// period this starts, if any.
    pub fn record_failure(&mut self, peer: Peer, now_ms: u64) -> Option<u64> {
        let i = match self.find(peer) {
            Some(i) => i,
            None => {
                let i = self.victim(now_ms)?;
                self.entries[i] = Entry { peer, ..FREE };
                i
            }
        };
        let policy = self.policy;
        if self.expired(&self.entries[i], now_ms) {
            self.entries[i] = Entry { peer, ..FREE };
        }
        let e = &mut self.entries[i];
        e.fails = e.fails.saturating_add(1);
        e.last_ms = now_ms;
        if e.fails < policy.threshold {
            return None;
        }
        let doublings = (e.fails - policy.threshold).min(16);
        let period = policy
            .base_ms
            .saturating_mul(1 << doublings)
            .min(policy.max_ms);
        e.until_ms = now_ms.saturating_add(period);
        Some(period)
    }

    /// A free or expired entry, else the one whose refusal ends first.
    fn victim(&self, now_ms: u64) -> Option<usize> {
        self.entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| (!self.expired(e, now_ms), e.until_ms, e.last_ms))
            .map(|(i, _)| i)
    }

    /// `peer` authenticated: forget its failures.
    pub fn record_success(&mut self, peer: Peer) {
        if let Some(i) = self.find(peer) {
            self.entries[i] = FREE;
        }
    }

    /// Forget everything (a device's reboot).
    pub fn clear(&mut self) {
        self.entries = [FREE; N];
    }

    /// Peers remembered (with at least one failure).
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.fails > 0).count()
    }

    /// Whether no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_device_doubles_caps_and_forgets_on_success() {
        let mut b = Backoff::<4>::new(BackoffPolicy::DEVICE);
        let p = Peer::ipv4([10, 0, 0, 1]);
        assert_eq!(b.check(p, 0), None);
        assert_eq!(b.record_failure(p, 0), Some(1_000));
        assert_eq!(b.check(p, 0), Some(1_000));
        assert_eq!(b.check(p, 999), Some(1));
        assert_eq!(b.check(p, 1_000), None);
        assert_eq!(b.record_failure(p, 1_000), Some(2_000));
        assert_eq!(b.record_failure(p, 3_000), Some(4_000));
        for _ in 0..20 {
            b.record_failure(p, 10_000);
        }
        assert_eq!(b.check(p, 10_000), Some(60_000));
        assert_eq!(b.check(Peer::ipv4([10, 0, 0, 2]), 10_000), None);
        b.record_success(p);
        assert_eq!(b.check(p, 10_000), None);
        assert_eq!(
            b.record_failure(p, 10_000),
            Some(1_000),
            "counting starts over"
        );
    }

    #[test]
    fn a_host_refuses_from_the_third_failure_in_a_window() {
        let mut b = Backoff::<16>::new(BackoffPolicy::HOST);
        let p = Peer::ipv4([192, 0, 2, 1]);
        assert_eq!(b.record_failure(p, 0), None);
        assert_eq!(b.record_failure(p, 1_000), None);
        assert_eq!(b.check(p, 1_000), None);
        assert_eq!(b.record_failure(p, 2_000), Some(10_000));
        assert_eq!(b.record_failure(p, 2_000), Some(20_000));
        assert_eq!(b.check(p, 2_000), Some(20_000));
        let q = Peer::ipv4([192, 0, 2, 2]);
        let mut t = 0;
        for _ in 0..10 {
            t += 61_000;
            assert_eq!(
                b.record_failure(q, t),
                None,
                "failures far apart never add up"
            );
        }
    }

    #[test]
    fn a_guesser_who_waits_out_each_refusal_still_reaches_the_max() {
        let mut b = Backoff::<4>::new(BackoffPolicy::HOST);
        let p = Peer::ipv4([192, 0, 2, 7]);
        let mut t = 0;
        let mut period = None;
        for _ in 0..10 {
            // One try as soon as the last refusal ends.
            t += period.unwrap_or(1_000);
            assert_eq!(b.check(p, t), None);
            period = b.record_failure(p, t).or(period);
        }
        assert_eq!(period, Some(BackoffPolicy::HOST.max_ms));
        // A peer quiet for a window after its refusal ended starts over.
        t += BackoffPolicy::HOST.max_ms + BackoffPolicy::HOST.window_ms + 1;
        assert_eq!(b.record_failure(p, t), None);
    }

    #[test]
    fn a_full_table_evicts_the_entry_that_ends_first() {
        let mut b = Backoff::<4>::new(BackoffPolicy::DEVICE);
        let peer = |i: u8| Peer::ipv4([10, 0, 0, i]);
        for i in 0..4u8 {
            b.record_failure(peer(i), u64::from(i) * 100);
        }
        b.record_failure(peer(9), 1_000);
        assert_eq!(b.check(peer(0), 500), None);
        for i in 1..4u8 {
            assert!(b.check(peer(i), 500).is_some(), "peer {i}");
        }
        assert_eq!(b.check(peer(9), 1_000), Some(1_000));
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn peers_print_as_addresses() {
        extern crate std;
        use std::format;
        assert_eq!(
            format!("{}", Peer::ipv4([192, 168, 69, 100])),
            "192.168.69.100"
        );
        assert_eq!(format!("{:?}", Peer::UNKNOWN), "unknown peer");
        let mut v6 = [0u8; 16];
        v6[0] = 0xfe;
        v6[1] = 0x80;
        v6[15] = 1;
        assert_eq!(format!("{}", Peer::ipv6(v6)), "fe80:0:0:0:0:0:0:1");
    }
}
