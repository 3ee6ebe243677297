//! The three ways into the proxy. A front reads what it must from an accepted socket to know
//! where the connection goes, then hands `connection` one [`Accepted`] value, or refuses it
//! with a typed [`Refusal`]. Everything after that (the destination policy, first bytes, the
//! v2 handshake or fallback, relay, close, logs and metrics) is `connection`'s, the same for
//! every front.

mod inbound;
mod redirect;
mod refusal;
pub(crate) mod socks5;

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::context::Context;
use super::pending::Pending;
use super::upstream::Dial;
use bip324_control::Direction;
use bip324_protocol::Network;

pub(crate) use super::labels::Front;
pub(crate) use refusal::Refusal;

/// A connection a front accepted, ready for `connection::run`.
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    pub(crate) front: Front,
    /// Who connected: a client, or an inbound peer (a v4-mapped address shown as IPv4).
    pub(crate) client: SocketAddr,
    /// Where it goes, as listed: the original destination, the SOCKS5 target's address
    /// (`0.0.0.0:PORT` for a name sent upstream unresolved), or the node's address that an
    /// inbound peer reached.
    pub(crate) destination: SocketAddr,
    pub(crate) route: Route,
    /// SOCKS5: the client waits for a reply before it sends its first bytes.
    pub(crate) reply: Option<socks5::Reply>,
    /// Inbound: the connection's place among those not yet at the node; it may be evicted.
    pub(crate) pending: Option<Pending>,
}

/// Which socket speaks v2, and how the other is reached.
pub(crate) enum Route {
    /// Out to a remote node (directly or through --upstream-socks5); the proxy initiates v2
    /// on the dialled socket. The `network` when the port tells it before any byte (SOCKS5);
    /// otherwise the client's magic tells it.
    Out {
        dial: Dial,
        network: Option<Network>,
    },
    /// In to the local node's `port` on loopback, from the peer's own address; the proxy
    /// answers v2 (for the node's `network`) on the accepted socket when the peer asks for it.
    In { port: u16, network: Network },
}

impl Accepted {
    pub(crate) fn direction(&self) -> Direction {
        match self.route {
            Route::Out { .. } => Direction::Outbound,
            Route::In { .. } => Direction::Inbound,
        }
    }

    /// The destination as asked: a SOCKS5 name stays a name.
    pub(crate) fn destination_shown(&self) -> String {
        match &self.route {
            Route::Out { dial, .. } => dial.target.to_string(),
            Route::In { .. } => self.destination.to_string(),
        }
    }

    /// The network, when known before the first bytes.
    pub(crate) fn network(&self) -> Option<Network> {
        match self.route {
            Route::Out { network, .. } => network,
            Route::In { network, .. } => Some(network),
        }
    }
}

/// What a front made of an accepted socket.
pub(crate) enum Arrival {
    Connection(Box<Accepted>),
    Refused {
        client: SocketAddr,
        refusal: Refusal,
    },
    /// Served by the front itself (a SOCKS5 RESOLVE), or gone before it asked anything.
    Served,
}

/// Reads what `front` needs from a freshly accepted socket.
pub(crate) async fn arrive(
    front: Front,
    stream: TcpStream,
    client: SocketAddr,
    ctx: &Context,
) -> Arrival {
    // A LAN host reaching a `[::]` listener over IPv4 is shown by its IPv4 address.
    let client = super::original_dst::canonical(client);
    let accepted = match front {
        Front::Redirect => redirect::arrive(stream, client, ctx),
        Front::Inbound => inbound::arrive(stream, client, ctx),
        Front::Socks5 => return socks5::arrive(stream, client, ctx).await,
        // A word of a newer proxy, for clients: no listener of this one has it.
        Front::Unknown => return Arrival::Served,
    };
    match accepted {
        Ok(accepted) => Arrival::Connection(Box::new(accepted)),
        Err(refusal) => Arrival::Refused { client, refusal },
    }
}
