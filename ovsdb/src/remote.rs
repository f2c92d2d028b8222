//! Where an OVSDB server listens, in the `tcp:HOST:PORT` / `unix:PATH` notation that OVS and OVN
//! tools use everywhere (so operators can paste the same strings).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use thiserror::Error;

/// One server address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Remote {
    /// `tcp:HOST:PORT`; IPv6 addresses in brackets, `tcp:[::1]:6641`.
    Tcp {
        /// Host name or address (without brackets).
        host: String,
        /// TCP port.
        port: u16,
    },
    /// `unix:PATH`.
    Unix(PathBuf),
}

/// Why a remote string was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid OVSDB remote {remote:?}: {reason}")]
pub struct RemoteParseError {
    /// The string given.
    pub remote: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Remote {
    /// Parses a comma-separated list, as in `--db=tcp:a:6641,tcp:b:6641,tcp:c:6641`.
    pub fn parse_list(list: &str) -> Result<Vec<Remote>, RemoteParseError> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }
}

impl FromStr for Remote {
    type Err = RemoteParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| RemoteParseError {
            remote: s.to_owned(),
            reason,
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(err("empty socket path"));
            }
            return Ok(Remote::Unix(PathBuf::from(path)));
        }
        if s.starts_with("ssl:") {
            return Err(err("ssl: remotes are not supported (use tcp: or unix:)"));
        }
        let Some(rest) = s.strip_prefix("tcp:") else {
            return Err(err("expected tcp:HOST:PORT or unix:PATH"));
        };
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| err("unterminated [ in IPv6 address"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| err("missing :PORT"))?;
            (host, port)
        } else {
            rest.rsplit_once(':').ok_or_else(|| err("missing :PORT"))?
        };
        if host.is_empty() {
            return Err(err("empty host"));
        }
        let port = port
            .parse()
            .map_err(|_| err("port is not a number 0-65535"))?;
        Ok(Remote::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Remote::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            Remote::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in [
            "tcp:127.0.0.1:6641",
            "tcp:[::1]:6641",
            "unix:/run/ovn/ovnnb_db.sock",
            "tcp:nb.example:1",
        ] {
            let r: Remote = s.parse().expect(s);
            assert_eq!(r.to_string(), s);
        }
        assert_eq!(
            "tcp:[::1]:6641".parse::<Remote>().expect("v6"),
            Remote::Tcp {
                host: "::1".into(),
                port: 6641
            }
        );
        assert_eq!(
            Remote::parse_list("tcp:a:1, tcp:b:2,").expect("list").len(),
            2
        );
        for bad in [
            "",
            "tcp:",
            "tcp:host",
            "tcp::1",
            "tcp:h:99999",
            "ssl:h:1",
            "unix:",
            "tcp:[::1",
            "tcp:[::1]6641",
        ] {
            assert!(bad.parse::<Remote>().is_err(), "{bad}");
        }
    }
}
