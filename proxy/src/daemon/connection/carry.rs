//! Relays an opened connection: picks each direction's stages (the v2 encoder or decoder on
//! the encrypted socket's side, the rewrites that touch v1 messages), the cover traffic and
//! padding of `--shaping`, then runs the relay to the end.

use bip324_control::Direction;
use bip324_protocol::{Event, Pipe, Rewrite, Session, Splice};
use tokio::net::TcpStream;

use super::open::{Opened, Transport};
use crate::daemon::config::Shaping;
use crate::daemon::context::Context;
use crate::daemon::relay::{CloseReason, RelayContext, Side, Unread, relay};

type Stage<'a> = Box<dyn Pipe + Send + 'a>;

/// Relays until the connection ends; `destination` is what an inbound peer reached, which
/// the node's self-advertisements are matched against.
pub(super) async fn carry<E: Fn(Side, Event) + Sync>(
    accepted: &mut TcpStream,
    opened: &mut Opened,
    direction: Direction,
    destination: std::net::SocketAddr,
    ctx: &Context,
    cx: RelayContext<'_, E>,
) -> CloseReason {
    let config = &ctx.config;
    // The v1 messages that are edited, in plaintext between the stages.
    let (mut up_edit, mut down_edit) = (None, None);
    match (direction, opened.magic) {
        (Direction::Outbound, Some(magic)) if config.user_agent_suffix => {
            let version = env!("CARGO_PKG_VERSION");
            up_edit = Some(Rewrite::user_agent_suffix(magic, "bip324-proxy", version));
        }
        (Direction::Inbound, Some(magic)) => {
            let mut own = vec![destination];
            own.extend(&config.inbound_advertise);
            down_edit = Some(Rewrite::advertise_v2(magic, own));
        }
        _ => {}
    }
    let encrypted = match direction {
        Direction::Outbound => Side::Dialled,
        Direction::Inbound => Side::Accepted,
    };
    // Cover goes the way v2 bytes go out, in v2 only.
    let cover = ctx
        .cover()
        .filter(|_| matches!(opened.transport, Transport::V2(_)));
    let (mut up, mut down): (Stage<'_>, Stage<'_>) = match &mut opened.transport {
        Transport::V2(session) => {
            let Session {
                encoder, decoder, ..
            } = &mut **session;
            if config.shaping != Shaping::None {
                encoder.pad_flights_to_buckets();
            }
            // Into v2 after the edit, out of v2 before it.
            let (into, out_of): (Stage<'_>, Stage<'_>) = (Box::new(encoder), Box::new(decoder));
            match encrypted {
                Side::Dialled => (then(up_edit, into), after(out_of, down_edit)),
                Side::Accepted => (after(out_of, up_edit), then(down_edit, into)),
            }
        }
        _ => (or_splice(up_edit), or_splice(down_edit)),
    };
    let cx = RelayContext {
        cover: cover.as_ref().map(|c| (encrypted.other(), c)),
        ..cx
    };
    let unread = Unread {
        accepted: &opened.unread.0,
        dialled: &opened.unread.1,
    };
    relay(
        accepted,
        &mut opened.dialled,
        &mut up,
        &mut down,
        unread,
        &cx,
    )
    .await
}

/// `edit`, then `stage`.
fn then<'a>(edit: Option<Rewrite>, stage: Stage<'a>) -> Stage<'a> {
    match edit {
        Some(first) => Box::new(bip324_protocol::Chain {
            first,
            second: stage,
        }),
        None => stage,
    }
}

/// `stage`, then `edit`.
fn after<'a>(stage: Stage<'a>, edit: Option<Rewrite>) -> Stage<'a> {
    match edit {
        Some(second) => Box::new(bip324_protocol::Chain {
            first: stage,
            second,
        }),
        None => stage,
    }
}

fn or_splice<'a>(edit: Option<Rewrite>) -> Stage<'a> {
    match edit {
        Some(edit) => Box::new(edit),
        None => Box::new(Splice::default()),
    }
}
