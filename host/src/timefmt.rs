//! The time service: strftime-style formatting of the current UTC time.

use std::fmt::Write as _;

/// The format used when the request's format is empty.
pub const DEFAULT_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

/// Milliseconds since the Unix epoch and the current UTC time formatted with
/// `format` (strftime-style; empty selects [`DEFAULT_FORMAT`]), or an error
/// naming the bad format.
pub fn now(format: &str) -> Result<(u64, String), String> {
    let now = chrono::Utc::now();
    let fmt = if format.is_empty() {
        DEFAULT_FORMAT
    } else {
        format
    };
    let mut text = String::new();
    // An invalid specifier makes Display fail rather than panic.
    write!(text, "{}", now.format(fmt)).map_err(|_| {
        format!("invalid time format '{format}': use strftime specifiers such as %Y-%m-%d %H:%M:%S")
    })?;
    Ok((now.timestamp_millis().max(0) as u64, text))
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        let (ms, t) = super::now("").unwrap();
        assert!(ms > 1_700_000_000_000);
        assert_eq!(t.len(), 20);
        assert!(t.ends_with('Z'));
        assert_eq!(super::now("%Y").unwrap().1.len(), 4);
        assert!(super::now("%Q").is_err());
    }
}
