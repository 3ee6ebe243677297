//! Gateway mode's sources: the LAN interfaces or prefixes whose forwarded connections are
//! redirected, checked and normalised.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Gateway mode: where forwarded connections come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Source {
    /// Arriving on this interface.
    Interface(String),
    /// From this source prefix (host bits zero).
    Prefix { addr: IpAddr, len: u8 },
}

impl Source {
    pub(crate) fn interface(name: &str) -> Result<Source, Error> {
        // IFNAMSIZ - 1, and no characters the kernel refuses.
        let valid = !name.is_empty()
            && name.len() < 16
            && !name.contains(['/', ':'])
            && !name.chars().any(char::is_whitespace);
        if !valid {
            return Err(Error::Config(format!(
                "--from-interface {name:?} is not an interface name"
            )));
        }
        Ok(Source::Interface(name.to_string()))
    }

    /// `192.168.1.0/24`, `fd00:1::/64`; an address alone is a host.
    pub(crate) fn prefix(text: &str) -> Result<Source, Error> {
        let bad = || {
            Error::Config(format!(
                "--from {text:?} is not a prefix (192.168.1.0/24, fd00:1::/64)"
            ))
        };
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Source::Prefix {
            addr: masked(addr, len),
            len,
        })
    }

    /// How `enable` is told about it.
    pub(super) fn option(&self) -> String {
        match self {
            Source::Interface(name) => format!("--from-interface {name}"),
            Source::Prefix { .. } => format!("--from {self}"),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Interface(name) => write!(f, "interface {name}"),
            Source::Prefix { addr, len } => write!(f, "{addr}/{len}"),
        }
    }
}

/// `addr` with every bit past `len` cleared.
fn masked(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}
