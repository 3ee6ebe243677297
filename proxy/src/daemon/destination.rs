//! The one destination policy of every front: the proxy relays to remote nodes, never to this
//! host or to addresses that name no single remote host.
//!
//! The kernel rules already leave this host's own destinations alone (`fib daddr type local`),
//! so for redirected connections this is defence in depth; for SOCKS5, whose destinations a
//! client names freely, it is what keeps the proxy from reaching services bound to loopback.

use std::fmt;
use std::net::IpAddr;

/// Why a destination is not relayed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Forbidden {
    Unspecified,
    Loopback,
    Multicast,
    Broadcast,
    /// One of this host's own addresses (in the proxy's network namespace).
    ThisHost,
    /// The kernel's list of this host's addresses could not be read: refused, failing closed.
    Unverifiable,
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Forbidden::Unspecified => "an unspecified address (0.0.0.0 or ::) reaches this host",
            Forbidden::Loopback => "a loopback address reaches this host",
            Forbidden::Multicast => "a multicast address is no node",
            Forbidden::Broadcast => "a broadcast address is no node",
            Forbidden::ThisHost => "an address of this host",
            Forbidden::Unverifiable => {
                "not known to be remote: this host's addresses cannot be read (the proxy needs \
                 AF_NETLINK sockets)"
            }
        })
    }
}

/// Checks an address a connection would be relayed to (after any local name resolution).
pub(super) fn check(ip: IpAddr) -> Result<(), Forbidden> {
    // A v4-mapped address names an IPv4 host.
    let ip = ip.to_canonical();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() {
        Err(Forbidden::Unspecified)
    } else if ip.is_loopback() {
        Err(Forbidden::Loopback)
    } else if ip.is_multicast() {
        Err(Forbidden::Multicast)
    } else if broadcast {
        Err(Forbidden::Broadcast)
    } else {
        match is_own_address(ip) {
            Some(false) => Ok(()),
            Some(true) => Err(Forbidden::ThisHost),
            None => Err(Forbidden::Unverifiable),
        }
    }
}

/// Whether an interface of this host carries `ip`; `None` when the kernel cannot be asked.
/// Asked at each connection (one netlink dump): addresses come and go, and a stale cache
/// would let a new one through.
fn is_own_address(ip: IpAddr) -> Option<bool> {
    let addresses = nix::ifaddrs::getifaddrs().ok()?;
    let own = addresses.filter_map(|a| a.address).any(|address| {
        let own = match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => return false,
        };
        own == ip
    });
    Some(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_that_are_no_remote_node_are_refused() {
        for (ip, why) in [
            ("0.0.0.0", Forbidden::Unspecified),
            ("::", Forbidden::Unspecified),
            ("127.0.0.1", Forbidden::Loopback),
            ("127.1.2.3", Forbidden::Loopback),
            ("::1", Forbidden::Loopback),
            ("::ffff:127.0.0.1", Forbidden::Loopback),
            ("::ffff:0.0.0.0", Forbidden::Unspecified),
            ("224.0.0.1", Forbidden::Multicast),
            ("ff02::1", Forbidden::Multicast),
            ("255.255.255.255", Forbidden::Broadcast),
        ] {
            assert_eq!(check(ip.parse().unwrap()), Err(why), "{ip}");
        }
    }

    #[test]
    fn remote_addresses_pass() {
        // Documentation ranges (RFC 5737, RFC 3849) are assigned to no host.
        assert_eq!(check("192.0.2.7".parse().unwrap()), Ok(()));
        assert_eq!(check("2001:db8::7".parse().unwrap()), Ok(()));
    }
}
