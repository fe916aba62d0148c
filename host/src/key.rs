//! Pre-shared keys: where they come from, how they are checked, and
//! `tether keygen`.
//!
//! A key is 32 random bytes, kept as 64 hexadecimal characters and a
//! newline in a file only its owner may read (mode 0600 on Unix; on
//! Windows an access control list granting the owner alone). It reaches
//! `tether` from, in this order:
//!
//! 1. `--key-file PATH`,
//! 2. the environment variable `TETHER_KEY_FILE` (a path),
//! 3. the environment variable `TETHER_KEY` (the 64 hex characters).
//!
//! Never from the command line itself: a value there is visible to every
//! local user in the process list and lands in shell histories.
//!
//! A key file that other users may read (any group or other permission
//! bit; on Windows an ACL entry allowing another account to read it, see
//! [`crate::platform::key_exposure`]) is refused, as ssh refuses such
//! private keys: a key that others could have copied authenticates nobody.

use std::fmt;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use tether_proto::handshake::KEY_LEN;

/// Environment variable naming a key file.
pub const ENV_KEY_FILE: &str = "TETHER_KEY_FILE";
/// Environment variable holding the key itself (64 hex characters).
pub const ENV_KEY: &str = "TETHER_KEY";

/// A pre-shared key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; KEY_LEN]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Where a key was found, for messages (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--key-file PATH`.
    Flag(PathBuf),
    /// `TETHER_KEY_FILE=PATH`.
    EnvFile(PathBuf),
    /// `TETHER_KEY`.
    Env,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Flag(p) => write!(f, "--key-file '{}'", p.display()),
            KeySource::EnvFile(p) => write!(f, "{ENV_KEY_FILE}='{}'", p.display()),
            KeySource::Env => write!(f, "{ENV_KEY}"),
        }
    }
}

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file cannot be read.
    #[error("cannot read the key file '{}' ({from}): {source}; check the path, or create a key with `tether keygen PATH`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// How it was named.
        from: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The key file's content is not a key.
    #[error("the key file '{}' ({from}) is malformed: {why}; it must hold 64 hexadecimal characters (32 bytes) on one line, as `tether keygen` writes", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// How it was named.
        from: &'static str,
        /// What is wrong (never the content).
        why: String,
    },
    /// The key file may be read by other users.
    #[error("the key file '{}' may be read by other users ({}): refusing to use a key others could have copied; run `{}`", path.display(), exposure.how, exposure.fix)]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Who else may read it, and the fix.
        exposure: crate::platform::Exposure,
    },
    /// `TETHER_KEY` is not a key.
    #[error("{ENV_KEY} is malformed: {why}; it must hold 64 hexadecimal characters (32 bytes); better, keep the key in a file (`tether keygen PATH`) and set {ENV_KEY_FILE}=PATH")]
    MalformedEnv {
        /// What is wrong.
        why: String,
    },
    /// `tether keygen` would overwrite a file.
    #[error("'{}' already exists: pass --force to replace it (clients and servers using the old key will no longer connect)", .0.display())]
    Exists(PathBuf),
    /// Writing a new key failed.
    #[error("cannot write the key file '{}': {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The OS random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// Parse 64 hexadecimal characters, surrounded by optional whitespace.
pub fn parse_hex(text: &str) -> Result<Key, String> {
    let t = text.trim();
    if t.contains(char::is_whitespace) {
        return Err("it contains whitespace between characters".into());
    }
    if t.len() != 2 * KEY_LEN {
        return Err(format!(
            "it holds {} characters, not {}",
            t.chars().count(),
            2 * KEY_LEN
        ));
    }
    let mut key = [0u8; KEY_LEN];
    hex::decode_to_slice(t, &mut key)
        .map_err(|_| "it contains characters that are not hexadecimal digits".to_string())?;
    Ok(Key(key))
}

/// Read a key file (checking its permissions first).
pub fn read_key_file(path: &Path, from: &'static str) -> Result<Key, KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.to_path_buf(),
        from,
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(KeyError::Malformed {
            path: path.to_path_buf(),
            from,
            why: "it is not a regular file".into(),
        });
    }
    if let Some(exposure) = crate::platform::key_exposure(path, &meta).map_err(read_err)? {
        return Err(KeyError::Exposed {
            path: path.to_path_buf(),
            exposure,
        });
    }
    if meta.len() > 1024 {
        return Err(KeyError::Malformed {
            path: path.to_path_buf(),
            from,
            why: format!("it is {} bytes long", meta.len()),
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    let text = String::from_utf8(bytes).map_err(|_| KeyError::Malformed {
        path: path.to_path_buf(),
        from,
        why: "it is not text".into(),
    })?;
    parse_hex(&text).map_err(|why| KeyError::Malformed {
        path: path.to_path_buf(),
        from,
        why,
    })
}

/// Whether a key is configured (`--key-file`, or a non-empty
/// `TETHER_KEY_FILE` or `TETHER_KEY`), without reading or checking it:
/// [`load`] says whether it is usable.
pub fn configured(flag: Option<&Path>) -> bool {
    flag.is_some()
        || [ENV_KEY_FILE, ENV_KEY]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
}

/// The key to use: `--key-file` (`flag`), else `TETHER_KEY_FILE`, else
/// `TETHER_KEY`, else none. Empty environment variables count as unset.
pub fn load(flag: Option<&Path>) -> Result<Option<(Key, KeySource)>, KeyError> {
    load_from(flag, |name| std::env::var_os(name))
}

/// [`load`] with the environment given by `env` (for tests).
pub fn load_from(
    flag: Option<&Path>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Option<(Key, KeySource)>, KeyError> {
    if let Some(p) = flag {
        let k = read_key_file(p, "given with --key-file")?;
        return Ok(Some((k, KeySource::Flag(p.to_path_buf()))));
    }
    if let Some(p) = env(ENV_KEY_FILE).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        let k = read_key_file(&p, "named by TETHER_KEY_FILE")?;
        return Ok(Some((k, KeySource::EnvFile(p))));
    }
    if let Some(v) = env(ENV_KEY).filter(|v| !v.is_empty()) {
        let v = v.to_str().ok_or_else(|| KeyError::MalformedEnv {
            why: "it is not text".into(),
        })?;
        let k = parse_hex(v).map_err(|why| KeyError::MalformedEnv { why })?;
        return Ok(Some((k, KeySource::Env)));
    }
    Ok(None)
}

/// Fill `buf` from the operating system's random number generator.
pub fn os_random(buf: &mut [u8]) -> Result<(), KeyError> {
    getrandom::fill(buf).map_err(|e| KeyError::Random(e.to_string()))
}

/// A fresh handshake nonce from the operating system's generator.
pub fn nonce() -> io::Result<[u8; 16]> {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n).map_err(|e| io::Error::other(format!("no random nonce: {e}")))?;
    Ok(n)
}

/// Write a new random key to `path`, readable by its owner only (see
/// [`crate::platform::create_private`]). Without `force` an existing file
/// is left alone; with it, the file is replaced atomically.
pub fn keygen(path: &Path, force: bool) -> Result<(), KeyError> {
    let mut key = [0u8; KEY_LEN];
    os_random(&mut key)?;
    let line = format!("{}\n", hex::encode(key));
    let write_err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    if !force {
        let mut f = crate::platform::create_private(path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                KeyError::Exists(path.to_path_buf())
            } else {
                write_err(e)
            }
        })?;
        f.write_all(line.as_bytes()).map_err(write_err)?;
        f.sync_all().map_err(write_err)?;
        return Ok(());
    }
    // Replace: write beside it, then rename over it.
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tether-new");
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let r = (|| {
        let mut f = crate::platform::create_private(&tmp)?;
        f.write_all(line.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms() {
        let h = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let k = parse_hex(&format!("  {h}\n")).unwrap();
        assert_eq!(k.0[1], 0x11);
        assert_eq!(k.0[31], 0xff);
        assert!(parse_hex(&h[..62]).unwrap_err().contains("62 characters"));
        assert!(parse_hex(&h.replace('a', "g"))
            .unwrap_err()
            .contains("not hexadecimal"));
        assert!(parse_hex(&format!("{} {}", &h[..32], &h[32..]))
            .unwrap_err()
            .contains("whitespace"));
        assert_eq!(format!("{k:?}"), "Key(<redacted>)");
    }

    #[cfg(unix)]
    #[test]
    fn precedence_and_permissions() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.key");
        let b = d.path().join("b.key");
        keygen(&a, false).unwrap();
        keygen(&b, false).unwrap();
        assert!(matches!(keygen(&a, false), Err(KeyError::Exists(_))));
        let ka = read_key_file(&a, "t").unwrap();
        let kb = read_key_file(&b, "t").unwrap();
        assert_ne!(ka, kb, "two keys from the OS generator differ");
        let m = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
        let hex_a = std::fs::read_to_string(&a).unwrap().trim().to_string();
        let env = |file: Option<&Path>, key: Option<&str>| {
            let file = file.map(|p| p.as_os_str().to_owned());
            let key = key.map(std::ffi::OsString::from);
            move |n: &str| match n {
                ENV_KEY_FILE => file.clone(),
                ENV_KEY => key.clone(),
                _ => None,
            }
        };
        // --key-file beats both variables; TETHER_KEY_FILE beats TETHER_KEY.
        let (k, s) = load_from(Some(&b), env(Some(&a), Some(&hex_a)))
            .unwrap()
            .unwrap();
        assert_eq!((k, s), (kb.clone(), KeySource::Flag(b.clone())));
        let (k, _) = load_from(None, env(Some(&b), Some(&hex_a)))
            .unwrap()
            .unwrap();
        assert_eq!(k, kb);
        let (k, s) = load_from(None, env(None, Some(&hex_a))).unwrap().unwrap();
        assert_eq!((k, s), (ka.clone(), KeySource::Env));
        assert!(load_from(None, env(None, None)).unwrap().is_none());
        assert!(matches!(
            load_from(None, env(None, Some("abc"))),
            Err(KeyError::MalformedEnv { .. })
        ));
        // Readable by others: refused, naming the file and the fix.
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key_file(&a, "t").unwrap_err().to_string();
        assert!(e.contains("a.key") && e.contains("chmod 600"), "{e}");
        // --force replaces, still 0600.
        keygen(&a, true).unwrap();
        let m = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
        assert_ne!(read_key_file(&a, "t").unwrap(), ka);
    }
}
