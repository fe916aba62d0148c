//! The time service's one format dialect, shared by every peer (TCP `Time`
//! and the UDP datagram service): UTC only, a small `strftime`.
//!
//! | spec | output |
//! |------|--------|
//! | `%Y` | year, at least 4 digits |
//! | `%y` | year, last 2 digits |
//! | `%m` `%d` `%H` `%M` `%S` | month, day, hour, minute, second, 2 digits |
//! | `%e` | day, space-padded to 2 |
//! | `%j` | day of the year, 3 digits |
//! | `%a` `%b` | English weekday (`Mon`) and month (`Jan`) abbreviations |
//! | `%F` `%T` | `%Y-%m-%d` and `%H:%M:%S` |
//! | `%s` | Unix seconds |
//! | `%3f` | milliseconds, 3 digits |
//! | `%Z` `%z` | `UTC` and `+0000` |
//! | `%%` | `%` |
//!
//! Any other `%` sequence, or a `%` at the end, is refused
//! ([`TimeError::BadFormat`], answered `INVALID_HEADER`). An empty format
//! selects [`DEFAULT_FORMAT`].

use core::fmt;

/// The format an empty `Time` request selects.
pub const DEFAULT_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

/// Longest formatted time a peer sends, in bytes.
pub const TIME_TEXT_MAX: usize = 128;

/// Why a time could not be formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TimeError {
    /// The text does not fit the buffer (`TOO_LARGE`).
    TooLong,
    /// A specifier outside the dialect, at this byte offset (`INVALID_HEADER`).
    BadFormat {
        /// Byte offset of the `%` that starts it.
        at: usize,
    },
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeError::TooLong => write!(
                f,
                "the formatted time is longer than {TIME_TEXT_MAX} bytes"
            ),
            TimeError::BadFormat { at } => write!(
                f,
                "invalid time format: unknown specifier at byte {at} (use %Y %m %d %H %M %S %j %y %e %a %b %F %T %s %3f %Z %z %%)"
            ),
        }
    }
}

impl core::error::Error for TimeError {}

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
    /// Day of the week, 0 = Sunday.
    pub weekday: u32,
    /// Day of the year, 1..=366.
    pub yday: u32,
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
        // doy counts from March 1st; the calendar year starts 306 days earlier.
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let yday = if month >= 3 {
            doy + 60 + i64::from(leap)
        } else {
            doy - 305
        } as u32;
        Civil {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            weekday: (days + 4).rem_euclid(7) as u32,
            yday,
        }
    }
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

struct Cursor<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl Cursor<'_> {
    fn push(&mut self, bytes: &[u8]) -> Result<(), TimeError> {
        let end = self
            .len
            .checked_add(bytes.len())
            .ok_or(TimeError::TooLong)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(TimeError::TooLong)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn num(&mut self, v: u64, width: usize, pad: u8) -> Result<(), TimeError> {
        let mut digits = [pad; 20];
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

/// Format `unix_ms` (UTC) as `format` into `out`; returns the text. The
/// dialect is in the [module docs](self).
///
/// ```
/// use tether_proto::time::format_time;
/// let mut buf = [0u8; 32];
/// assert_eq!(format_time(951_782_400_000, "", &mut buf), Ok("2000-02-29T00:00:00Z"));
/// ```
pub fn format_time<'b>(
    unix_ms: u64,
    format: &str,
    out: &'b mut [u8],
) -> Result<&'b str, TimeError> {
    let format = if format.is_empty() {
        DEFAULT_FORMAT
    } else {
        format
    };
    let secs = unix_ms / 1000;
    let c = Civil::from_unix(secs);
    let mut w = Cursor { buf: out, len: 0 };
    let bytes = format.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Copy up to the next '%' (whole UTF-8 sequences, since '%' is ASCII).
            let end = bytes[i..]
                .iter()
                .position(|&b| b == b'%')
                .map_or(bytes.len(), |p| i + p);
            w.push(&bytes[i..end])?;
            i = end;
            continue;
        }
        i += spec(&mut w, &c, secs, unix_ms, &bytes[i..])
            .ok_or(TimeError::BadFormat { at: i })??;
    }
    let len = w.len;
    // Only whole UTF-8 sequences and ASCII were written.
    core::str::from_utf8(&out[..len]).map_err(|_| TimeError::TooLong)
}

/// One specifier at the start of `s` (which begins with `%`): writes it and
/// returns how many format bytes it used, or `None` if it is not in the dialect.
fn spec(
    w: &mut Cursor<'_>,
    c: &Civil,
    secs: u64,
    unix_ms: u64,
    s: &[u8],
) -> Option<Result<usize, TimeError>> {
    let two = |w: &mut Cursor<'_>, v: u32| w.num(v.into(), 2, b'0');
    let r = match s.get(1)? {
        b'Y' => w.num(c.year.max(0) as u64, 4, b'0'),
        b'y' => two(w, (c.year.rem_euclid(100)) as u32),
        b'm' => two(w, c.month),
        b'd' => two(w, c.day),
        b'e' => w.num(c.day.into(), 2, b' '),
        b'H' => two(w, c.hour),
        b'M' => two(w, c.minute),
        b'S' => two(w, c.second),
        b'j' => w.num(c.yday.into(), 3, b'0'),
        b'a' => w.push(WEEKDAYS[c.weekday as usize % 7].as_bytes()),
        b'b' => w.push(MONTHS[(c.month as usize + 11) % 12].as_bytes()),
        b'F' => (|| {
            w.num(c.year.max(0) as u64, 4, b'0')?;
            w.push(b"-")?;
            two(w, c.month)?;
            w.push(b"-")?;
            two(w, c.day)
        })(),
        b'T' => (|| {
            two(w, c.hour)?;
            w.push(b":")?;
            two(w, c.minute)?;
            w.push(b":")?;
            two(w, c.second)
        })(),
        b's' => w.num(secs, 1, b'0'),
        b'Z' => w.push(b"UTC"),
        b'z' => w.push(b"+0000"),
        b'%' => w.push(b"%"),
        b'3' if s.get(2) == Some(&b'f') => {
            return Some(w.num(unix_ms % 1000, 3, b'0').map(|()| 3));
        }
        _ => return None,
    };
    Some(r.map(|()| 2))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn civil_dates() {
        let c = Civil::from_unix(0);
        assert_eq!((c.year, c.month, c.day, c.hour), (1970, 1, 1, 0));
        assert_eq!((c.weekday, c.yday), (4, 1), "a Thursday, day 1");
        // 2026-11-22T13:45:07Z, a Sunday, day 326.
        let c = Civil::from_unix(1_795_355_107);
        assert_eq!((c.year, c.month, c.day), (2026, 11, 22));
        assert_eq!((c.hour, c.minute, c.second), (13, 45, 7));
        assert_eq!((c.weekday, c.yday), (0, 326));
        // Leap days, and the day after; the last day of a leap year.
        assert_eq!(Civil::from_unix(951_782_400).day, 29);
        assert_eq!(Civil::from_unix(951_782_400).yday, 60);
        assert_eq!(Civil::from_unix(951_868_800).month, 3);
        assert_eq!(Civil::from_unix(978_220_800).yday, 366, "2000-12-31");
        assert_eq!(Civil::from_unix(4_107_542_400).year, 2100);
    }

    #[test]
    fn formats_the_dialect() {
        let mut b = [0u8; 96];
        let t = 1_795_355_107_250;
        assert_eq!(format_time(t, "", &mut b), Ok("2026-11-22T13:45:07Z"));
        assert_eq!(format_time(t, "%s.%3f", &mut b), Ok("1795355107.250"));
        assert_eq!(
            format_time(t, "%a %b %e %T %Z %z %j %y %F %%", &mut b),
            Ok("Sun Nov 22 13:45:07 UTC +0000 326 26 2026-11-22 %")
        );
        assert_eq!(format_time(t, "é%H", &mut b), Ok("é13"));
        assert_eq!(format_time(5_000, "%Y %S %e", &mut b), Ok("1970 05  1"));
    }

    #[test]
    fn refuses_what_it_does_not_know_and_what_does_not_fit() {
        let mut b = [0u8; 64];
        let t = 1_795_355_107_250;
        assert_eq!(
            format_time(t, "%H:%Q", &mut b),
            Err(TimeError::BadFormat { at: 3 })
        );
        assert_eq!(
            format_time(t, "100%", &mut b),
            Err(TimeError::BadFormat { at: 3 })
        );
        assert_eq!(
            format_time(t, "%3x", &mut b),
            Err(TimeError::BadFormat { at: 0 })
        );
        assert_eq!(format_time(t, "%Y%Y", &mut b[..7]), Err(TimeError::TooLong));
        assert_eq!(format_time(t, "%Y", &mut b[..4]), Ok("2026"));
    }
}
