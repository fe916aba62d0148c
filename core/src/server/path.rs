//! The path rules every server applies before its storage sees a path
//! (section 2.4 of `PROTOCOL.md`).
//!
//! Paths are UTF-8, `/`-separated and relative to the served root. Empty
//! and `.` components are skipped, so `""`, `.` and `./` name the root. A
//! path is refused (`PATH_REFUSED`) when it starts with `/`, has a drive
//! prefix (`C:`), a backslash, a control character, a `..` component, a
//! component longer than `max_name`, is longer than `max_path`, ends in
//! the reserved [`PART_SUFFIX`], or (without directories) has more than
//! one component.

use core::fmt;

use crate::message::ErrorCode;

/// Names ending with this are reserved for partial uploads.
pub const PART_SUFFIX: &str = ".tether-part";

/// What a server accepts, as announced in HelloAck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// Longest name (one component), in bytes.
    pub max_name: u16,
    /// Longest path, in bytes.
    pub max_path: u16,
    /// Whether paths may have several components (caps `DIRS`).
    pub dirs: bool,
}

/// A path that passed the rules: iterate its [`components`](Self::components).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RelPath<'a> {
    raw: &'a str,
}

impl<'a> RelPath<'a> {
    /// The components, in order, without empty and `.` ones.
    pub fn components(&self) -> impl Iterator<Item = &'a str> + Clone {
        self.raw.split('/').filter(|c| !c.is_empty() && *c != ".")
    }

    /// Whether the path names the served root.
    pub fn is_root(&self) -> bool {
        self.components().next().is_none()
    }

    /// The last component (`.` for the root).
    pub fn name(&self) -> &'a str {
        self.components().last().unwrap_or(".")
    }

    /// The path exactly as the request gave it.
    pub fn raw(&self) -> &'a str {
        self.raw
    }
}

impl fmt::Display for RelPath<'_> {
    /// The normalized form: components joined by `/` (`.` for the root).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str(".");
        }
        for (i, c) in self.components().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(c)?;
        }
        Ok(())
    }
}

impl fmt::Debug for RelPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelPath({:?})", self.raw)
    }
}

/// Why a path was refused: its Error reply's code, and (as `Display`) its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal<'a> {
    /// `PATH_REFUSED`, or `IS_DIRECTORY` for a file operation on the root.
    pub code: ErrorCode,
    why: Why,
    path: &'a str,
    rules: PathRules,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    TooLong,
    Control,
    Backslash,
    Absolute,
    Drive,
    DotDot,
    NameTooLong(usize),
    Reserved,
    Flat,
    Root,
}

impl fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = Shown(self.path);
        let r = &self.rules;
        match self.why {
            Why::TooLong => write!(
                f,
                "path of {} bytes refused: longer than this server's limit of {} bytes",
                self.path.len(),
                r.max_path
            ),
            Why::Control => write!(f, "path refused: it contains control characters"),
            Why::Backslash => write!(
                f,
                "path {p} refused: backslashes are not separators (use '/')"
            ),
            Why::Absolute => write!(
                f,
                "path {p} refused: absolute paths are not allowed; paths are relative to the served root"
            ),
            Why::Drive => write!(
                f,
                "path {p} refused: a drive prefix; paths are relative to the served root"
            ),
            Why::DotDot => write!(
                f,
                "path {p} refused: '..' may not be used to leave the served root"
            ),
            Why::NameTooLong(n) => write!(
                f,
                "path {p} refused: a name of {n} bytes is longer than this server's limit of {} bytes",
                r.max_name
            ),
            Why::Reserved => write!(
                f,
                "path {p} refused: names ending in {PART_SUFFIX} are reserved for partial uploads"
            ),
            Why::Flat => write!(
                f,
                "path {p} refused: this server's store is flat (no subdirectories)"
            ),
            Why::Root => write!(f, "path {p} is the served root itself; name a file below it"),
        }
    }
}

/// Shows at most 48 bytes of a refused path (which has no control
/// characters: those are refused before any path is shown).
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cut = crate::text::clip(self.0, 48);
        write!(f, "'{cut}'")?;
        if cut.len() < self.0.len() {
            write!(f, " (+{} bytes)", self.0.len() - cut.len())?;
        }
        Ok(())
    }
}

impl PathRules {
    /// Check `path`. With `file`, the root itself is refused
    /// (`IS_DIRECTORY`): the operation needs something below it.
    pub fn check<'a>(&self, path: &'a str, file: bool) -> Result<RelPath<'a>, Refusal<'a>> {
        let refuse = |why| Refusal {
            code: if why == Why::Root {
                ErrorCode::IS_DIRECTORY
            } else {
                ErrorCode::PATH_REFUSED
            },
            why,
            path,
            rules: *self,
        };
        if path.len() > usize::from(self.max_path) {
            return Err(refuse(Why::TooLong));
        }
        if path.chars().any(char::is_control) {
            return Err(refuse(Why::Control));
        }
        if path.contains('\\') {
            return Err(refuse(Why::Backslash));
        }
        if path.starts_with('/') {
            return Err(refuse(Why::Absolute));
        }
        let b = path.as_bytes();
        if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
            return Err(refuse(Why::Drive));
        }
        let rel = RelPath { raw: path };
        for c in rel.components() {
            if c == ".." {
                return Err(refuse(Why::DotDot));
            }
            if c.len() > usize::from(self.max_name) {
                return Err(refuse(Why::NameTooLong(c.len())));
            }
            if c.ends_with(PART_SUFFIX) {
                return Err(refuse(Why::Reserved));
            }
        }
        if !self.dirs && rel.components().nth(1).is_some() {
            return Err(refuse(Why::Flat));
        }
        if file && rel.is_root() {
            return Err(refuse(Why::Root));
        }
        Ok(rel)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::text::Text;

    const HOST: PathRules = PathRules {
        max_name: 255,
        max_path: 4095,
        dirs: true,
    };
    const FLAT: PathRules = PathRules {
        max_name: 48,
        max_path: 48,
        dirs: false,
    };

    fn refusal(rules: &PathRules, p: &str) -> (ErrorCode, Text) {
        let r = rules.check(p, true).unwrap_err();
        (r.code, crate::text::text(format_args!("{r}")))
    }

    #[test]
    fn normalizes() {
        let r = HOST.check("./a//b/./c.txt", true).unwrap();
        assert_eq!(
            r.components().collect::<heapless::Vec<_, 4>>(),
            ["a", "b", "c.txt"]
        );
        assert_eq!(r.name(), "c.txt");
        let mut t: Text = Text::new();
        core::fmt::Write::write_fmt(&mut t, format_args!("{r}")).unwrap();
        assert_eq!(t.as_str(), "a/b/c.txt");
        for root in ["", ".", "./", ".//."] {
            let r = HOST.check(root, false).unwrap();
            assert!(r.is_root());
            assert_eq!(r.name(), ".");
        }
    }

    #[test]
    fn refuses_each_form_with_its_reason() {
        let cases: &[(&str, &str)] = &[
            ("/etc/passwd", "absolute"),
            ("//x", "absolute"),
            ("a/../..", "'..'"),
            ("..", "'..'"),
            ("a\\b", "backslash"),
            ("a\0b", "control"),
            ("\x1b[2J", "control"),
            ("C:/x", "drive"),
            (".x.tether-part", "reserved"),
        ];
        for (p, why) in cases {
            let (code, m) = refusal(&HOST, p);
            assert_eq!(code, ErrorCode::PATH_REFUSED, "{p:?}");
            assert!(m.as_str().contains(why), "{p:?}: {m}");
        }
        let (_, m) = refusal(&HOST, &"n".repeat(256));
        assert!(m.as_str().contains("255 bytes"), "{m}");
        let long = "d/".repeat(2048);
        let (_, m) = refusal(&HOST, &long);
        assert!(m.as_str().contains("4095 bytes"), "{m}");
        assert!(HOST.check(&"n".repeat(255), true).is_ok());
        let (code, _) = refusal(&HOST, ".");
        assert_eq!(code, ErrorCode::IS_DIRECTORY);
    }

    #[test]
    fn a_flat_store_takes_one_component() {
        assert!(FLAT.check("log.txt", true).is_ok());
        assert!(FLAT.check("./log.txt", true).is_ok());
        let (_, m) = refusal(&FLAT, "a/b");
        assert!(m.as_str().contains("flat"), "{m}");
        let (_, m) = refusal(&FLAT, &"n".repeat(49));
        assert!(m.as_str().contains("limit of 48"), "{m}");
    }
}
