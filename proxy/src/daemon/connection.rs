//! The life of one redirected connection: check it, tell v1 from v2, reach the destination,
//! relay, and log one line when it opens and one when it ends.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::Config;
use super::log_budget::LogBudget;
use super::loop_guard::{LoopGuard, Refusal, UpstreamPort};
use super::metrics::{Direction, Metrics};
use super::original_dst::original_destination;
use super::registry::{Entry, Registry};
use super::relay::{CloseReason, RelayContext, Side, Traffic, relay};
use super::v2_connect::{HandshakeError, HandshakeFailure, V2Connection, connect_v2};
use crate::protocol::client_hello::PREFIX_LEN;
use crate::protocol::splice::Splice;
use crate::protocol::{
    ClientHello, Event, NetworkLabel, Pipe, ProtocolError, classify_client_hello,
};

/// What all connections share.
pub struct Context {
    pub config: Config,
    /// Addresses the proxy accepts on: a connection "to" one of them was not redirected.
    pub listening: Vec<SocketAddr>,
    pub loop_guard: Arc<LoopGuard>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Refused connections log at most this many lines a second; the metrics count them all.
    pub refusal_log: LogBudget,
}

impl Context {
    pub fn new(config: Config, listening: Vec<SocketAddr>) -> Self {
        Context {
            config,
            listening,
            loop_guard: Arc::default(),
            registry: Arc::default(),
            metrics: Arc::default(),
            refusal_log: LogBudget::per_second(10),
        }
    }
}

/// Why a connection ended before it was relayed.
#[derive(Debug)]
enum Failure {
    ClientTimeout,
    ClientClosedEarly { received: usize },
    ClientIo(io::Error),
    Connect(io::Error),
    ConnectTimeout,
    Handshake(HandshakeFailure),
    Shutdown,
}

impl Failure {
    /// Its `reason` label in the metrics.
    fn label(&self) -> &'static str {
        match self {
            Failure::ClientTimeout => "client_timeout",
            Failure::ClientClosedEarly { .. } => "client_closed",
            Failure::ClientIo(_) => "client_error",
            Failure::Connect(_) => "connect_error",
            Failure::ConnectTimeout => "connect_timeout",
            Failure::Handshake(h) => match h.error {
                HandshakeError::Connect(_) => "connect_error",
                HandshakeError::Timeout => "handshake_timeout",
                HandshakeError::Closed => "handshake_closed",
                HandshakeError::Io(_) | HandshakeError::Entropy(_) => "handshake_error",
                HandshakeError::Protocol(_) => "handshake_protocol",
            },
            Failure::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::ClientTimeout => f.write_str(
                "client sent too few bytes to tell v1 from v2 within --first-bytes-timeout",
            ),
            Failure::ClientClosedEarly { received } => write!(
                f,
                "client closed after {received} bytes, before its transport could be told"
            ),
            Failure::ClientIo(e) => write!(f, "client connection failed: {e}"),
            Failure::Connect(e) => write!(f, "cannot connect to the destination: {e}"),
            Failure::ConnectTimeout => {
                f.write_str("cannot connect to the destination within --handshake-timeout")
            }
            Failure::Handshake(h) => write!(f, "{h}"),
            Failure::Shutdown => f.write_str("proxy shutting down"),
        }
    }
}

/// Handles one accepted connection to its end. Never panics on peer input; every outcome is
/// logged: one line when the connection opens and one when it ends, or one if it fails first.
pub async fn handle(
    mut client: TcpStream,
    client_addr: SocketAddr,
    id: u64,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) {
    let destination = match accept_check(&client, client_addr, &ctx) {
        Ok(destination) => destination,
        // A loop is a configuration problem; a direct connection (a probe, a curious local
        // user) is not.
        Err(refusal) => {
            ctx.metrics.refused(refusal.label());
            let Some(suppressed) = ctx.refusal_log.take(Instant::now()) else {
                return;
            };
            let more = match suppressed {
                0 => String::new(),
                n => format!(" ({n} more refused since the last such line, not logged)"),
            };
            if matches!(refusal, Refusal::OwnUpstream) {
                warn!(client = %client_addr, "refused connection: {refusal}{more}");
            } else {
                info!(client = %client_addr, "refused connection: {refusal}{more}");
            }
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let started = Instant::now();
    let registration = ctx.registry.register(id, client_addr, destination);
    let entry = &registration.entry;
    let traffic = &entry.traffic;
    let events = |side: Side, event: Event| account(entry, &ctx.metrics, side, event);
    let result = tokio::select! {
        result = open(&mut client, destination, &ctx, entry, &events) => result,
        _ = shutdown.cancelled() => Err(Failure::Shutdown),
    };
    let network = entry.network().unwrap_or_else(|| "unknown".to_string());
    let t = |c| Traffic::get(c);
    let mut opened = match result {
        Ok(opened) => opened,
        Err(failure) => {
            ctx.metrics.failed(failure.label());
            let hint = match &failure {
                Failure::Handshake(h) if h.allows_v1_fallback() && !ctx.config.v1_fallback => {
                    "; it may be a v1-only node: --v1-fallback would retry it in plaintext"
                }
                _ => "",
            };
            warn!(
                client = %client_addr,
                destination = %destination,
                network = %network,
                duration = %Seconds(started),
                client_in = t(&traffic.client_in),
                remote_in = t(&traffic.remote_in),
                remote_out = t(&traffic.remote_out),
                "connection failed: {failure}{hint}"
            );
            return;
        }
    };
    let label = opened.transport.label();
    entry.set_opened(label, opened.transport.session_id());
    ctx.metrics.opened(opened.transport.metrics_label());
    match &opened.transport {
        Transport::V2 { session_id } => info!(
            client = %client_addr,
            destination = %destination,
            network = %network,
            transport = %label,
            session_id = %hex::encode(session_id),
            "connection opened"
        ),
        Transport::V1Fallback { why } => warn!(
            client = %client_addr,
            destination = %destination,
            network = %network,
            transport = %label,
            "connection opened in PLAINTEXT v1 (--v1-fallback): {why}"
        ),
        Transport::Passthrough => info!(
            client = %client_addr,
            destination = %destination,
            network = %network,
            transport = %label,
            "connection opened: the client does not speak v1, its bytes pass unchanged"
        ),
    }
    let cx = RelayContext {
        traffic,
        events: &events,
        shutdown: &shutdown,
    };
    let reason = opened.relay(&mut client, &cx).await;
    info!(
        client = %client_addr,
        destination = %destination,
        duration = %Seconds(started),
        client_in = t(&traffic.client_in),
        client_out = t(&traffic.client_out),
        remote_in = t(&traffic.remote_in),
        remote_out = t(&traffic.remote_out),
        reason = %reason,
        "connection closed"
    );
}

/// Counts a message or packet for the connection's status and the metrics, and logs it at
/// debug level.
fn account(entry: &Entry, metrics: &Metrics, from: Side, event: Event) {
    log_event(from, event);
    match event {
        Event::Message { command, .. } => {
            let (counter, direction) = match from {
                Side::Client => (&entry.messages_from_client, Direction::ClientToRemote),
                Side::Remote => (&entry.messages_to_client, Direction::RemoteToClient),
            };
            Traffic::add(counter, 1);
            metrics.message(direction, &command);
        }
        Event::Decoy { .. } => metrics.decoy(),
        Event::Dropped { .. } => metrics.dropped(),
        Event::VersionPacket { .. } => {}
    }
}

/// Time since a start, as seconds with millisecond precision.
struct Seconds(Instant);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3}s", self.0.elapsed().as_secs_f64())
    }
}

fn accept_check(
    client: &TcpStream,
    client_addr: SocketAddr,
    ctx: &Context,
) -> Result<SocketAddr, Refusal> {
    let local = client.local_addr().map_err(Refusal::Unreadable)?;
    let destination = original_destination(client).map_err(Refusal::Unreadable)?;
    ctx.loop_guard
        .check(client_addr, destination, local, &ctx.listening)
}

/// A connection ready to relay.
struct Opened {
    remote: TcpStream,
    _port: UpstreamPort,
    /// Read from the client to tell v1 from v2; they go first.
    first_bytes: Vec<u8>,
    transport: Transport,
    v2: Option<Box<V2Connection>>,
}

enum Transport {
    V2 { session_id: [u8; 32] },
    V1Fallback { why: String },
    Passthrough,
}

impl Transport {
    /// As logs and the control socket name it.
    fn label(&self) -> &'static str {
        match self {
            Transport::V2 { .. } => "v2",
            Transport::V1Fallback { .. } => "v1-fallback",
            Transport::Passthrough => "passthrough",
        }
    }

    fn metrics_label(&self) -> &'static str {
        match self {
            Transport::V2 { .. } => "v2",
            Transport::V1Fallback { .. } => "v1_fallback",
            Transport::Passthrough => "passthrough",
        }
    }

    fn session_id(&self) -> Option<[u8; 32]> {
        match self {
            Transport::V2 { session_id } => Some(*session_id),
            _ => None,
        }
    }
}

impl Opened {
    fn plain(
        remote: (TcpStream, UpstreamPort),
        first_bytes: Vec<u8>,
        transport: Transport,
    ) -> Self {
        Opened {
            remote: remote.0,
            _port: remote.1,
            first_bytes,
            transport,
            v2: None,
        }
    }

    async fn relay<E: Fn(Side, Event) + Sync>(
        &mut self,
        client: &mut TcpStream,
        cx: &RelayContext<'_, E>,
    ) -> CloseReason {
        let (remote, first) = (&mut self.remote, &self.first_bytes[..]);
        match &mut self.v2 {
            Some(v2) => forward(client, remote, first, &mut v2.encoder, &mut v2.decoder, cx).await,
            None => {
                let (up, down) = (&mut Splice::default(), &mut Splice::default());
                forward(client, remote, first, up, down, cx).await
            }
        }
    }
}

/// Relays, after the client's first bytes.
async fn forward<E: Fn(Side, Event) + Sync>(
    client: &mut TcpStream,
    remote: &mut TcpStream,
    first_bytes: &[u8],
    up: &mut impl Pipe,
    down: &mut impl Pipe,
    cx: &RelayContext<'_, E>,
) -> CloseReason {
    if let Err(error) = push_first_bytes(up, first_bytes, cx.events) {
        return CloseReason::Protocol {
            side: Side::Client,
            error,
        };
    }
    relay(client, remote, up, down, cx).await
}

/// The client's first bytes (at most `PREFIX_LEN`, less than any pipe's staging) go in before
/// anything else it sends.
fn push_first_bytes(
    up: &mut impl Pipe,
    first_bytes: &[u8],
    events: &impl Fn(Side, Event),
) -> Result<(), ProtocolError> {
    let taken = up.push(first_bytes, &mut |event| events(Side::Client, event))?;
    assert_eq!(taken, first_bytes.len(), "staging holds the first bytes");
    Ok(())
}

fn log_event(from: Side, event: Event) {
    let to = match from {
        Side::Client => "remote",
        Side::Remote => "client",
    };
    match event {
        Event::Message {
            command,
            payload_len,
        } => debug!("{from} -> {to}: {} ({payload_len} bytes)", command.name()),
        Event::Decoy { contents_len } => {
            debug!("{from}: skipped a decoy packet ({contents_len} bytes)")
        }
        Event::VersionPacket { contents_len } => {
            debug!("{from}: version packet authenticated ({contents_len} bytes of contents)")
        }
        Event::Dropped {
            reason,
            contents_len,
        } => debug!("{from} -> {to}: dropped a message of {contents_len} bytes: {reason}"),
    }
}

/// Everything before relaying: the client's first bytes, then the destination.
async fn open(
    client: &mut TcpStream,
    destination: SocketAddr,
    ctx: &Context,
    entry: &Entry,
    events: &(impl Fn(Side, Event) + Sync),
) -> Result<Opened, Failure> {
    let traffic = &entry.traffic;
    let hello = read_hello(client, traffic);
    let (first_bytes, hello) = tokio::time::timeout(ctx.config.first_bytes_timeout, hello)
        .await
        .map_err(|_| Failure::ClientTimeout)??;
    let ClientHello::V1(magic) = hello else {
        let remote = connect_plain(ctx, destination).await?;
        return Ok(Opened::plain(remote, first_bytes, Transport::Passthrough));
    };
    entry.set_network(NetworkLabel(magic).to_string());

    let mut handshake_events = |event| events(Side::Remote, event);
    let timeout = ctx.config.handshake_timeout;
    let handshake_started = Instant::now();
    let attempt = connect_v2(
        &ctx.loop_guard,
        destination,
        magic,
        timeout,
        traffic,
        &mut handshake_events,
    );
    match attempt.await {
        Ok((remote, port, v2)) => {
            ctx.metrics.handshake(handshake_started.elapsed());
            Ok(Opened {
                remote,
                _port: port,
                first_bytes,
                transport: Transport::V2 {
                    session_id: v2.session_id,
                },
                v2: Some(Box::new(v2)),
            })
        }
        Err(failure) => {
            if !(ctx.config.v1_fallback && failure.allows_v1_fallback()) {
                return Err(Failure::Handshake(failure));
            }
            let remote = connect_plain(ctx, destination).await?;
            let why = format!("the v2 attempt failed: {failure}");
            Ok(Opened::plain(
                remote,
                first_bytes,
                Transport::V1Fallback { why },
            ))
        }
    }
}

/// Reads until the first bytes tell v1 from v2; returns them, all kept for replay.
async fn read_hello(
    client: &mut TcpStream,
    traffic: &Traffic,
) -> Result<(Vec<u8>, ClientHello), Failure> {
    let mut first = [0u8; PREFIX_LEN];
    let mut len = 0;
    loop {
        // Never read past the decision point: the rest stays in the socket for the relay.
        let n = client
            .read(&mut first[len..])
            .await
            .map_err(Failure::ClientIo)?;
        if n == 0 {
            return Err(Failure::ClientClosedEarly { received: len });
        }
        Traffic::add(&traffic.client_in, n);
        len += n;
        match classify_client_hello(&first[..len]) {
            ClientHello::NeedMore => continue,
            hello => return Ok((first[..len].to_vec(), hello)),
        }
    }
}

async fn connect_plain(
    ctx: &Context,
    destination: SocketAddr,
) -> Result<(TcpStream, UpstreamPort), Failure> {
    tokio::time::timeout(
        ctx.config.handshake_timeout,
        ctx.loop_guard.connect(destination),
    )
    .await
    .map_err(|_| Failure::ConnectTimeout)?
    .map_err(Failure::Connect)
}
