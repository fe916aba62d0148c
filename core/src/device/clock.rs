//! Wall time for a device: the [`Clock`] trait (formatting is
//! [`crate::time`], shared by every peer).
//!
//! The device state machine never reads a clock: every call takes `now_ms`,
//! the caller's monotonic milliseconds. A [`Clock`] only maps that monotonic
//! time to Unix time, when the device knows it (an RTC read at boot, SNTP, or
//! a time set by the host).

/// Maps the caller's monotonic time to wall-clock time.
pub trait Clock {
    /// Milliseconds since the Unix epoch at monotonic time `now_ms`, or
    /// `None` when this device does not know the date.
    fn unix_ms(&self, now_ms: u64) -> Option<u64>;
}

/// A device without a wall clock: time replies carry milliseconds since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoWallClock;

impl Clock for NoWallClock {
    fn unix_ms(&self, _now_ms: u64) -> Option<u64> {
        None
    }
}

/// A wall clock set once: Unix time = `now_ms + offset_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffsetClock {
    /// Unix milliseconds at monotonic time 0.
    pub offset_ms: u64,
}

impl Clock for OffsetClock {
    fn unix_ms(&self, now_ms: u64) -> Option<u64> {
        Some(self.offset_ms.saturating_add(now_ms))
    }
}
