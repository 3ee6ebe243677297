//! Refuses connections that would make the proxy talk to itself.
//!
//! If the proxy ever matched the redirect rule (run with the redirected group, say), its own
//! upstream connection would come straight back to it. On loopback that connection is
//! accepted before the proxy's `connect()` even returns, so the upstream source port is
//! registered between `bind()` and `connect()`.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpSocket, TcpStream};

#[derive(Default)]
pub struct LoopGuard {
    upstream_ports: Mutex<HashSet<u16>>,
}

/// Why a connection is refused before anything is read from it.
#[derive(Debug)]
pub enum Refusal {
    /// The kernel could not say where the connection was going.
    Unreadable(std::io::Error),
    /// No original destination: the client connected to the proxy directly.
    NotRedirected,
    /// The original destination is the proxy's own listening address.
    DestinationIsProxy,
    /// The connection is (or targets) one of the proxy's own upstream connections.
    OwnUpstream,
}

impl Refusal {
    /// Its `reason` label in the metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Unreadable(_) => "unreadable",
            Refusal::NotRedirected => "not_redirected",
            Refusal::DestinationIsProxy => "destination_is_proxy",
            Refusal::OwnUpstream => "loop",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Unreadable(e) => return write!(f, "cannot read its original destination: {e}"),
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
    pub fn check(
        &self,
        client: SocketAddr,
        destination: Option<SocketAddr>,
        local: SocketAddr,
        listening: &[SocketAddr],
    ) -> Result<SocketAddr, Refusal> {
        let destination = destination.ok_or(Refusal::NotRedirected)?;
        if destination == local || listening.contains(&destination) {
            return Err(Refusal::DestinationIsProxy);
        }
        let ports = self.ports();
        if ports.contains(&client.port()) || ports.contains(&destination.port()) {
            return Err(Refusal::OwnUpstream);
        }
        Ok(destination)
    }

    fn ports(&self) -> std::sync::MutexGuard<'_, HashSet<u16>> {
        // The set stays consistent even if a holder panicked: inserts and removes are atomic.
        self.upstream_ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Connects to `destination` from a source port registered for the whole life of the
    /// returned stream.
    pub async fn connect(
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
        self.ports().insert(port);
        let registration = UpstreamPort {
            guard: Arc::clone(self),
            port,
        };
        let stream = socket.connect(destination).await?;
        stream.set_nodelay(true)?;
        Ok((stream, registration))
    }
}

/// Keeps an upstream source port registered; dropping it unregisters the port.
pub struct UpstreamPort {
    guard: Arc<LoopGuard>,
    port: u16,
}

impl Drop for UpstreamPort {
    fn drop(&mut self) {
        self.guard.ports().remove(&self.port);
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
        drop(registration);
        assert_eq!(
            guard
                .check(upstream, Some(target), local, &[local])
                .unwrap(),
            target
        );
    }
}
