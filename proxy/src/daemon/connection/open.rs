//! Everything before relaying, for every front. The accepted socket's first bytes tell its
//! transport; the other socket is dialled; then v2 is initiated on the dialled socket
//! (outbound) or answered on the accepted one (inbound), or, for an outbound connection with
//! --v1-fallback and Bitcoin Core's rule, the connection goes on in plaintext.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::Failure;
use crate::daemon::context::Context;
use crate::daemon::front::{Accepted, Route, socks5};
use crate::daemon::labels::TransportKind;
use crate::daemon::loop_guard::UpstreamPort;
use crate::daemon::registry::Entry;
use crate::daemon::relay::{Side, Traffic};
use crate::daemon::upstream::Dial;
use crate::daemon::v2_connect::{
    Established, HandshakeError, HandshakeLook, connect_v2, handshake,
};
use bip324_protocol::{
    CLIENT_HELLO_LEN, ClientHello, Event, Magic, Network, NetworkLabel, PeerHello, Role, Session,
    classify_client_hello, classify_peer_hello,
};

/// A connection ready to relay.
pub(crate) struct Opened {
    pub(super) dialled: TcpStream,
    /// Registered with the loop guard while the connection lives (outbound only).
    _port: Option<UpstreamPort>,
    /// Read before the relay began, from the accepted socket and from the dialled one.
    pub(super) unread: (Vec<u8>, Vec<u8>),
    pub(super) transport: Transport,
    /// The v1 magic spoken in plaintext on the v1 side; `None` when the bytes pass through.
    pub(super) magic: Option<Magic>,
}

/// How the connection is carried.
pub(crate) enum Transport {
    /// Encrypted on the dialled socket (outbound) or the accepted one (inbound).
    V2(Box<Session>),
    /// Plaintext v1 after a failed v2 attempt (`--v1-fallback`).
    V1Fallback { why: String },
    /// The client spoke something else than v1 (v2 itself): bytes pass unchanged.
    Passthrough,
    /// An inbound peer that chose v1, as it would without the proxy.
    V1,
}

impl Transport {
    pub(crate) fn kind(&self) -> TransportKind {
        match self {
            Transport::V2(_) => TransportKind::V2,
            Transport::V1Fallback { .. } => TransportKind::V1Fallback,
            Transport::Passthrough => TransportKind::Passthrough,
            Transport::V1 => TransportKind::V1,
        }
    }

    pub(crate) fn session_id(&self) -> Option<[u8; 32]> {
        match self {
            Transport::V2(session) => Some(session.session_id),
            _ => None,
        }
    }
}

/// Opens `accepted` to its destination: on success, both sockets are ready to relay.
pub(super) async fn open(
    accepted: &mut Accepted,
    ctx: &Context,
    entry: &Entry,
    events: &(impl Fn(Side, Event) + Sync),
) -> Result<Opened, Failure> {
    let reply = accepted.reply.take();
    match &accepted.route {
        Route::Out { dial, network } => {
            outbound(
                &mut accepted.stream,
                dial,
                *network,
                reply,
                ctx,
                entry,
                events,
            )
            .await
        }
        Route::In { port, network } => {
            let peer = accepted.client;
            inbound(
                &mut accepted.stream,
                (peer, *port),
                *network,
                ctx,
                entry,
                events,
            )
            .await
        }
    }
}

/// A local client's connection out. A SOCKS5 client is owed a reply before it sends
/// anything: its destination is reached first, in the port's network.
async fn outbound(
    client: &mut TcpStream,
    dial: &Dial,
    network: Option<Network>,
    reply: Option<socks5::Reply>,
    ctx: &Context,
    entry: &Entry,
    events: &(impl Fn(Side, Event) + Sync),
) -> Result<Opened, Failure> {
    let traffic = &entry.traffic;
    let mut early = None;
    if let (Some(reply), Some(network)) = (reply, network) {
        match reach(ctx, dial, network.magic(), traffic, events).await {
            Ok(reached) => {
                let bound = reached.stream().local_addr().ok();
                reply
                    .succeed(client, ctx, bound)
                    .await
                    .map_err(Failure::AcceptedIo)?;
                early = Some((network.magic(), reached));
            }
            Err(failure) => {
                reply.fail(client, ctx, &failure).await;
                return Err(Failure::Replied(Box::new(failure)));
            }
        }
    }
    let decide = |first: &[u8]| match classify_client_hello(first) {
        ClientHello::NeedMore => None,
        hello => Some(hello),
    };
    let (first, hello) = first_bytes(client, traffic, decide, ctx).await?;
    let ClientHello::V1(magic) = hello else {
        drop(early);
        let (remote, port) = connect_plain(ctx, dial).await?;
        return Ok(Opened {
            dialled: remote,
            _port: Some(port),
            unread: (first, Vec::new()),
            transport: Transport::Passthrough,
            magic: None,
        });
    };
    entry.set_network(NetworkLabel(magic).to_string());
    let reached = match early {
        Some((made_for, reached @ Reached::V2(_))) if made_for == magic => reached,
        Some((_, reached @ Reached::Plain { .. })) => reached,
        // None, or another network on this SOCKS5 port: a session for the client's network.
        _ => reach(ctx, dial, magic, traffic, events).await?,
    };
    Ok(match reached {
        Reached::V2(Established {
            remote,
            port,
            session,
            unread,
        }) => Opened {
            dialled: remote,
            _port: Some(port),
            unread: (first, unread),
            transport: Transport::V2(session),
            magic: Some(magic),
        },
        Reached::Plain { remote, port, why } => Opened {
            dialled: remote,
            _port: Some(port),
            unread: (first, Vec::new()),
            transport: Transport::V1Fallback { why },
            magic: Some(magic),
        },
    })
}

/// A peer's connection in to the local node. Bitcoin Core's responder rule decides on the
/// peer's first bytes: v1 when they are the network's `version`, v2 otherwise.
async fn inbound(
    peer: &mut TcpStream,
    (peer_addr, port): (SocketAddr, u16),
    network: Network,
    ctx: &Context,
    entry: &Entry,
    events: &(impl Fn(Side, Event) + Sync),
) -> Result<Opened, Failure> {
    let traffic = &entry.traffic;
    let magic = network.magic();
    let decide = |first: &[u8]| match classify_peer_hello(first, magic) {
        PeerHello::NeedMore => None,
        hello => Some(hello),
    };
    let (first, hello) = first_bytes(peer, traffic, decide, ctx).await?;
    let node = connect_within(ctx, connect_as(ctx, peer_addr, port)).await?;
    if hello == PeerHello::V1 {
        return Ok(Opened {
            dialled: node,
            _port: None,
            unread: (first, Vec::new()),
            transport: Transport::V1,
            magic: Some(magic),
        });
    }
    let mut handshake_events = |event| events(Side::Accepted, event);
    let counters = (&traffic.accepted_in, &traffic.accepted_out);
    let answering = async {
        let v2 = (Role::Responder, magic, HandshakeLook::of(&ctx.config));
        let answer = handshake(peer, v2, &first, counters, &mut handshake_events);
        tokio::time::timeout(ctx.config.handshake_timeout, answer)
            .await
            .unwrap_or(Err(HandshakeError::Timeout))
    };
    let (session, unread) = timed(ctx, answering).await.map_err(Failure::Answering)?;
    Ok(Opened {
        dialled: node,
        _port: None,
        unread: (unread, Vec::new()),
        transport: Transport::V2(session),
        magic: Some(magic),
    })
}

/// The destination reached in v2, or in plaintext after a failed v2 attempt.
enum Reached {
    V2(Established),
    Plain {
        remote: TcpStream,
        port: UpstreamPort,
        why: String,
    },
}

impl Reached {
    fn stream(&self) -> &TcpStream {
        match self {
            Reached::V2(established) => &established.remote,
            Reached::Plain { remote, .. } => remote,
        }
    }
}

/// The v2-or-fallback decision: a v2 session with `dial`'s destination, or with
/// --v1-fallback and Bitcoin Core's rule (`HandshakeFailure::allows_v1_fallback`), a plain
/// connection.
async fn reach(
    ctx: &Context,
    dial: &Dial,
    magic: Magic,
    traffic: &Traffic,
    events: &(impl Fn(Side, Event) + Sync),
) -> Result<Reached, Failure> {
    let mut handshake_events = |event| events(Side::Dialled, event);
    let v2 = (magic, HandshakeLook::of(&ctx.config));
    let timeout = ctx.config.handshake_timeout;
    let attempt = connect_v2(
        &ctx.loop_guard,
        dial,
        v2,
        timeout,
        traffic,
        &mut handshake_events,
    );
    match timed(ctx, attempt).await {
        Ok(established) => Ok(Reached::V2(established)),
        Err(failure) if ctx.config.v1_fallback && failure.allows_v1_fallback() => {
            let (remote, port) = connect_plain(ctx, dial).await?;
            let why = format!("the v2 attempt failed: {failure}");
            Ok(Reached::Plain { remote, port, why })
        }
        Err(failure) => Err(Failure::Handshake(failure)),
    }
}

/// Counts a completed handshake's time, in either role.
async fn timed<T, E>(ctx: &Context, handshake: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    let started = Instant::now();
    let result = handshake.await;
    if result.is_ok() {
        ctx.metrics.handshake(started.elapsed());
    }
    result
}

/// `None` when `future` did not finish within --first-bytes-timeout: the one limit on how
/// long an accepted socket may take to say what it is, whatever the front.
pub(crate) async fn within_first_bytes_timeout<T>(
    ctx: &Context,
    future: impl Future<Output = T>,
) -> Option<T> {
    tokio::time::timeout(ctx.config.first_bytes_timeout, future)
        .await
        .ok()
}

/// Reads the accepted socket's first bytes until `decide` can tell what it speaks, never
/// past the decision point: the rest stays in the socket for the relay.
async fn first_bytes<T>(
    stream: &mut TcpStream,
    traffic: &Traffic,
    decide: impl Fn(&[u8]) -> Option<T>,
    ctx: &Context,
) -> Result<(Vec<u8>, T), Failure> {
    let read = async {
        let mut first = [0u8; CLIENT_HELLO_LEN];
        let mut len = 0;
        loop {
            let n = stream
                .read(&mut first[len..])
                .await
                .map_err(Failure::AcceptedIo)?;
            if n == 0 {
                return Err(Failure::ClosedEarly { received: len });
            }
            Traffic::add(&traffic.accepted_in, n);
            len += n;
            if let Some(decided) = decide(&first[..len]) {
                return Ok((first[..len].to_vec(), decided));
            }
        }
    };
    within_first_bytes_timeout(ctx, read)
        .await
        .unwrap_or(Err(Failure::FirstBytesTimeout))
}

/// A plain connection to `dial`'s destination (passthrough, v1 fallback).
async fn connect_plain(ctx: &Context, dial: &Dial) -> Result<(TcpStream, UpstreamPort), Failure> {
    connect_within(ctx, dial.connect(&ctx.loop_guard)).await
}

/// Connecting takes at most --handshake-timeout, whatever the way.
async fn connect_within<T>(
    ctx: &Context,
    connect: impl Future<Output = io::Result<T>>,
) -> Result<T, Failure> {
    tokio::time::timeout(ctx.config.handshake_timeout, connect)
        .await
        .map_err(|_| Failure::ConnectTimeout)?
        .map_err(Failure::Connect)
}

/// Connects to the node's `port` on loopback as `peer` itself: bound to the peer's address
/// and port, so that the node's per-peer logic (bans, eviction, `getpeerinfo`) sees the real
/// peer. The node's replies find their way back through the policy route that
/// `bip324-redirect inbound enable` installs.
async fn connect_as(ctx: &Context, peer: SocketAddr, port: u16) -> io::Result<TcpStream> {
    let node = match peer {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    };
    let binder = ctx.binder.as_ref();
    let binder = binder.ok_or_else(|| io::Error::other("inbound mode is not set up"))?;
    binder.connect(peer, node).await
}
