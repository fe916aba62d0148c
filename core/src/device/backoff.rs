//! Back-off after failed authentication, per peer, in a fixed table.
//!
//! After the `n`th consecutive failed Auth from a peer, its Hellos are
//! refused (Error `BUSY`, then close) for `min(1 s × 2^(n-1), 60 s)`. A
//! successful Auth forgets the peer. The table holds [`BACKOFF_PEERS`]
//! peers; a new failing peer takes a free slot, else the slot whose back-off
//! ends first (so an attacker with more addresses than slots can push an
//! entry out: on a device the table is a brake, not a wall; every guess
//! still costs a TCP handshake and a Hello round trip, and a device serves
//! few connections at once).

use core::fmt;

/// How many peers the table tracks.
pub const BACKOFF_PEERS: usize = 4;
/// Back-off after the first failure, in milliseconds (doubled per further failure).
pub const BACKOFF_BASE_MS: u64 = 1_000;
/// Longest back-off, in milliseconds.
pub const BACKOFF_MAX_MS: u64 = 60_000;

/// Who is connecting, as the firmware knows it: an IP address (IPv4 as an
/// IPv4-mapped IPv6 address, see [`Peer::ipv4`]) or, on links without
/// addresses (a serial line), [`Peer::UNKNOWN`].
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

#[derive(Debug, Clone, Copy)]
struct Slot {
    peer: Peer,
    /// Consecutive failures; 0 means the slot is free.
    failures: u8,
    /// Hellos from the peer are refused until then (monotonic ms).
    until_ms: u64,
}

const FREE: Slot = Slot {
    peer: Peer::UNKNOWN,
    failures: 0,
    until_ms: 0,
};

/// The back-off table (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Backoff {
    slots: [Slot; BACKOFF_PEERS],
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// An empty table.
    pub const fn new() -> Self {
        Backoff {
            slots: [FREE; BACKOFF_PEERS],
        }
    }

    fn find(&self, peer: Peer) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.failures > 0 && s.peer == peer)
    }

    /// How many more milliseconds `peer` must wait before it may try again
    /// (`None`: it may try now).
    pub fn check(&self, peer: Peer, now_ms: u64) -> Option<u64> {
        let s = &self.slots[self.find(peer)?];
        (s.until_ms > now_ms).then(|| s.until_ms - now_ms)
    }

    /// `peer` failed to authenticate at `now_ms`; returns its back-off in ms.
    pub fn record_failure(&mut self, peer: Peer, now_ms: u64) -> u64 {
        let i = match self.find(peer) {
            Some(i) => i,
            None => {
                // A free slot, else the one whose back-off ends first.
                let i = self
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| (s.failures > 0, s.until_ms))
                    .map_or(0, |(i, _)| i);
                self.slots[i] = Slot {
                    peer,
                    failures: 0,
                    until_ms: 0,
                };
                i
            }
        };
        let s = &mut self.slots[i];
        s.failures = s.failures.saturating_add(1);
        let shift = u32::from(s.failures - 1).min(16);
        let delay = (BACKOFF_BASE_MS << shift).min(BACKOFF_MAX_MS);
        s.until_ms = now_ms.saturating_add(delay);
        delay
    }

    /// `peer` authenticated: forget its failures.
    pub fn record_success(&mut self, peer: Peer) {
        if let Some(i) = self.find(peer) {
            self.slots[i] = FREE;
        }
    }

    /// Forget everything (reboot).
    pub fn clear(&mut self) {
        self.slots = [FREE; BACKOFF_PEERS];
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn doubles_caps_and_forgets_on_success() {
        let mut b = Backoff::new();
        let p = Peer::ipv4([10, 0, 0, 1]);
        assert_eq!(b.check(p, 0), None);
        assert_eq!(b.record_failure(p, 0), 1_000);
        assert_eq!(b.check(p, 0), Some(1_000));
        assert_eq!(b.check(p, 999), Some(1));
        assert_eq!(b.check(p, 1_000), None);
        assert_eq!(b.record_failure(p, 1_000), 2_000);
        assert_eq!(b.record_failure(p, 3_000), 4_000);
        for _ in 0..20 {
            b.record_failure(p, 10_000);
        }
        assert_eq!(b.check(p, 10_000), Some(BACKOFF_MAX_MS));
        // Another peer is not affected.
        assert_eq!(b.check(Peer::ipv4([10, 0, 0, 2]), 10_000), None);
        b.record_success(p);
        assert_eq!(b.check(p, 10_000), None);
        assert_eq!(b.record_failure(p, 10_000), 1_000, "counting starts over");
    }

    #[test]
    fn a_full_table_evicts_the_entry_that_ends_first() {
        let mut b = Backoff::new();
        let peer = |i: u8| Peer::ipv4([10, 0, 0, i]);
        for i in 0..BACKOFF_PEERS as u8 {
            b.record_failure(peer(i), u64::from(i) * 100);
        }
        // peer 0's back-off ends first: a fifth peer takes its slot.
        b.record_failure(peer(9), 1_000);
        assert_eq!(b.check(peer(0), 500), None);
        for i in 1..BACKOFF_PEERS as u8 {
            assert!(b.check(peer(i), 500).is_some(), "peer {i}");
        }
        assert_eq!(b.check(peer(9), 1_000), Some(1_000));
    }

    #[test]
    fn peers_print_as_addresses() {
        extern crate std;
        use std::format;
        assert_eq!(
            format!("{:?}", Peer::ipv4([192, 168, 69, 100])),
            "192.168.69.100"
        );
        assert_eq!(format!("{:?}", Peer::UNKNOWN), "unknown peer");
        let mut v6 = [0u8; 16];
        v6[0] = 0xfe;
        v6[1] = 0x80;
        v6[15] = 1;
        assert_eq!(format!("{:?}", Peer::ipv6(v6)), "fe80:0:0:0:0:0:0:1");
    }
}
