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
pub(super) fn original_destination(stream: &TcpStream) -> io::Result<Option<SocketAddr>> {
    let result = match canonical(stream.local_addr()?) {
        SocketAddr::V4(_) => getsockopt(stream, sockopt::OriginalDst).map(|sa| {
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
                u16::from_be(sa.sin_port),
            ))
        }),
        SocketAddr::V6(_) => getsockopt(stream, sockopt::Ip6tOriginalDst).map(|sa| {
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sa.sin6_addr.s6_addr),
                u16::from_be(sa.sin6_port),
                sa.sin6_flowinfo,
                sa.sin6_scope_id,
            ))
        }),
    };
    match result {
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

    /// On a dual-stack listener an IPv4 client is asked for with the IPv4 option, which the
    /// kernel answers for a v4-mapped socket (here: no record, never an error).
    #[tokio::test]
    async fn dual_stack_listener_asks_v4_clients_with_the_ipv4_option() {
        let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        assert!(matches!(peer, SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some()));
        match original_destination(&accepted).unwrap() {
            None => {}
            Some(dest) => assert_eq!(dest, SocketAddr::from(([127, 0, 0, 1], port))),
        }
    }

    #[tokio::test]
    async fn direct_connection_has_no_redirect_record() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        // Without NAT the kernel answers ENOENT, or (when conntrack tracks the flow) the
        // proxy's own address: either way never some other destination.
        match original_destination(&accepted).unwrap() {
            None => {}
            Some(dest) => assert_eq!(dest, addr),
        }
    }
}
