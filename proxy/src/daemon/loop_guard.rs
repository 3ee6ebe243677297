//! Refuses connections that would make the proxy talk to itself.
//!
//! If the proxy ever matched the redirect rule (run with the redirected group, say), its own
//! upstream connection would come straight back to it. On loopback that connection is
//! accepted before the proxy's `connect()` even returns, so the upstream source endpoint is
//! registered between `bind()` and `connect()`: its port at once (the address is not chosen
//! yet), its address as soon as `connect()` returns.
//!
//! Comparisons are by whole endpoint, never by port alone: testnet4 (48333) and signet
//! (38333) lie inside Linux's ephemeral port range, so a real node's port can equal the source
//! port of some live upstream connection.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpSocket, TcpStream};

use super::original_dst::canonical;

#[derive(Default)]
pub(crate) struct LoopGuard {
    /// Live upstream source endpoints, by registration: the port from `bind()`, the address
    /// once `connect()` chose it (`None` while connecting).
    upstreams: Mutex<HashMap<u64, (Option<IpAddr>, u16)>>,
    next: AtomicU64,
}

impl LoopGuard {
    /// Whether a connection from `client` to `destination` is (or targets) one of the
    /// proxy's own upstream connections.
    pub(crate) fn is_own(&self, client: SocketAddr, destination: SocketAddr) -> bool {
        // On a dual-stack listener an IPv4 peer's addresses arrive v4-mapped: compare them as
        // IPv4, as the kernel records them.
        let (client, destination) = (canonical(client), canonical(destination));
        let upstreams = self.upstreams();
        // The client is one of our upstream sockets: while it connects only its port is
        // known, and a port the proxy bound is not handed to another socket of this host.
        let client_is_upstream = upstreams
            .values()
            .any(|(ip, port)| *port == client.port() && ip.is_none_or(|ip| ip == client.ip()));
        // The destination is one of our upstream sockets: only a known endpoint can match.
        let destination_is_upstream = upstreams
            .values()
            .any(|(ip, port)| *ip == Some(destination.ip()) && *port == destination.port());
        client_is_upstream || destination_is_upstream
    }

    fn upstreams(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Option<IpAddr>, u16)>> {
        // The map stays consistent even if a holder panicked: inserts and removes are atomic.
        self.upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Connects to `destination` from a source endpoint registered for the whole life of the
    /// returned stream.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        destination: SocketAddr,
    ) -> io::Result<(TcpStream, UpstreamPort)> {
        let socket = match destination {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        let any: SocketAddr = match destination {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        socket.bind(any)?;
        let port = socket.local_addr()?.port();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.upstreams().insert(id, (None, port));
        let registration = UpstreamPort {
            guard: Arc::clone(self),
            id,
        };
        let stream = socket.connect(destination).await?;
        let source = canonical(stream.local_addr()?);
        self.upstreams()
            .insert(id, (Some(source.ip()), source.port()));
        stream.set_nodelay(true)?;
        Ok((stream, registration))
    }
}

impl LoopGuard {
    /// Registers the source endpoint of an upstream socket this proxy did not open itself
    /// (handed over by a predecessor).
    pub(crate) fn adopt(self: &Arc<Self>, source: SocketAddr) -> UpstreamPort {
        let source = canonical(source);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.upstreams()
            .insert(id, (Some(source.ip()), source.port()));
        UpstreamPort {
            guard: Arc::clone(self),
            id,
        }
    }
}

/// Keeps an upstream source endpoint registered; dropping it unregisters the endpoint.
pub(crate) struct UpstreamPort {
    guard: Arc<LoopGuard>,
    id: u64,
}

impl Drop for UpstreamPort {
    fn drop(&mut self) {
        self.guard.upstreams().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn upstream_ports_are_refused_while_registered() {
        let guard = Arc::new(LoopGuard::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let (stream, registration) = guard.connect(target).await.unwrap();
        let upstream = stream.local_addr().unwrap();
        // Our own upstream connection, redirected back to us, arrives from that port.
        assert!(guard.is_own(upstream, target));
        // A redirected connection whose destination is that upstream endpoint.
        let client = addr("127.0.0.1:40000");
        assert!(guard.is_own(client, upstream));
        drop(registration);
        assert!(!guard.is_own(upstream, target));
    }

    /// testnet4 and signet ports lie in the ephemeral range: a node on another host whose
    /// port equals a live upstream source port is a real destination, not a loop.
    #[tokio::test]
    async fn a_destination_port_equal_to_an_upstream_source_port_is_served() {
        let guard = Arc::new(LoopGuard::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stream, _registration) = guard.connect(listener.local_addr().unwrap()).await.unwrap();
        let source_port = stream.local_addr().unwrap().port();
        let node = SocketAddr::from(([10, 0, 0, 2], source_port));
        let client = addr("127.0.0.1:40000");
        assert!(!guard.is_own(client, node));
        // The same holds for a client whose port equals it on another address.
        let mapped_node: SocketAddr = format!("[::ffff:10.0.0.2]:{source_port}").parse().unwrap();
        assert!(!guard.is_own(client, mapped_node));
    }

    /// While `connect()` runs only the port is known, and the loopback accept may come
    /// first: a client on that port is refused whatever its address.
    #[test]
    fn a_connecting_upstream_is_matched_by_port() {
        let guard = LoopGuard::default();
        guard.upstreams().insert(7, (None, 45000));
        let dest = addr("10.0.0.2:8333");
        assert!(guard.is_own(addr("10.0.0.1:45000"), dest));
        // ... but a destination with that port is not (its address is not known to be ours).
        let node = addr("10.0.0.2:45000");
        assert!(!guard.is_own(addr("127.0.0.1:40000"), node));
    }
}
