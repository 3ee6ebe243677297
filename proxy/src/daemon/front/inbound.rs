//! Inbound mode: a peer's connection to the local v1-only node, redirected here by the
//! kernel (`bip324-redirect inbound enable`). The node's port tells the network; the peer is
//! answered as Bitcoin Core answers, and the node is reached from the peer's own address
//! (`connection::open`).

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::{Accepted, Front, Refusal, Route};
use crate::daemon::context::Context;
use crate::daemon::original_dst::{canonical, original_destination};
use bip324_protocol::Network;

pub(super) fn arrive(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
) -> Result<Accepted, Refusal> {
    let local = stream.local_addr().map(canonical);
    let reached = match original_destination(&stream).map_err(Refusal::Unreadable)? {
        Some(reached) if local.is_ok_and(|local| local != canonical(reached)) => canonical(reached),
        // Conntrack records every connection; one not redirected has this listener as its
        // destination: someone dialled the inbound port, not the node.
        _ => return Err(Refusal::NotRedirected),
    };
    let network = ctx
        .config
        .inbound_network
        .or_else(|| Network::from_port(reached.port()))
        .ok_or(Refusal::UnknownNetwork {
            port: reached.port(),
        })?;
    // Until it reaches the node, a connection counts against its source address's and
    // network's shares; it may be evicted meanwhile to admit a newcomer (pending.rs).
    let pending = ctx
        .inbound_pending
        .enter(peer.ip())
        .ok_or(Refusal::TooManyPending)?;
    Ok(Accepted {
        stream,
        front: Front::Inbound,
        client: peer,
        destination: reached,
        route: Route::In {
            port: reached.port(),
            network,
        },
        reply: None,
        pending: Some(pending),
    })
}
