//! Inbound mode: a peer's connection to the local v1-only node, redirected here by the
//! kernel. The peer is answered as Bitcoin Core answers: in v1 when its first bytes are our
//! network's `version`, as a v2 responder otherwise. The node is reached on loopback from the
//! peer's own address and port, so its per-peer logic (bans, eviction, `getpeerinfo`) sees
//! the real peer; its messages gain `NODE_P2P_V2` where it advertises itself.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::super::config::Shaping;
use super::super::labels::{RefusalKind, TransportKind};
use super::super::logging::LogSafe;
use super::super::original_dst::{canonical, original_destination};
use super::super::relay::{RelayContext, Side, Traffic, Unread, relay};
use super::super::transparent::Binder;
use super::super::v2_connect::{HandshakeError, handshake};
use super::failure::Failure;
use super::open::read_first_bytes;
use super::{Context, Seconds, account};
use bip324_control::Direction;
use bip324_protocol::{
    Chain, Event, Magic, Network, PeerHello, ProtocolError, Rewrite, Role, Session, Splice,
    classify_peer_hello,
};

/// Handles one peer's connection to its end, logging as outbound connections do.
pub async fn handle(
    mut peer: TcpStream,
    peer_addr: SocketAddr,
    id: u64,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) {
    let peer_addr = canonical(peer_addr);
    let local = peer.local_addr().map(canonical);
    let reached = match original_destination(&peer) {
        Ok(Some(reached)) if local.is_ok_and(|local| local != reached) => reached,
        // Not redirected (conntrack records every connection; one not redirected has this
        // listener as its destination): someone dialled the inbound port, not the node.
        Ok(Some(_) | None) => return refuse(&ctx, peer_addr, RefusalKind::NotRedirected, None),
        Err(e) => return refuse(&ctx, peer_addr, RefusalKind::Unreadable, Some(e)),
    };
    let Some(network) = ctx
        .config
        .inbound_network
        .or_else(|| Network::from_port(reached.port()))
    else {
        if let Some(more) = ctx.inbound_log.take(Instant::now()) {
            warn!(
                peer = %peer_addr,
                reached = %reached,
                "refused inbound connection: port {} is no network's default port; give the \
                 node's network with --inbound-network{more}",
                reached.port()
            );
        }
        return;
    };
    // Until it reaches the node, a connection counts against its source address's and
    // network's shares; it may be evicted meanwhile to admit a newcomer (pending.rs).
    let Some(pending) = ctx.inbound_pending.enter(peer_addr.ip()) else {
        return refuse(&ctx, peer_addr, RefusalKind::TooManyPending, None);
    };
    let _ = peer.set_nodelay(true);
    let started = Instant::now();
    let registration = ctx
        .registry
        .register(id, Direction::Inbound, peer_addr, reached);
    let entry = &registration.entry;
    entry.set_network(network.name().to_string());
    let traffic = &entry.traffic;
    let events = |side: Side, event: Event| account(entry, &ctx.metrics, side, event);
    let result = tokio::select! {
        result = open(&mut peer, peer_addr, reached, network.magic(), &ctx, traffic, &events) => result,
        () = pending.evicted() => {
            return refuse(&ctx, peer_addr, RefusalKind::EvictedPending, None);
        }
        _ = shutdown.cancelled() => Err(Failure::Shutdown),
    };
    let t = |c| Traffic::get(c);
    drop(pending);
    let (mut node, transport) = match result {
        Ok(opened) => opened,
        Err(failure) => {
            ctx.metrics.failed(failure.reason());
            // Strangers cause these: counted always, logged within a budget.
            let Some(more) = ctx.inbound_log.take(Instant::now()) else {
                return;
            };
            warn!(
                direction = "inbound",
                peer = %peer_addr,
                reached = %reached,
                network = %network,
                failure = %failure.reason(),
                protocol_error = failure.protocol_error().map(ProtocolError::label),
                duration = %Seconds(started),
                peer_in = t(&traffic.client_in),
                peer_out = t(&traffic.client_out),
                "inbound connection failed: {}{more}",
                LogSafe(&failure)
            );
            return;
        }
    };
    let kind = transport.kind();
    let session_id = match &transport {
        PeerTransport::V2 { session, .. } => Some(session.session_id),
        PeerTransport::V1 { .. } => None,
    };
    entry.set_opened(kind, session_id);
    ctx.metrics.opened_inbound(kind);
    info!(
        direction = "inbound",
        peer = %peer_addr,
        reached = %reached,
        network = %network,
        transport = %kind,
        session_id = session_id.map(hex::encode),
        "inbound connection opened"
    );
    // Cover goes the way the node's bytes go, in v2 to the peer (never to a v1 peer).
    let cover = ctx.cover().filter(|_| kind == TransportKind::V2);
    let cx = RelayContext {
        traffic,
        events: &events,
        shutdown: &shutdown,
        cover: cover.as_ref().map(|c| (Side::Remote, c)),
    };
    let mut own = vec![reached];
    own.extend(&ctx.config.inbound_advertise);
    let advertise = Rewrite::advertise_v2(network.magic(), own);
    let reason = match transport {
        PeerTransport::V1 { first } => {
            let unread = Unread {
                client: &first,
                remote: &[],
            };
            let mut down = advertise;
            relay(
                &mut peer,
                &mut node,
                &mut Splice::default(),
                &mut down,
                unread,
                &cx,
            )
            .await
        }
        PeerTransport::V2 { session, unread } => {
            let Session {
                mut encoder,
                decoder,
                ..
            } = *session;
            if ctx.config.shaping != Shaping::None {
                encoder.pad_flights_to_buckets();
            }
            let unread = Unread {
                client: &unread,
                remote: &[],
            };
            let (mut up, mut down) = (
                decoder,
                Chain {
                    first: advertise,
                    second: encoder,
                },
            );
            relay(&mut peer, &mut node, &mut up, &mut down, unread, &cx).await
        }
    };
    info!(
        direction = "inbound",
        peer = %peer_addr,
        reached = %reached,
        duration = %Seconds(started),
        peer_in = t(&traffic.client_in),
        peer_out = t(&traffic.client_out),
        node_in = t(&traffic.remote_in),
        node_out = t(&traffic.remote_out),
        close = %reason.kind(),
        protocol_error = reason.protocol_error().map(ProtocolError::label),
        reason = %LogSafe(&reason),
        "inbound connection closed"
    );
}

fn refuse(ctx: &Context, peer: SocketAddr, kind: RefusalKind, error: Option<io::Error>) {
    ctx.metrics.refused(kind);
    if let Some(more) = ctx.inbound_log.take(Instant::now()) {
        let why = match (kind, error) {
            (_, Some(e)) => format!("its original destination cannot be read: {e}"),
            (RefusalKind::TooManyPending, None) => format!(
                "its address already has {} connections that have not reached the node",
                super::super::pending::PER_ADDRESS
            ),
            (RefusalKind::EvictedPending, None) => format!(
                "closed before it reached the node, to admit a newcomer: its network had {} \
                 such connections and its address held the most",
                super::super::pending::PER_NETWORK
            ),
            (_, None) => "it was not redirected by the inbound policy (a direct connection)".into(),
        };
        info!(direction = "inbound", peer = %peer, refusal = %kind, "refused inbound connection: {why}{more}");
    }
}

/// How the peer is carried.
enum PeerTransport {
    /// The peer chose v1: its first bytes go to the node first.
    V1 { first: Vec<u8> },
    /// A v2 session; `unread` came behind the peer's version packet.
    V2 {
        session: Box<Session>,
        unread: Vec<u8>,
    },
}

impl PeerTransport {
    fn kind(&self) -> TransportKind {
        match self {
            PeerTransport::V1 { .. } => TransportKind::V1,
            PeerTransport::V2 { .. } => TransportKind::V2,
        }
    }
}

/// The peer's first bytes, the node's connection, then the v2 handshake if the peer wants it.
async fn open(
    peer: &mut TcpStream,
    peer_addr: SocketAddr,
    reached: SocketAddr,
    magic: Magic,
    ctx: &Context,
    traffic: &Traffic,
    events: &(impl Fn(Side, Event) + Sync),
) -> Result<(TcpStream, PeerTransport), Failure> {
    // Bitcoin Core's responder rule decides on the peer's first bytes.
    let decide = |first: &[u8]| match classify_peer_hello(first, magic) {
        PeerHello::NeedMore => None,
        hello => Some(hello),
    };
    let hello = tokio::time::timeout(
        ctx.config.first_bytes_timeout,
        read_first_bytes(peer, traffic, decide),
    );
    let (first, hello) = hello.await.map_err(|_| Failure::ClientTimeout)??;
    let connect = tokio::time::timeout(
        ctx.config.handshake_timeout,
        connect_as(ctx.binder.as_ref(), peer_addr, reached.port()),
    );
    let node = connect
        .await
        .map_err(|_| Failure::ConnectTimeout)?
        .map_err(Failure::Connect)?;
    if hello == PeerHello::V1 {
        return Ok((node, PeerTransport::V1 { first }));
    }
    let handshake_started = Instant::now();
    let mut handshake_events = |event| events(Side::Client, event);
    let counters = (&traffic.client_in, &traffic.client_out);
    let responded = handshake(
        peer,
        (Role::Responder, magic, ctx.config.garbage_len),
        &first,
        counters,
        &mut handshake_events,
    );
    let (session, unread) = tokio::time::timeout(ctx.config.handshake_timeout, responded)
        .await
        .unwrap_or(Err(HandshakeError::Timeout))
        .map_err(Failure::PeerHandshake)?;
    ctx.metrics.handshake(handshake_started.elapsed());
    Ok((node, PeerTransport::V2 { session, unread }))
}

/// Connects to the node's `port` on loopback as `peer` itself: bound to the peer's address
/// and port. The node's replies find their way back through the policy route that
/// `bip324-redirect inbound enable` installs.
async fn connect_as(binder: Option<&Binder>, peer: SocketAddr, port: u16) -> io::Result<TcpStream> {
    let node = match peer {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    };
    let binder = binder.ok_or_else(|| io::Error::other("inbound mode is not set up"))?;
    binder.connect(peer, node).await
}
