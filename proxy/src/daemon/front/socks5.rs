//! The SOCKS5 front (`--socks5`): for clients with a proxy option and no redirect (Bitcoin
//! Core's `-proxy`, btcd's `--proxy`, ...). The negotiation is sans-IO
//! (`bip324_protocol::socks5`); this drives it, answers Tor's RESOLVE, serves only Bitcoin
//! ports, and resolves names here unless an upstream proxy (Tor) should. After CONNECT the
//! connection is an outbound one like a redirected one, but for the reply it is owed: sent
//! once the destination is reached in v2 (`connection::open`), so that a refused,
//! unreachable, timed-out or v1-only destination comes back as a code the client
//! understands, rather than as a close after "success".

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::{Accepted, Arrival, Front, Refusal, Route};
use crate::daemon::connection::{Failure, within_first_bytes_timeout};
use crate::daemon::context::Context;
use crate::daemon::logging::LogSafe;
use crate::daemon::original_dst::canonical;
use crate::daemon::socks5::reply_for_connect_error;
use crate::daemon::socks5::wire::{
    self, Negotiation, Reply as Code, Request, Step, Target, WireError,
};
use crate::daemon::upstream::{Dial, lookup};
use crate::daemon::v2_connect::HandshakeError;
use bip324_protocol::Network;

pub(super) async fn arrive(mut stream: TcpStream, client: SocketAddr, ctx: &Context) -> Arrival {
    let refused = |refusal| Arrival::Refused { client, refusal };
    let via = ctx.config.upstream_socks5;
    // With an upstream (Tor), a client's credentials isolate its streams there: asked for
    // whenever it offers them.
    let negotiation = within_first_bytes_timeout(ctx, negotiate(&mut stream, via.is_some()));
    let Request {
        command,
        target,
        credentials,
    } = match negotiation.await {
        Some(Ok(Negotiated::Request(request))) => request,
        Some(Ok(Negotiated::Gone)) => return Arrival::Served,
        Some(Ok(Negotiated::Refused(why))) => {
            if let Some(code) = why.reply() {
                ctx.metrics.socks5_reply(code);
            }
            return refused(Refusal::Socks5Request(why));
        }
        Some(Err(e)) => {
            // What already arrived is dropped, so that the close is a FIN and not a reset.
            let _ = stream.try_read(&mut [0u8; 1024]);
            return refused(Refusal::NotSocks5(e));
        }
        None => return refused(Refusal::NoSocks5Request),
    };
    let mut dial = Dial {
        target,
        via,
        credentials,
    };
    if command == wire::RESOLVE {
        answer_resolve(&mut stream, ctx, client, &dial).await;
        return Arrival::Served;
    }
    let port = dial.target.port();
    let network = ctx
        .config
        .socks5_network
        .or_else(|| Network::from_port(port))
        .filter(|_| ctx.config.socks5_ports.contains(&port));
    let Some(network) = network else {
        send(&mut stream, ctx, Code::NotAllowed, None).await;
        return refused(Refusal::PortNotServed(dial.target));
    };
    // With an upstream proxy, names go to it unresolved: this host never looks them up.
    if let (Target::Domain(name, port), None) = (&dial.target, via) {
        match resolve_here(name, *port, ctx).await {
            Ok(addr) => dial.target = Target::Ip(canonical(addr)),
            Err(error) => {
                send(&mut stream, ctx, Code::HostUnreachable, None).await;
                let target = dial.target;
                return refused(Refusal::Unresolvable { target, error });
            }
        }
    }
    // Listed by address; a name sent upstream unresolved shows as the unspecified address.
    let destination = match &dial.target {
        Target::Ip(addr) => canonical(*addr),
        Target::Domain(_, port) => SocketAddr::from(([0, 0, 0, 0], *port)),
    };
    Arrival::Connection(Box::new(Accepted {
        stream,
        front: Front::Socks5,
        client,
        destination,
        route: Route::Out {
            dial,
            network: Some(network),
        },
        reply: Some(Reply(())),
        pending: None,
    }))
}

/// The reply a CONNECT waits for; `connection` sends it once the outcome is known.
pub(crate) struct Reply(());

impl Reply {
    pub(crate) async fn refuse(self, stream: &mut TcpStream, ctx: &Context) {
        send(stream, ctx, Code::NotAllowed, None).await;
    }

    pub(crate) async fn fail(self, stream: &mut TcpStream, ctx: &Context, failure: &Failure) {
        send(stream, ctx, code_for(failure), None).await;
    }

    pub(crate) async fn succeed(
        self,
        stream: &mut TcpStream,
        ctx: &Context,
        bound: Option<SocketAddr>,
    ) -> std::io::Result<()> {
        try_send(stream, ctx, Code::Succeeded, bound).await
    }
}

/// The reply code a failure to reach the destination means to the client.
fn code_for(failure: &Failure) -> Code {
    let handshake = match failure {
        Failure::Connect(e) => return reply_for_connect_error(e),
        Failure::Handshake(failure) => &failure.error,
        _ => return Code::TtlExpired,
    };
    match handshake {
        HandshakeError::Connect(e) => reply_for_connect_error(e),
        HandshakeError::Timeout => Code::TtlExpired,
        // It closed or reset on our key: it does not speak v2.
        HandshakeError::Closed | HandshakeError::Io(_) => Code::ConnectionRefused,
        HandshakeError::Protocol(_) | HandshakeError::Entropy(_) | HandshakeError::Setup(_) => {
            Code::GeneralFailure
        }
    }
}

/// How a negotiation ended.
enum Negotiated {
    Request(Request),
    /// Answered with a failure code (or no acceptable method) and closed.
    Refused(wire::Refusal),
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
async fn answer_resolve(stream: &mut TcpStream, ctx: &Context, client: SocketAddr, dial: &Dial) {
    let resolved =
        tokio::time::timeout(ctx.config.handshake_timeout, dial.resolve(&ctx.loop_guard));
    let (code, ip) = match resolved.await {
        Ok(Ok(ip)) => (Code::Succeeded, Some(ip)),
        Ok(Err(e)) => (reply_for_connect_error(&e), None),
        Err(_) => (Code::TtlExpired, None),
    };
    debug!(client = %client, front = %Front::Socks5, reply = code.as_str(), "RESOLVE {}: {ip:?}", LogSafe(dial));
    send(stream, ctx, code, ip.map(|ip| SocketAddr::new(ip, 0))).await;
}

/// A reply after which the connection ends whatever happens: a failed write changes nothing.
async fn send(stream: &mut TcpStream, ctx: &Context, code: Code, bound: Option<SocketAddr>) {
    let _ = try_send(stream, ctx, code, bound).await;
}

async fn try_send(
    stream: &mut TcpStream,
    ctx: &Context,
    code: Code,
    bound: Option<SocketAddr>,
) -> std::io::Result<()> {
    ctx.metrics.socks5_reply(code);
    stream.write_all(&wire::reply(code, bound)).await
}
