//! Wall time for a device: the [`Clock`] trait and a small `strftime`.
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

/// The format an empty `Time` request selects.
pub const DEFAULT_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year (proleptic Gregorian).
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute, 0..=59.
    pub minute: u32,
    /// Second, 0..=59.
    pub second: u32,
}

impl Civil {
    /// The UTC date and time `secs` seconds after the Unix epoch.
    pub fn from_unix(secs: u64) -> Civil {
        // Howard Hinnant's days-to-civil algorithm.
        let days = (secs / 86_400) as i64;
        let rem = (secs % 86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }
}

struct Cursor<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl Cursor<'_> {
    fn push(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len.checked_add(bytes.len())?;
        self.buf.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }

    fn num(&mut self, v: u64, width: usize) -> Option<()> {
        let mut digits = [b'0'; 20];
        let mut i = digits.len();
        let mut v = v;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let start = i.min(digits.len() - width.min(digits.len()));
        self.push(&digits[start..])
    }
}

/// Format `unix_ms` as `format` into `out`; returns the text, or `None` when
/// it does not fit. Supported: `%Y %m %d %H %M %S` (UTC), `%s` (Unix
/// seconds), `%%`; any other `%x` is copied as is. An empty format selects
/// [`DEFAULT_FORMAT`].
///
/// ```
/// use tether_proto::device::clock::format_time;
/// let mut buf = [0u8; 32];
/// assert_eq!(format_time(951_782_400_000, "", &mut buf), Some("2000-02-29T00:00:00Z"));
/// ```
pub fn format_time<'b>(unix_ms: u64, format: &str, out: &'b mut [u8]) -> Option<&'b str> {
    let format = if format.is_empty() {
        DEFAULT_FORMAT
    } else {
        format
    };
    let secs = unix_ms / 1000;
    let c = Civil::from_unix(secs);
    let mut w = Cursor { buf: out, len: 0 };
    let mut chars = format.char_indices();
    while let Some((i, ch)) = chars.next() {
        if ch != '%' {
            w.push(&format.as_bytes()[i..i + ch.len_utf8()])?;
            continue;
        }
        match chars.next() {
            Some((_, 'Y')) => w.num(c.year.max(0) as u64, 4)?,
            Some((_, 'm')) => w.num(c.month.into(), 2)?,
            Some((_, 'd')) => w.num(c.day.into(), 2)?,
            Some((_, 'H')) => w.num(c.hour.into(), 2)?,
            Some((_, 'M')) => w.num(c.minute.into(), 2)?,
            Some((_, 'S')) => w.num(c.second.into(), 2)?,
            Some((_, 's')) => w.num(secs, 1)?,
            Some((_, '%')) => w.push(b"%")?,
            Some((j, other)) => {
                w.push(b"%")?;
                w.push(&format.as_bytes()[j..j + other.len_utf8()])?;
            }
            None => w.push(b"%")?,
        }
    }
    let len = w.len;
    // Only whole UTF-8 sequences and ASCII digits were written.
    core::str::from_utf8(&out[..len]).ok()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(
            Civil::from_unix(0),
            Civil {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        // 2026-11-22T13:45:07Z
        let c = Civil::from_unix(1_795_355_107);
        assert_eq!((c.year, c.month, c.day), (2026, 11, 22));
        assert_eq!((c.hour, c.minute, c.second), (13, 45, 7));
        // Leap days, and the day after.
        assert_eq!(Civil::from_unix(951_782_400).day, 29);
        assert_eq!(Civil::from_unix(951_868_800).month, 3);
        assert_eq!(Civil::from_unix(4_107_542_400).year, 2100);
    }

    #[test]
    fn formats() {
        let mut b = [0u8; 64];
        let t = 1_795_355_107_250;
        assert_eq!(format_time(t, "", &mut b), Some("2026-11-22T13:45:07Z"));
        assert_eq!(format_time(t, "%s", &mut b), Some("1795355107"));
        assert_eq!(
            format_time(t, "%H:%M %% %q é%", &mut b),
            Some("13:45 % %q é%")
        );
        assert_eq!(format_time(5_000, "%Y %S", &mut b), Some("1970 05"));
        assert_eq!(format_time(t, "%Y%Y", &mut b[..7]), None);
        assert_eq!(format_time(t, "%Y", &mut b[..4]), Some("2026"));
    }
}
