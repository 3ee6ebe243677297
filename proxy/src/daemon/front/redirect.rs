//! Connections the kernel redirected here (`bip324-redirect enable`): the original
//! destination (SO_ORIGINAL_DST) is where they go, and the client's first bytes will tell the
//! network.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::{Accepted, Front, Refusal, Route};
use crate::daemon::context::Context;
use crate::daemon::original_dst::{canonical, original_destination};
use crate::daemon::upstream::Dial;

pub(super) fn arrive(
    stream: TcpStream,
    client: SocketAddr,
    ctx: &Context,
) -> Result<Accepted, Refusal> {
    let destination = original_destination(&stream)
        .map_err(Refusal::Unreadable)?
        .ok_or(Refusal::NotRedirected)?;
    // On a dual-stack listener an IPv4 destination arrives v4-mapped.
    let destination = canonical(destination);
    Ok(Accepted {
        stream,
        front: Front::Redirect,
        client,
        destination,
        route: Route::Out {
            dial: Dial::to(destination, ctx.config.upstream_socks5),
            network: None,
        },
        reply: None,
        pending: None,
    })
}
