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

use super::destination::Forbidden;
use super::labels::RefusalKind;
use super::original_dst::canonical;

#[derive(Default)]
pub(super) struct LoopGuard {
    /// Live upstream source endpoints, by registration: the port from `bind()`, the address
    /// once `connect()` chose it (`None` while connecting).
    upstreams: Mutex<HashMap<u64, (Option<IpAddr>, u16)>>,
    next: AtomicU64,
}

/// Why a connection is refused before anything is read from it.
#[derive(Debug)]
pub(super) enum Refusal {
    /// The kernel could not say where the connection was going.
    Unreadable(std::io::Error),
    /// No original destination: the client connected to the proxy directly.
    NotRedirected,
    /// The original destination is the proxy's own listening address.
    DestinationIsProxy,
    /// The connection is (or targets) one of the proxy's own upstream connections.
    OwnUpstream,
    /// The destination is this host or no single remote host (destination.rs).
    Forbidden(Forbidden),
}

impl Refusal {
    pub(super) fn kind(&self) -> RefusalKind {
        match self {
            Refusal::Unreadable(_) => RefusalKind::Unreadable,
            Refusal::NotRedirected => RefusalKind::NotRedirected,
            Refusal::DestinationIsProxy => RefusalKind::DestinationIsProxy,
            Refusal::OwnUpstream => RefusalKind::Loop,
            Refusal::Forbidden(_) => RefusalKind::ForbiddenDestination,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Unreadable(e) => return write!(f, "cannot read its original destination: {e}"),
            Refusal::Forbidden(why) => {
                return write!(
                    f,
                    "its destination is {why}: the proxy relays to remote nodes only"
                );
            }
            Refusal::NotRedirected => {
                "not redirected by the kernel (no original destination): the proxy is not an open relay"
            }
            Refusal::DestinationIsProxy => {
                "its destination is the proxy itself (a direct connection to the proxy port): \
                 the proxy is not an open relay"
            }
            Refusal::OwnUpstream => {
                "loop: the proxy's own upstream connection was redirected back to it; \
                 do not run the proxy with the redirected group, and exempt its user"
            }
        })
    }
}

impl LoopGuard {
    /// Checks a freshly accepted connection before anything else is done with it.
    pub(super) fn check(
        &self,
        client: SocketAddr,
        destination: Option<SocketAddr>,
        local: SocketAddr,
        listening: &[SocketAddr],
    ) -> Result<SocketAddr, Refusal> {
        // On a dual-stack listener an IPv4 peer's addresses arrive v4-mapped: compare them as
        // IPv4, as the kernel records them.
        let destination = canonical(destination.ok_or(Refusal::NotRedirected)?);
        if destination == canonical(local) || listening.contains(&destination) {
            return Err(Refusal::DestinationIsProxy);
        }
        let client = canonical(client);
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
        if client_is_upstream || destination_is_upstream {
            return Err(Refusal::OwnUpstream);
        }
        Ok(destination)
    }

    fn upstreams(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Option<IpAddr>, u16)>> {
        // The map stays consistent even if a holder panicked: inserts and removes are atomic.
        self.upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Connects to `destination` from a source endpoint registered for the whole life of the
    /// returned stream.
    pub(super) async fn connect(
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

/// Keeps an upstream source endpoint registered; dropping it unregisters the endpoint.
pub(super) struct UpstreamPort {
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

    #[test]
    fn refuses_unredirected_and_self_destinations() {
        let guard = LoopGuard::default();
        let local = addr("127.0.0.1:1324");
        let listening = [local, addr("[::1]:1324")];
        let client = addr("127.0.0.1:40000");
        assert!(matches!(
            guard.check(client, None, local, &listening),
            Err(Refusal::NotRedirected)
        ));
        assert!(matches!(
            guard.check(client, Some(local), local, &listening),
            Err(Refusal::DestinationIsProxy)
        ));
        assert!(matches!(
            guard.check(client, Some(addr("[::1]:1324")), local, &listening),
            Err(Refusal::DestinationIsProxy)
        ));
        assert_eq!(
            guard
                .check(client, Some(addr("10.0.0.2:8333")), local, &listening)
                .unwrap(),
            addr("10.0.0.2:8333")
        );
        // A LAN host dialling a `[::]` listener's own port over IPv4: local is v4-mapped.
        let mapped_local = addr("[::ffff:192.168.1.1]:324");
        assert!(matches!(
            guard.check(client, Some(addr("192.168.1.1:324")), mapped_local, &[]),
            Err(Refusal::DestinationIsProxy)
        ));
    }

    #[tokio::test]
    async fn upstream_ports_are_refused_while_registered() {
        let guard = Arc::new(LoopGuard::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let (stream, registration) = guard.connect(target).await.unwrap();
        let upstream = stream.local_addr().unwrap();
        let local = addr("127.0.0.1:1324");
        // Our own upstream connection, redirected back to us, arrives from that port.
        assert!(matches!(
            guard.check(upstream, Some(target), local, &[local]),
            Err(Refusal::OwnUpstream)
        ));
        // A redirected connection whose destination is that upstream endpoint.
        let client = addr("127.0.0.1:40000");
        assert!(matches!(
            guard.check(client, Some(upstream), local, &[local]),
            Err(Refusal::OwnUpstream)
        ));
        drop(registration);
        assert_eq!(
            guard
                .check(upstream, Some(target), local, &[local])
                .unwrap(),
            target
        );
    }

    /// testnet4 and signet ports lie in the ephemeral range: a node on another host whose
    /// port equals a live upstream source port is a real destination, not a loop.
    #[tokio::test]
    async fn a_destination_port_equal_to_an_upstream_source_port_is_served() {
        let guard = Arc::new(LoopGuard::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stream, _registration) = guard.connect(listener.local_addr().unwrap()).await.unwrap();
        let source_port = stream.local_addr().unwrap().port();
        let local = addr("127.0.0.1:1324");
        let node = SocketAddr::from(([10, 0, 0, 2], source_port));
        let client = addr("127.0.0.1:40000");
        assert_eq!(
            guard.check(client, Some(node), local, &[local]).unwrap(),
            node
        );
        // The same holds for a client whose port equals it on another address.
        let mapped_node: SocketAddr = format!("[::ffff:10.0.0.2]:{source_port}").parse().unwrap();
        assert_eq!(
            guard
                .check(client, Some(mapped_node), local, &[local])
                .unwrap(),
            node
        );
    }

    /// While `connect()` runs only the port is known, and the loopback accept may come
    /// first: a client on that port is refused whatever its address.
    #[test]
    fn a_connecting_upstream_is_matched_by_port() {
        let guard = LoopGuard::default();
        guard.upstreams().insert(7, (None, 45000));
        let local = addr("127.0.0.1:1324");
        let dest = addr("10.0.0.2:8333");
        assert!(matches!(
            guard.check(addr("10.0.0.1:45000"), Some(dest), local, &[local]),
            Err(Refusal::OwnUpstream)
        ));
        // ... but a destination with that port is not (its address is not known to be ours).
        let node = addr("10.0.0.2:45000");
        assert_eq!(
            guard
                .check(addr("127.0.0.1:40000"), Some(node), local, &[local])
                .unwrap(),
            node
        );
    }
}
