//! Short human-readable texts built with `write!` into a fixed buffer:
//! error messages, without a heap.

use core::fmt;

/// A text of at most `N` bytes (160 by default: enough for a message
/// naming a path and a cause); what does not fit is cut at a character
/// boundary.
#[derive(Clone)]
pub struct Text<const N: usize = 160> {
    buf: [u8; N],
    len: usize,
}

impl Text {
    /// The default capacity in bytes.
    pub const CAP: usize = 160;
}

impl<const N: usize> Text<N> {
    /// An empty text.
    pub const fn new() -> Self {
        Text {
            buf: [0; N],
            len: 0,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only whole characters are ever appended.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// Whether something was cut.
    pub fn is_full(&self) -> bool {
        self.len == N
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Text::new()
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.len += append(&mut self.buf[self.len..], s);
        Ok(())
    }
}

/// Copy the longest prefix of `s` that fits `room`, cut at a character
/// boundary; returns its length. Not generic: every `Text<N>` shares it.
fn append(room: &mut [u8], s: &str) -> usize {
    let part = clip(s, room.len());
    room[..part.len()].copy_from_slice(part.as_bytes());
    part.len()
}

/// `format_args!` into a [`Text`].
pub fn text(args: fmt::Arguments<'_>) -> Text {
    let mut t = Text::<160>::new();
    let _ = fmt::Write::write_fmt(&mut t, args);
    t
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn cuts_at_character_boundaries() {
        let long = "é".repeat(100);
        let t = text(format_args!("{long}"));
        assert_eq!(t.as_str().len(), Text::CAP);
        assert!(t.is_full());
        assert_eq!(clip("aé", 2), "a");
        assert_eq!(clip("abc", 5), "abc");
    }
}
