//! Relays an opened connection: picks each direction's stages (the v2 encoder or decoder on
//! the encrypted socket's side, the rewrites that touch v1 messages), the cover traffic and
//! padding of `--shaping`, then runs the relay to the end.

use bip324_control::Direction;
use bip324_protocol::{Event, Pipe, Rewrite, Session, Snapshot, Splice};
use tokio::net::TcpStream;

use super::open::{Opened, Transport};
use crate::daemon::config::Shaping;
use crate::daemon::context::Context;
use crate::daemon::relay::{CloseReason, RelayContext, Side, Unread, relay};

type Stage<'a> = Box<dyn Pipe + Send + 'a>;

/// How a relay ended: here, or paused to go on in a successor.
pub(super) enum Carried {
    Closed(CloseReason),
    Left(Paused),
}

/// Both directions' state where the relay stood, and the early bytes no pipe took yet.
pub(super) struct Paused {
    pub(super) up: Snapshot,
    pub(super) down: Snapshot,
    pub(super) unread: (Vec<u8>, Vec<u8>),
}

/// Relays until the connection ends; `destination` is what an inbound peer reached, which
/// the node's self-advertisements are matched against.
pub(super) async fn carry<E: Fn(Side, Event) + Sync>(
    accepted: &mut TcpStream,
    opened: &mut Opened,
    direction: Direction,
    destination: std::net::SocketAddr,
    ctx: &Context,
    cx: RelayContext<'_, E>,
) -> Carried {
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
    let encrypted = encrypted(direction);
    let cover = cover(ctx, matches!(opened.transport, Transport::V2(_)));
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
    let sockets = (accepted, &mut opened.dialled);
    drive(sockets, (&mut up, &mut down), unread, &cx).await
}

/// Cover goes the way v2 bytes go out, in v2 only.
pub(super) fn cover(ctx: &Context, v2: bool) -> Option<crate::daemon::cover::Cover> {
    ctx.cover().filter(|_| v2)
}

/// The side that speaks v2 in `direction`; cover is sent from the other.
pub(super) fn encrypted(direction: Direction) -> Side {
    match direction {
        Direction::Outbound => Side::Dialled,
        Direction::Inbound => Side::Accepted,
    }
}

/// Relays; when a successor calls, pauses both directions where they stood.
pub(super) async fn drive<E: Fn(Side, Event) + Sync>(
    (accepted, dialled): (&mut TcpStream, &mut TcpStream),
    (up, down): (&mut impl Pipe, &mut impl Pipe),
    mut unread: Unread<'_>,
    cx: &RelayContext<'_, E>,
) -> Carried {
    match relay(accepted, dialled, up, down, &mut unread, cx).await {
        CloseReason::HandedOver => {
            let (mut up_state, mut down_state) = (Snapshot::default(), Snapshot::default());
            up.pause(&mut up_state);
            down.pause(&mut down_state);
            Carried::Left(Paused {
                up: up_state,
                down: down_state,
                unread: (unread.accepted.to_vec(), unread.dialled.to_vec()),
            })
        }
        reason => Carried::Closed(reason),
    }
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
