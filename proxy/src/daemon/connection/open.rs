//! Everything before relaying: the client's first bytes tell v1 from v2, then the
//! destination is reached in v2 (or, with `--v1-fallback`, in v1 when Bitcoin Core's rule
//! allows), or the bytes pass through.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::super::config::{Config, Shaping};
use super::super::labels::TransportKind;
use super::super::loop_guard::UpstreamPort;
use super::super::registry::Entry;
use super::super::relay::{CloseReason, RelayContext, Side, Traffic, Unread, relay};
use super::super::upstream::Dial;
use super::super::v2_connect::{Established, connect_v2};
use super::Context;
use super::failure::Failure;
use bip324_protocol::{
    CLIENT_HELLO_LEN, Chain, ClientHello, Event, Magic, NetworkLabel, Rewrite, Session, Splice,
    classify_client_hello,
};

/// A connection ready to relay.
pub(super) struct Opened {
    remote: TcpStream,
    _port: UpstreamPort,
    /// Read from the client to tell v1 from v2; they go first.
    first_bytes: Vec<u8>,
    pub(super) transport: Transport,
}

/// How the connection is carried; a v2 one holds its session.
pub(super) enum Transport {
    V2 {
        session: Box<Session>,
        /// Read from the remote with its version packet, beyond what the decoder took.
        unread: Vec<u8>,
    },
    V1Fallback {
        why: String,
    },
    Passthrough,
}

impl Transport {
    pub(super) fn kind(&self) -> TransportKind {
        match self {
            Transport::V2 { .. } => TransportKind::V2,
            Transport::V1Fallback { .. } => TransportKind::V1Fallback,
            Transport::Passthrough => TransportKind::Passthrough,
        }
    }

    pub(super) fn session_id(&self) -> Option<[u8; 32]> {
        match self {
            Transport::V2 { session, .. } => Some(session.session_id),
            _ => None,
        }
    }
}

impl Opened {
    /// A v2 session established before the client's first bytes were known (SOCKS5).
    pub(super) fn v2(established: Established, first_bytes: Vec<u8>) -> Self {
        Opened {
            remote: established.remote,
            _port: established.port,
            first_bytes,
            transport: Transport::V2 {
                session: established.session,
                unread: established.unread,
            },
        }
    }

    pub(super) fn plain(
        remote: (TcpStream, UpstreamPort),
        first_bytes: Vec<u8>,
        transport: Transport,
    ) -> Self {
        Opened {
            remote: remote.0,
            _port: remote.1,
            first_bytes,
            transport,
        }
    }

    /// Dropping the remote connection will reset it.
    pub(super) fn reset_remote_on_close(&self) {
        super::reset_on_close(&self.remote);
    }

    /// Relays until the connection ends, the client's first bytes first, with the options of
    /// `config` that touch the wire (`--user-agent-suffix`, `--shaping`).
    pub(super) async fn relay<E: Fn(Side, Event) + Sync>(
        &mut self,
        client: &mut TcpStream,
        cx: &RelayContext<'_, E>,
        config: &Config,
    ) -> CloseReason {
        let user_agent_suffix = config.user_agent_suffix;
        let remote = &mut self.remote;
        // A v1 client's first bytes start with its network's magic.
        let rewrite = match (&self.transport, self.first_bytes.first_chunk::<4>()) {
            (Transport::Passthrough, _) | (_, None) => None,
            (_, Some(magic)) => user_agent_suffix.then(|| {
                Rewrite::user_agent_suffix(Magic(*magic), "bip324-proxy", env!("CARGO_PKG_VERSION"))
            }),
        };
        match &mut self.transport {
            Transport::V2 { session, unread } => {
                let unread = Unread {
                    client: &self.first_bytes,
                    remote: unread,
                };
                let Session {
                    encoder, decoder, ..
                } = &mut **session;
                if config.shaping != Shaping::None {
                    encoder.pad_flights_to_buckets();
                }
                match rewrite {
                    Some(first) => {
                        let mut up = Chain {
                            first,
                            second: encoder,
                        };
                        relay(client, remote, &mut up, decoder, unread, cx).await
                    }
                    None => relay(client, remote, encoder, decoder, unread, cx).await,
                }
            }
            Transport::V1Fallback { .. } | Transport::Passthrough => {
                let unread = Unread {
                    client: &self.first_bytes,
                    remote: &[],
                };
                let down = &mut Splice::default();
                match rewrite {
                    Some(up) => relay(client, remote, &mut { up }, down, unread, cx).await,
                    None => relay(client, remote, &mut Splice::default(), down, unread, cx).await,
                }
            }
        }
    }
}

/// Everything before relaying: the client's first bytes, then the destination.
pub(super) async fn open(
    client: &mut TcpStream,
    destination: SocketAddr,
    ctx: &Context,
    entry: &Entry,
    events: &(impl Fn(Side, Event) + Sync),
) -> Result<Opened, Failure> {
    let dial = Dial::to(destination, ctx.config.upstream_socks5);
    let traffic = &entry.traffic;
    let hello = read_hello(client, traffic);
    let (first_bytes, hello) = tokio::time::timeout(ctx.config.first_bytes_timeout, hello)
        .await
        .map_err(|_| Failure::ClientTimeout)??;
    let ClientHello::V1(magic) = hello else {
        let remote = connect_plain(ctx, &dial).await?;
        return Ok(Opened::plain(remote, first_bytes, Transport::Passthrough));
    };
    entry.set_network(NetworkLabel(magic).to_string());

    let mut handshake_events = |event| events(Side::Remote, event);
    let timeout = ctx.config.handshake_timeout;
    let handshake_started = Instant::now();
    let attempt = connect_v2(
        &ctx.loop_guard,
        &dial,
        (magic, ctx.config.garbage_len),
        timeout,
        traffic,
        &mut handshake_events,
    );
    match attempt.await {
        Ok(Established {
            remote,
            port,
            session,
            unread,
        }) => {
            ctx.metrics.handshake(handshake_started.elapsed());
            Ok(Opened {
                remote,
                _port: port,
                first_bytes,
                transport: Transport::V2 { session, unread },
            })
        }
        Err(failure) => {
            if !(ctx.config.v1_fallback && failure.allows_v1_fallback()) {
                return Err(Failure::Handshake(failure));
            }
            let remote = connect_plain(ctx, &dial).await?;
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
pub(super) async fn read_hello(
    client: &mut TcpStream,
    traffic: &Traffic,
) -> Result<(Vec<u8>, ClientHello), Failure> {
    read_first_bytes(client, traffic, |first| {
        match classify_client_hello(first) {
            ClientHello::NeedMore => None,
            hello => Some(hello),
        }
    })
    .await
}

/// Reads a client's (or peer's) first bytes until `decide` can tell what it speaks, never
/// past the decision point: the rest stays in the socket for the relay.
pub(super) async fn read_first_bytes<T>(
    client: &mut TcpStream,
    traffic: &Traffic,
    decide: impl Fn(&[u8]) -> Option<T>,
) -> Result<(Vec<u8>, T), Failure> {
    let mut first = [0u8; CLIENT_HELLO_LEN];
    let mut len = 0;
    loop {
        let n = client
            .read(&mut first[len..])
            .await
            .map_err(Failure::ClientIo)?;
        if n == 0 {
            return Err(Failure::ClientClosedEarly { received: len });
        }
        Traffic::add(&traffic.client_in, n);
        len += n;
        if let Some(decided) = decide(&first[..len]) {
            return Ok((first[..len].to_vec(), decided));
        }
    }
}

pub(super) async fn connect_plain(
    ctx: &Context,
    dial: &Dial,
) -> Result<(TcpStream, UpstreamPort), Failure> {
    tokio::time::timeout(ctx.config.handshake_timeout, dial.connect(&ctx.loop_guard))
        .await
        .map_err(|_| Failure::ConnectTimeout)?
        .map_err(Failure::Connect)
}
