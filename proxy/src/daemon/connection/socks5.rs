//! The SOCKS5 front end (`--socks5`): for clients with a proxy option and no redirect
//! (Bitcoin Core's `-proxy`, btcd's `--proxy`, ...). After CONNECT the connection is a
//! redirected one: a v1 client is upgraded, a v2 client passes through, the network comes
//! from the client's magic. The reply is sent only once the destination is reached in v2, so
//! a refused, unreachable, timed-out or v1-only destination comes back as a reply code the
//! client understands, rather than as a close after "success". Tor's RESOLVE is answered
//! too, by the upstream proxy when there is one.
//!
//! The negotiation itself is sans-IO (`bip324_protocol::socks5`): this is its driver. Names
//! outside hostname syntax are refused there; destinations that are this host, or no single
//! remote host, are refused here (`destination::check`) after any local lookup.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::super::destination;
use super::super::labels::RefusalKind;
use super::super::logging::LogSafe;
use super::super::original_dst::canonical;
use super::super::relay::Side;
use super::super::socks5::reply_for_connect_error;
use super::super::socks5::wire::{
    self, Negotiation, Refusal, Reply, Request, Step, Target, WireError,
};
use super::super::upstream::{Dial, lookup};
use super::super::v2_connect::{HandshakeError, HandshakeFailure, connect_v2};
use super::failure::Failure;
use super::open::{Opened, Transport, connect_plain, read_hello};
use super::{Context, account, finish};
use bip324_control::Direction;
use bip324_protocol::{ClientHello, Event, Network, NetworkLabel};

/// Handles one SOCKS5 client to its end.
pub async fn handle(
    mut client: TcpStream,
    client_addr: SocketAddr,
    id: u64,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) {
    let client_addr = canonical(client_addr);
    let via = ctx.config.upstream_socks5;
    // With an upstream (Tor), a client's credentials isolate its streams there: asked for
    // whenever it offers them.
    let negotiation = negotiate(&mut client, via.is_some());
    let negotiation = tokio::time::timeout(ctx.config.first_bytes_timeout, negotiation);
    let Request {
        command,
        target,
        credentials,
    } = match negotiation.await {
        Ok(Ok(Negotiated::Request(request))) => request,
        Ok(Ok(Negotiated::Gone)) => return,
        Ok(Ok(Negotiated::Refused(why))) => {
            if let Some(code) = why.reply() {
                ctx.metrics.socks5_reply(code);
            }
            return log_refusal(&ctx, client_addr, None, &why.to_string());
        }
        Ok(Err(e)) => {
            // What already arrived is dropped, so that the close is a FIN and not a reset.
            let _ = client.try_read(&mut [0u8; 1024]);
            let why = format!("not a SOCKS5 client: {e}");
            return log_refusal(&ctx, client_addr, None, &why);
        }
        Err(_) => {
            let why = "no SOCKS5 request within --first-bytes-timeout";
            return log_refusal(&ctx, client_addr, None, why);
        }
    };
    if command == wire::RESOLVE {
        let dial = Dial {
            target,
            via,
            credentials,
        };
        return answer_resolve(&mut client, &ctx, client_addr, &dial).await;
    }
    let allowed = ctx.config.socks5_ports.contains(&target.port());
    let network = ctx
        .config
        .socks5_network
        .or_else(|| Network::from_port(target.port()));
    let (true, Some(network)) = (allowed, network) else {
        let why = format!(
            "CONNECT {target}: only the Bitcoin ports of --socks5-ports are served (not an open \
             relay)"
        );
        return refuse(&mut client, &ctx, client_addr, Reply::NotAllowed, &why).await;
    };
    // With an upstream proxy, names go to it unresolved: this host never looks them up.
    let asked = target.to_string();
    let target = match (target, via) {
        (Target::Domain(name, port), None) => match resolve_here(&name, port, &ctx).await {
            Ok(addr) => Target::Ip(canonical(addr)),
            Err(e) => {
                let why = format!("CONNECT {name}:{port}: cannot resolve the name: {e}");
                return refuse(&mut client, &ctx, client_addr, Reply::HostUnreachable, &why).await;
            }
        },
        (target, _) => target,
    };
    // Every address, given or looked up here; a name sent upstream is the upstream's to judge.
    if let Target::Ip(addr) = &target
        && let Err(forbidden) = destination::check(addr.ip())
    {
        ctx.metrics.refused(RefusalKind::ForbiddenDestination);
        let why = if asked == target.to_string() {
            format!("CONNECT {target}: {forbidden}")
        } else {
            format!("CONNECT {asked} ({target}): {forbidden}")
        };
        let kind = Some(RefusalKind::ForbiddenDestination);
        send_reply(&mut client, &ctx, Reply::NotAllowed, None).await;
        return log_refusal(&ctx, client_addr, kind, &why);
    }
    // Listed by address; a name sent upstream unresolved shows as the unspecified address.
    let destination = match &target {
        Target::Ip(addr) => canonical(*addr),
        Target::Domain(_, port) => SocketAddr::from(([0, 0, 0, 0], *port)),
    };
    let local = client.local_addr().map(canonical);
    if local.is_ok_and(|l| l == destination) || ctx.listening.contains(&destination) {
        let why = format!("CONNECT {target}: that is the proxy itself");
        return refuse(&mut client, &ctx, client_addr, Reply::NotAllowed, &why).await;
    }
    let dial = Dial {
        target,
        via,
        credentials,
    };

    let _ = client.set_nodelay(true);
    let started = Instant::now();
    let registration = ctx
        .registry
        .register(id, Direction::Outbound, client_addr, destination);
    let entry = &registration.entry;
    entry.set_network(network.name().to_string());
    let events = |side: Side, event: Event| account(entry, &ctx.metrics, side, event);
    let result = tokio::select! {
        result = open(&mut client, &dial, network, &ctx, entry, &events) => result,
        _ = shutdown.cancelled() => Err(Failure::Shutdown),
    };
    finish(
        client,
        client_addr,
        &dial.target.to_string(),
        started,
        entry,
        result,
        &ctx,
        &shutdown,
    )
    .await;
}

/// Reaches the destination, replies, then lets the client's first bytes decide.
async fn open(
    client: &mut TcpStream,
    dial: &Dial,
    network: Network,
    ctx: &Context,
    entry: &super::super::registry::Entry,
    events: &(impl Fn(Side, Event) + Sync),
) -> Result<Opened, Failure> {
    let traffic = &entry.traffic;
    let mut handshake_events = |event| events(Side::Remote, event);
    let handshake_started = Instant::now();
    let attempt = connect_v2(
        &ctx.loop_guard,
        dial,
        (network.magic(), ctx.config.garbage_len),
        ctx.config.handshake_timeout,
        traffic,
        &mut handshake_events,
    )
    .await;
    // A v2 session, or with --v1-fallback and Bitcoin Core's rule, a plain connection.
    let upstream = match attempt {
        Ok(established) => {
            ctx.metrics.handshake(handshake_started.elapsed());
            Ok(established)
        }
        Err(failure) if ctx.config.v1_fallback && failure.allows_v1_fallback() => {
            match connect_plain(ctx, dial).await {
                Ok(plain) => Err(plain),
                Err(failure) => {
                    let code = match &failure {
                        Failure::Connect(e) => reply_for_connect_error(e),
                        _ => Reply::TtlExpired,
                    };
                    send_reply(client, ctx, code, None).await;
                    return Err(Failure::Answered(Box::new(failure)));
                }
            }
        }
        Err(failure) => {
            send_reply(client, ctx, reply_for(&failure), None).await;
            return Err(Failure::Answered(Box::new(Failure::Handshake(failure))));
        }
    };
    let bound = match &upstream {
        Ok(established) => established.remote.local_addr().ok(),
        Err((plain, _)) => plain.local_addr().ok(),
    };
    ctx.metrics.socks5_reply(Reply::Succeeded);
    client
        .write_all(&wire::reply(Reply::Succeeded, bound))
        .await
        .map_err(Failure::ClientIo)?;
    let hello = read_hello(client, traffic);
    let (first_bytes, hello) = tokio::time::timeout(ctx.config.first_bytes_timeout, hello)
        .await
        .map_err(|_| Failure::ClientTimeout)??;
    match (upstream, hello) {
        (Ok(established), ClientHello::V1(magic)) if magic == network.magic() => {
            Ok(Opened::v2(established, first_bytes))
        }
        (Ok(established), ClientHello::V1(magic)) => {
            // Another network on this port: the session was made for the port's network.
            drop(established);
            entry.set_network(NetworkLabel(magic).to_string());
            let mut again = |event| events(Side::Remote, event);
            let timeout = ctx.config.handshake_timeout;
            let v2 = (magic, ctx.config.garbage_len);
            let session = connect_v2(&ctx.loop_guard, dial, v2, timeout, traffic, &mut again);
            Ok(Opened::v2(
                session.await.map_err(Failure::Handshake)?,
                first_bytes,
            ))
        }
        // A client that speaks v2 itself: its bytes pass unchanged on a plain connection.
        (_, ClientHello::NotV1) | (_, ClientHello::NeedMore) => {
            let remote = connect_plain(ctx, dial).await?;
            Ok(Opened::plain(remote, first_bytes, Transport::Passthrough))
        }
        (Err(plain), ClientHello::V1(_)) => {
            let why = "the v2 attempt failed (--v1-fallback)".to_string();
            Ok(Opened::plain(
                plain,
                first_bytes,
                Transport::V1Fallback { why },
            ))
        }
    }
}

/// The reply code a failed v2 attempt means to the client.
fn reply_for(failure: &HandshakeFailure) -> Reply {
    match &failure.error {
        HandshakeError::Connect(e) => reply_for_connect_error(e),
        HandshakeError::Timeout => Reply::TtlExpired,
        // It closed or reset on our key: it does not speak v2.
        HandshakeError::Closed | HandshakeError::Io(_) => Reply::ConnectionRefused,
        HandshakeError::Protocol(_) | HandshakeError::Entropy(_) | HandshakeError::Setup(_) => {
            Reply::GeneralFailure
        }
    }
}

/// How a negotiation ended.
enum Negotiated {
    Request(Request),
    /// Answered with a failure code (or no acceptable method) and closed.
    Refused(Refusal),
    /// The client went away while we answered it.
    Gone,
}

/// Drives the sans-IO negotiation: greeting, optional username/password, request. Reads at
/// most what the current message still lacks, so the client's bytes after its request stay
/// in the socket; a close before the request is reported as `WireError::Closed`.
async fn negotiate(
    client: &mut TcpStream,
    prefer_credentials: bool,
) -> Result<Negotiated, WireError> {
    let mut negotiation = Negotiation::new(prefer_credentials);
    let mut chunk = [0u8; 512];
    loop {
        match negotiation.step()? {
            Step::NeedMore => {
                let room = negotiation.wanted().clamp(1, chunk.len());
                match client.read(&mut chunk[..room]).await {
                    Ok(0) | Err(_) => return Err(WireError::Closed),
                    Ok(n) => negotiation.receive(&chunk[..n])?,
                }
            }
            Step::Send(bytes) => {
                if client.write_all(&bytes).await.is_err() {
                    return Ok(Negotiated::Gone);
                }
            }
            Step::Request(request) => return Ok(Negotiated::Request(request)),
            Step::Refuse { answer, why } => {
                let _ = client.write_all(&answer).await;
                return Ok(Negotiated::Refused(why));
            }
        }
    }
}

/// This host's lookup of a CONNECT's name (no upstream proxy), within the handshake timeout.
async fn resolve_here(name: &str, port: u16, ctx: &Context) -> std::io::Result<SocketAddr> {
    let timeout = ctx.config.handshake_timeout;
    match tokio::time::timeout(timeout, lookup(name, port)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Tor's RESOLVE: the name's address in the reply, within the handshake timeout; nothing is
/// connected, so no port restriction applies. Clients resolve seed names that often fail:
/// answers are logged at debug level, not as refusals.
async fn answer_resolve(
    client: &mut TcpStream,
    ctx: &Context,
    client_addr: SocketAddr,
    dial: &Dial,
) {
    let resolved =
        tokio::time::timeout(ctx.config.handshake_timeout, dial.resolve(&ctx.loop_guard));
    let (code, ip) = match resolved.await {
        Ok(Ok(ip)) => (Reply::Succeeded, Some(ip)),
        Ok(Err(e)) => (reply_for_connect_error(&e), None),
        Err(_) => (Reply::TtlExpired, None),
    };
    debug!(client = %client_addr, front = "socks5", reply = code.as_str(), "RESOLVE {}: {ip:?}", LogSafe(dial));
    send_reply(client, ctx, code, ip.map(|ip| SocketAddr::new(ip, 0))).await;
}

async fn send_reply(client: &mut TcpStream, ctx: &Context, code: Reply, bound: Option<SocketAddr>) {
    ctx.metrics.socks5_reply(code);
    let _ = client.write_all(&wire::reply(code, bound)).await;
}

async fn refuse(
    client: &mut TcpStream,
    ctx: &Context,
    client_addr: SocketAddr,
    code: Reply,
    why: &str,
) {
    send_reply(client, ctx, code, None).await;
    log_refusal(ctx, client_addr, None, why);
}

/// `why` may quote what the client sent: it is escaped.
fn log_refusal(ctx: &Context, client_addr: SocketAddr, kind: Option<RefusalKind>, why: &str) {
    if let Some(more) = ctx.refusal_log.take(Instant::now()) {
        let why = LogSafe(why);
        let refusal = kind.map(tracing::field::display);
        info!(client = %client_addr, front = "socks5", refusal, "refused SOCKS5 client: {why}{more}");
    }
}
