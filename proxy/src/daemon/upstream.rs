//! Where a connection goes out: directly to its destination, or through the upstream SOCKS5
//! proxy of `--upstream-socks5` (Tor), which then resolves names and sees the SOCKS client's
//! credentials.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpStream;

use super::loop_guard::{LoopGuard, UpstreamPort};
use super::socks5::client::{self, Credentials};
use super::socks5::wire::Target;

/// A destination and the way to it.
pub(super) struct Dial {
    pub target: Target,
    /// The upstream SOCKS5 proxy, when configured.
    pub via: Option<SocketAddr>,
    pub credentials: Option<Credentials>,
}

impl Dial {
    /// To a redirected connection's original destination.
    pub(super) fn to(destination: SocketAddr, via: Option<SocketAddr>) -> Dial {
        Dial {
            target: Target::Ip(destination),
            via,
            credentials: None,
        }
    }

    /// Connects, from a source endpoint registered with the loop guard for the whole life of
    /// the stream.
    pub(super) async fn connect(
        &self,
        guard: &Arc<LoopGuard>,
    ) -> io::Result<(TcpStream, UpstreamPort)> {
        match (&self.via, &self.target) {
            (None, Target::Ip(destination)) => guard.connect(*destination).await,
            (None, Target::Domain(..)) => Err(io::Error::other(
                "internal error: a name to connect to without an upstream proxy",
            )),
            (Some(proxy), target) => {
                let (mut stream, port) = guard.connect(*proxy).await?;
                client::connect(&mut stream, target, self.credentials.as_ref()).await?;
                Ok((stream, port))
            }
        }
    }

    /// The address of the target's name (Tor's RESOLVE): asked of the upstream proxy when
    /// there is one, never of this host's resolver then.
    pub(super) async fn resolve(&self, guard: &Arc<LoopGuard>) -> io::Result<IpAddr> {
        match (&self.via, &self.target) {
            (_, Target::Ip(addr)) => Ok(addr.ip()),
            (None, Target::Domain(name, port)) => lookup(name, *port).await.map(|a| a.ip()),
            (Some(proxy), Target::Domain(name, _)) => {
                let (mut stream, _port) = guard.connect(*proxy).await?;
                client::resolve(&mut stream, name, self.credentials.as_ref()).await
            }
        }
    }
}

/// A name's first address from this host's resolver (only when there is no upstream proxy).
pub(super) async fn lookup(name: &str, port: u16) -> io::Result<SocketAddr> {
    let unreachable = |e| io::Error::new(io::ErrorKind::HostUnreachable, e);
    tokio::net::lookup_host((name, port))
        .await
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| unreachable(io::Error::other("no address")))
}

impl std::fmt::Display for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.via {
            None => write!(f, "{}", self.target),
            Some(proxy) => write!(f, "{} via SOCKS5 {proxy}", self.target),
        }
    }
}
