//! The destination a redirected connection was meant for, as the kernel remembers it.
//!
//! nftables' `redirect` records it in conntrack; the eBPF backend answers the same
//! getsockopt, so this code serves both.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

/// Asks for `SO_ORIGINAL_DST` (IPv4) or `IP6T_SO_ORIGINAL_DST` (IPv6), chosen by the family
/// of the connection: an IPv4 client accepted on a dual-stack `[::]` listener arrives
/// v4-mapped, and its record is an IPv4 one. `Ok(None)` when the kernel has no record: not
/// redirected.
pub(crate) fn original_destination(stream: &TcpStream) -> io::Result<Option<SocketAddr>> {
    let result = match Family::of(stream.local_addr()?) {
        Family::V4 => getsockopt(stream, sockopt::OriginalDst).map(|sa| {
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
                u16::from_be(sa.sin_port),
            ))
        }),
        Family::V6 => getsockopt(stream, sockopt::Ip6tOriginalDst).map(|sa| {
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sa.sin6_addr.s6_addr),
                u16::from_be(sa.sin6_port),
                sa.sin6_flowinfo,
                sa.sin6_scope_id,
            ))
        }),
    };
    record(result)
}

/// Which of the two options a connection is asked with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    /// By the family of the connection's local address, a v4-mapped one counting as IPv4.
    fn of(local: SocketAddr) -> Family {
        match canonical(local) {
            SocketAddr::V4(_) => Family::V4,
            SocketAddr::V6(_) => Family::V6,
        }
    }
}

/// The kernel's answer: a record (its address canonical), none (`ENOENT`: not redirected),
/// or an error.
fn record(answer: nix::Result<SocketAddr>) -> io::Result<Option<SocketAddr>> {
    match answer {
        Ok(addr) => Ok(Some(canonical(addr))),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// A v4-mapped IPv6 address names an IPv4 host: connect to it over IPv4.
pub(super) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_becomes_v4() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:8333".parse().unwrap();
        assert_eq!(canonical(mapped), "10.1.2.3:8333".parse().unwrap());
        let v6: SocketAddr = "[fd00::1]:8333".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    /// On a dual-stack listener an IPv4 client arrives v4-mapped: the kernel keeps its
    /// record under IPv4, so it is asked with the IPv4 option; an IPv6 client with the IPv6
    /// one. The local addresses are the kernel's own, of real connections.
    #[tokio::test]
    async fn dual_stack_listener_asks_v4_clients_with_the_ipv4_option() {
        let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _v4_client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (v4, peer) = listener.accept().await.unwrap();
        assert!(matches!(peer, SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some()));
        let v4_local = v4.local_addr().unwrap();
        assert!(v4_local.is_ipv6(), "v4-mapped: {v4_local}");
        assert_eq!(Family::of(v4_local), Family::V4);
        let _v6_client = TcpStream::connect(("::1", port)).await.unwrap();
        let (v6, _) = listener.accept().await.unwrap();
        assert_eq!(Family::of(v6.local_addr().unwrap()), Family::V6);
    }

    /// A direct connection has no record (`ENOENT`) unless the host's firewall has conntrack
    /// track it, which a test cannot choose without root; the end-to-end tests see both, in
    /// network namespaces of their own. Here: how each answer of the kernel is read.
    #[test]
    fn no_record_is_not_redirected_and_other_errors_stay_errors() {
        assert_eq!(record(Err(nix::errno::Errno::ENOENT)).unwrap(), None);
        // A record is the destination, canonical; any other answer is an error, never "none".
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:8333".parse().unwrap();
        assert_eq!(
            record(Ok(mapped)).unwrap(),
            Some("10.1.2.3:8333".parse().unwrap())
        );
        let no_conntrack = record(Err(nix::errno::Errno::ENOPROTOOPT)).unwrap_err();
        assert_eq!(no_conntrack.raw_os_error(), Some(libc::ENOPROTOOPT));
    }
}
