//! The device's client jobs as the `push` and `fetch` commands state them:
//! the arguments parsed and checked, no I/O (the firmware's `client`
//! module runs them).
//!
//! ```text
//! push  HOST[:PORT] NAME [REMOTE]   put the stored file NAME to a server (as REMOTE)
//! fetch HOST[:PORT] NAME [LOCAL]    get the server's file NAME into the store (as LOCAL)
//! ```
//! HOST is an IPv4 address (the device has no resolver).

use core::fmt;

/// Longest file name a job carries (either side), in bytes.
pub const NAME_MAX: usize = 64;

/// Which way the file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// From the device's store to the server.
    Push,
    /// From the server into the device's store.
    Fetch,
}

/// One job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Which way.
    pub kind: Kind,
    /// The server's IPv4 address.
    pub ip: [u8; 4],
    /// Its TCP port.
    pub port: u16,
    /// The file's name in the store.
    pub local: heapless::String<NAME_MAX>,
    /// Its name on the server.
    pub remote: heapless::String<NAME_MAX>,
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.ip;
        let (verb, from, dir, to) = match self.kind {
            Kind::Push => ("push", &self.local, "to", &self.remote),
            Kind::Fetch => ("fetch", &self.remote, "from", &self.local),
        };
        write!(f, "{verb} {from} {dir} {a}.{b}.{c}.{d}:{}", self.port)?;
        if from != to {
            write!(f, " as {to}")?;
        }
        Ok(())
    }
}

/// `a.b.c.d` or `a.b.c.d:port` (`default_port` when none is given).
pub fn parse_host(s: &str, default_port: u16) -> Option<([u8; 4], u16)> {
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, p.parse().ok().filter(|&p: &u16| p > 0)?),
        None => (s, default_port),
    };
    let mut ip = [0u8; 4];
    let mut parts = host.split('.');
    for b in &mut ip {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        *b = p.parse().ok()?;
    }
    if parts.next().is_some() || ip == [0; 4] {
        return None;
    }
    Some((ip, port))
}

/// A job from a command's arguments (`args[0]` is `push` or `fetch`).
pub fn parse(args: &[&str], default_port: u16) -> Result<Job, &'static str> {
    let (kind, usage) = match args.first() {
        Some(&"push") => (Kind::Push, "usage: push HOST[:PORT] NAME [REMOTE]"),
        Some(&"fetch") => (Kind::Fetch, "usage: fetch HOST[:PORT] NAME [LOCAL]"),
        _ => return Err("usage: push|fetch HOST[:PORT] NAME [AS]"),
    };
    let (host, name, other) = match args[1..] {
        [h, n] => (h, n, n),
        [h, n, o] => (h, n, o),
        _ => return Err(usage),
    };
    let (ip, port) = parse_host(host, default_port)
        .ok_or("HOST must be an IPv4 address, with :PORT if not the default")?;
    let name_of = |s: &str| {
        let mut n = heapless::String::new();
        match s.is_empty() || n.push_str(s).is_err() {
            true => Err("a file name must be 1 to 64 bytes"),
            false => Ok(n),
        }
    };
    let (name, other) = (name_of(name)?, name_of(other)?);
    let (local, remote) = match kind {
        Kind::Push => (name, other),
        Kind::Fetch => (other, name),
    };
    Ok(Job {
        kind,
        ip,
        port,
        local,
        remote,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host("192.168.69.100", 7117),
            Some(([192, 168, 69, 100], 7117))
        );
        assert_eq!(parse_host("10.0.0.1:9", 7117), Some(([10, 0, 0, 1], 9)));
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.256",
            "a.b.c.d",
            "1.2.3.4:",
            "1.2.3.4:0",
            "1.2.3.4:70000",
            "0.0.0.0",
            "1..2.3",
            "+1.2.3.4",
            "0001.2.3.4",
            "host:7117",
        ] {
            assert_eq!(parse_host(bad, 7117), None, "{bad:?}");
        }
    }

    #[test]
    fn jobs() {
        let j = parse(&["push", "192.168.69.100", "up.bin"], 7117).unwrap();
        assert_eq!(
            (j.kind, j.ip, j.port),
            (Kind::Push, [192, 168, 69, 100], 7117)
        );
        assert_eq!((j.local.as_str(), j.remote.as_str()), ("up.bin", "up.bin"));
        assert_eq!(j.to_string(), "push up.bin to 192.168.69.100:7117");
        let j = parse(&["fetch", "10.0.0.1:8000", "dir/a.bin", "b.bin"], 7117).unwrap();
        assert_eq!(
            (j.local.as_str(), j.remote.as_str()),
            ("b.bin", "dir/a.bin")
        );
        assert_eq!(j.to_string(), "fetch dir/a.bin from 10.0.0.1:8000 as b.bin");
        let j = parse(&["push", "10.0.0.1", "a", "b"], 7117).unwrap();
        assert_eq!(j.to_string(), "push a to 10.0.0.1:7117 as b");
        assert!(parse(&["push"], 1).unwrap_err().starts_with("usage: push"));
        assert!(parse(&["fetch", "1.2.3.4"], 1)
            .unwrap_err()
            .starts_with("usage: fetch"));
        assert!(parse(&["push", "1.2.3.4", "a", "b", "c"], 1).is_err());
        assert!(parse(&["push", "nowhere", "a"], 1)
            .unwrap_err()
            .contains("IPv4"));
        let long = "x".repeat(65);
        assert!(parse(&["push", "1.2.3.4", &long], 1)
            .unwrap_err()
            .contains("64"));
        assert!(parse(&["push", "1.2.3.4", ""], 1).is_err());
    }
}
