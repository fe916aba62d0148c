//! Parsing of `host[:port]`, durations (`500ms`, `10s`, `2m`) and byte rates (`10M`).

use std::time::Duration;

/// A `host[:port]` as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port ([`tether_proto::DEFAULT_PORT`] when omitted).
    pub port: u16,
}

impl HostSpec {
    /// Parse `host`, `host:port`, `[v6]`, `[v6]:port` (a bare IPv6 address
    /// with several colons is taken as a host without port).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad_port = |p: &str| {
            format!(
                "invalid port '{p}' in '{s}': write HOST or HOST:PORT with a port from 1 to 65535"
            )
        };
        if s.is_empty() {
            return Err("empty host: write HOST or HOST:PORT, e.g. 127.0.0.1:7117".into());
        }
        if let Some(rest) = s.strip_prefix('[') {
            let Some((host, tail)) = rest.split_once(']') else {
                return Err(format!("missing ']' in '{s}': write [IPV6]:PORT"));
            };
            let port = match tail {
                "" => tether_proto::DEFAULT_PORT,
                t => {
                    let p = t.strip_prefix(':').ok_or_else(|| bad_port(t))?;
                    p.parse()
                        .ok()
                        .filter(|&p| p != 0)
                        .ok_or_else(|| bad_port(p))?
                }
            };
            return Ok(HostSpec {
                host: host.to_string(),
                port,
            });
        }
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => Ok(HostSpec {
                host: s.to_string(),
                port: tether_proto::DEFAULT_PORT,
            }),
            Some((h, p)) => {
                if h.is_empty() {
                    return Err(format!("missing host in '{s}': write HOST:PORT"));
                }
                let port = p
                    .parse()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| bad_port(p))?;
                Ok(HostSpec {
                    host: h.to_string(),
                    port,
                })
            }
            None => Ok(HostSpec {
                host: s.to_string(),
                port: tether_proto::DEFAULT_PORT,
            }),
        }
    }
}

impl std::fmt::Display for HostSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parse a duration: a number of seconds (`10`, `1.5`) or a number with a
/// unit `ms`, `s`, `m`, `h` (`500ms`, `2m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration '{s}': write e.g. 10, 1.5s, 500ms or 2m"))?;
    if !v.is_finite() || v < 0.0 || v * mult > 1e9 {
        return Err(format!(
            "invalid duration '{s}': must be between 0 and 1e9 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// Parse a byte rate per second: `500K`, `10M`, `1G`, or a plain number of bytes.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches("/s").trim_end_matches(['B', 'b']);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid rate '{s}': write bytes per second, e.g. 500K, 10M or 1G"))?;
    let r = v * mult as f64;
    if !r.is_finite() || r < 1.0 {
        return Err(format!(
            "invalid rate '{s}': must be at least 1 byte per second"
        ));
    }
    Ok(r as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let h = HostSpec::parse("example:99").unwrap();
        assert_eq!((h.host.as_str(), h.port), ("example", 99));
        assert_eq!(HostSpec::parse("box").unwrap().port, 7117);
        assert_eq!(HostSpec::parse("[::1]:5").unwrap().host, "::1");
        assert_eq!(HostSpec::parse("::1").unwrap().port, 7117);
        assert!(HostSpec::parse("a:0").is_err());
        assert!(HostSpec::parse("a:x").is_err());
        assert!(HostSpec::parse(":5").is_err());
        assert_eq!(HostSpec::parse("[::1]:5").unwrap().to_string(), "[::1]:5");
    }

    #[test]
    fn durations_and_rates() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("x").is_err());
        assert_eq!(parse_rate("10M").unwrap(), 10 << 20);
        assert_eq!(parse_rate("512k").unwrap(), 512 << 10);
        assert_eq!(parse_rate("100").unwrap(), 100);
        assert!(parse_rate("0").is_err());
    }
}
