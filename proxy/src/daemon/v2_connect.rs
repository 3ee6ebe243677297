//! The BIP-324 handshake over a socket: as initiator to a destination (outbound), or as
//! responder to a connecting peer (inbound).

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::net::TcpStream;

use super::loop_guard::{LoopGuard, UpstreamPort};
use super::relay::Traffic;
use super::upstream::Dial;
use bip324_driver::{Count, DriveError};
use bip324_protocol::{
    Event, HandshakeEntropy, KeyPrefix, Magic, ProtocolError, Role, Session, UsageError,
};
use bip324_proxy_args::{Config, GarbageLen};

/// What our side of every v2 handshake looks like on the wire: the garbage's length
/// (`--garbage-len`) and the key's first bytes (`--key-prefix`), in both roles.
#[derive(Clone, Copy)]
pub(crate) struct HandshakeLook {
    pub(crate) garbage: GarbageLen,
    pub(crate) key_prefix: KeyPrefix,
}

impl HandshakeLook {
    pub(crate) fn of(config: &Config) -> HandshakeLook {
        HandshakeLook {
            garbage: config.garbage_len,
            key_prefix: config.key_prefix.unwrap_or(KeyPrefix::NONE),
        }
    }
}

/// A connection whose v2 session is established: the remote's version packet authenticated.
pub(crate) struct Established {
    pub(crate) remote: TcpStream,
    pub(crate) port: UpstreamPort,
    pub(crate) session: Box<Session>,
    /// Read from the remote with the version packet, beyond what the decoder took.
    pub(crate) unread: Vec<u8>,
}

#[derive(Debug)]
pub(crate) enum HandshakeError {
    Connect(io::Error),
    Timeout,
    /// The destination closed the connection.
    Closed,
    Io(io::Error),
    Protocol(ProtocolError),
    Entropy(getrandom::Error),
    /// The entropy drawn cannot be used (a negligible chance).
    Setup(UsageError),
}

#[derive(Debug)]
pub(crate) struct HandshakeFailure {
    pub(crate) error: HandshakeError,
    /// Bytes sent to and received from the destination when it failed.
    pub(crate) sent: u64,
    pub(crate) received: u64,
}

impl HandshakeFailure {
    /// Bitcoin Core's rule for retrying in v1: the peer sent nothing at all (still in the key
    /// phase) although at least 24 bytes were sent, and it closed, reset, or (our addition
    /// for non-Core nodes that just wait) stayed silent until the timeout.
    pub(crate) fn allows_v1_fallback(&self) -> bool {
        let gave_up = matches!(
            self.error,
            HandshakeError::Closed | HandshakeError::Io(_) | HandshakeError::Timeout
        );
        gave_up && self.received == 0 && self.sent >= 24
    }
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let silent = self.received == 0;
        match &self.error {
            HandshakeError::Connect(e) => write!(f, "cannot connect to the destination: {e}"),
            HandshakeError::Timeout if silent => f.write_str(
                "destination sent nothing within --handshake-timeout (unreachable, or a v1-only node)",
            ),
            HandshakeError::Timeout => {
                f.write_str("v2 handshake did not complete within --handshake-timeout")
            }
            HandshakeError::Closed if silent => f.write_str(
                "destination closed the connection during the key exchange: it does not speak v2",
            ),
            HandshakeError::Closed => {
                f.write_str("destination closed the connection during the v2 handshake")
            }
            HandshakeError::Io(e) => write!(f, "v2 handshake failed: {e}"),
            HandshakeError::Protocol(e) => write!(f, "v2 handshake failed: {e}"),
            HandshakeError::Entropy(e) => write!(f, "no randomness for the v2 handshake: {e}"),
            HandshakeError::Setup(e) => write!(f, "cannot start the v2 handshake: {e}"),
        }
    }
}

/// Connects to `dial`'s destination and runs the handshake, all within `timeout`.
pub(crate) async fn connect_v2(
    guard: &Arc<LoopGuard>,
    dial: &Dial,
    (magic, look): (Magic, HandshakeLook),
    timeout: Duration,
    traffic: &Traffic,
    events: &mut (dyn FnMut(Event) + Send),
) -> Result<Established, HandshakeFailure> {
    let attempt = async {
        let (mut remote, port) = dial.connect(guard).await.map_err(HandshakeError::Connect)?;
        let counters = (&traffic.dialled_in, &traffic.dialled_out);
        let (session, unread) = handshake(
            &mut remote,
            (Role::Initiator, magic, look),
            &[],
            counters,
            events,
        )
        .await?;
        Ok(Established {
            remote,
            port,
            session,
            unread,
        })
    };
    let result = match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(HandshakeError::Timeout),
    };
    result.map_err(|error| HandshakeFailure {
        error,
        sent: Traffic::get(&traffic.dialled_out),
        received: Traffic::get(&traffic.dialled_in),
    })
}

fn fresh_entropy(garbage_len: GarbageLen) -> Result<HandshakeEntropy, getrandom::Error> {
    let mut secret_key = [0u8; 32];
    let mut aux_rand = [0u8; 32];
    let mut len = [0u8; 4];
    getrandom::fill(&mut secret_key)?;
    getrandom::fill(&mut aux_rand)?;
    getrandom::fill(&mut len)?;
    let mut garbage = vec![0u8; garbage_len.draw(u32::from_le_bytes(len))];
    getrandom::fill(&mut garbage)?;
    Ok(HandshakeEntropy {
        secret_key,
        aux_rand,
        garbage,
    })
}

/// `role`'s handshake over `stream` with fresh entropy and `look`, starting with `first` (bytes already
/// read from it), until the other side's version packet authenticated. `counters` count
/// bytes in and out.
pub(crate) async fn handshake(
    stream: &mut TcpStream,
    (role, magic, look): (Role, Magic, HandshakeLook),
    first: &[u8],
    (read, written): (&AtomicU64, &AtomicU64),
    events: &mut (dyn FnMut(Event) + Send),
) -> Result<(Box<Session>, Vec<u8>), HandshakeError> {
    let entropy = fresh_entropy(look.garbage).map_err(HandshakeError::Entropy)?;
    let mut count = Counters { read, written };
    let v2 = (role, magic, look.key_prefix, entropy);
    bip324_driver::handshake(stream, v2, first, &mut count, events)
        .await
        .map_err(|e| match e {
            DriveError::Closed => HandshakeError::Closed,
            DriveError::Io(e) => HandshakeError::Io(e),
            DriveError::Protocol(e) => HandshakeError::Protocol(e),
            DriveError::Setup(e) => HandshakeError::Setup(e),
        })
}

/// A connection's traffic counters, for the driver.
struct Counters<'a> {
    read: &'a AtomicU64,
    written: &'a AtomicU64,
}

impl Count for Counters<'_> {
    fn read(&mut self, n: usize) {
        Traffic::add(self.read, n);
    }

    fn written(&mut self, n: usize) {
        Traffic::add(self.written, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(error: HandshakeError, sent: u64, received: u64) -> HandshakeFailure {
        HandshakeFailure {
            error,
            sent,
            received,
        }
    }

    /// Bitcoin Core's rule: nothing received, at least a v1 header's worth sent, and the peer
    /// closed, reset or stayed silent.
    #[test]
    fn v1_fallback_follows_bitcoin_cores_rule() {
        let reset = || HandshakeError::Io(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(failure(HandshakeError::Closed, 64, 0).allows_v1_fallback());
        assert!(failure(reset(), 24, 0).allows_v1_fallback());
        assert!(failure(HandshakeError::Timeout, 100, 0).allows_v1_fallback());
        // It answered something: a v2 peer that failed, not a v1-only one.
        assert!(!failure(HandshakeError::Closed, 64, 1).allows_v1_fallback());
        // Too little sent for a v1 node to have judged us.
        assert!(!failure(HandshakeError::Closed, 23, 0).allows_v1_fallback());
        // Never connected, or broke the protocol: no downgrade.
        let refused = HandshakeError::Connect(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(!failure(refused, 0, 0).allows_v1_fallback());
        let broken = HandshakeError::Protocol(ProtocolError::NoGarbageTerminator);
        assert!(!failure(broken, 64, 0).allows_v1_fallback());
    }
}
