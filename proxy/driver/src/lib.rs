//! Drives `bip324-protocol`'s sans-IO [`Handshake`] over a tokio stream, in either role: the
//! one loop that the proxy, its end-to-end benchmark and the interop tests share, so that
//! what the tests prove is what the proxy runs. Timeouts and entropy are the caller's.

use std::io;

use bip324_protocol::{
    Event, Handshake, HandshakeEntropy, KeyPrefix, Magic, Progress, ProtocolError, Role, Session,
    UsageError,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest read during a handshake: a key, garbage and a few packets fit.
const READ_SIZE: usize = 4096;

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// The other side closed the connection.
    #[error("the other side closed the connection")]
    Closed,
    #[error("{0}")]
    Io(io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    /// The entropy given cannot be used (a negligible chance with fresh randomness).
    #[error("{0}")]
    Setup(UsageError),
}

/// Counts the bytes a handshake reads and writes (the proxy's per-connection traffic).
pub trait Count {
    fn read(&mut self, n: usize);
    fn written(&mut self, n: usize);
}

/// Counts nothing.
impl Count for () {
    fn read(&mut self, _: usize) {}
    fn written(&mut self, _: usize) {}
}

/// `role`'s handshake over `stream`, with a key that starts with `prefix` (none when empty),
/// starting with `first` (bytes already read from it), until the other side's version
/// packet authenticated. Returns the session and what was
/// read beyond what it took, for the session's decoder.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    (role, magic, prefix, entropy): (Role, Magic, KeyPrefix, HandshakeEntropy),
    first: &[u8],
    count: &mut (impl Count + Send),
    events: &mut (dyn FnMut(Event) + Send),
) -> Result<(Box<Session>, Vec<u8>), DriveError> {
    let (mut handshake, key_and_garbage) =
        Handshake::new_with_prefix(role, magic, &prefix, entropy).map_err(DriveError::Setup)?;
    send(stream, &key_and_garbage, count).await?;
    let mut buf = vec![0u8; READ_SIZE.max(first.len())];
    buf[..first.len()].copy_from_slice(first);
    let mut n = first.len();
    let mut reply = Vec::new();
    loop {
        if n == 0 {
            n = match stream.read(&mut buf).await {
                Ok(0) => return Err(DriveError::Closed),
                Ok(n) => n,
                Err(e) => return Err(DriveError::Io(e)),
            };
            count.read(n);
        }
        let progress = handshake.receive(&buf[..n], &mut reply, events)?;
        if !reply.is_empty() {
            send(stream, &reply, count).await?;
            reply.clear();
        }
        match progress {
            Progress::NeedMore(next) => handshake = next,
            Progress::Established { consumed, session } => {
                return Ok((session, buf[consumed..n].to_vec()));
            }
        }
        n = 0;
    }
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    count: &mut impl Count,
) -> Result<(), DriveError> {
    stream.write_all(bytes).await.map_err(DriveError::Io)?;
    count.written(bytes.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entropy(seed: u8) -> HandshakeEntropy {
        HandshakeEntropy {
            secret_key: [seed; 32],
            aux_rand: [seed.wrapping_add(1); 32],
            garbage: vec![seed; 100],
        }
    }

    #[derive(Default)]
    struct Counted(usize, usize);

    impl Count for Counted {
        fn read(&mut self, n: usize) {
            self.0 += n;
        }
        fn written(&mut self, n: usize) {
            self.1 += n;
        }
    }

    /// Both roles over an in-memory pipe reach the same session, and every byte one side
    /// wrote is counted as read by the other.
    #[tokio::test]
    async fn both_roles_agree_and_count_every_byte() {
        // Each side writes its key and garbage before it reads: a socket buffer holds them.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let magic = Magic([0xfa, 0xbf, 0xb5, 0xda]);
        let (mut ca, mut cb) = (Counted::default(), Counted::default());
        let (mut ea, mut eb) = (|_| {}, |_| {});
        let initiator = handshake(
            &mut a,
            (Role::Initiator, magic, KeyPrefix::NONE, entropy(1)),
            &[],
            &mut ca,
            &mut ea,
        );
        let responder = handshake(
            &mut b,
            (Role::Responder, magic, KeyPrefix::NONE, entropy(7)),
            &[],
            &mut cb,
            &mut eb,
        );
        let (i, r) = tokio::join!(initiator, responder);
        let ((i, _), (r, _)) = (i.unwrap(), r.unwrap());
        assert_eq!(i.session_id, r.session_id);
        assert_eq!((ca.0, ca.1), (cb.1, cb.0));
    }

    #[tokio::test]
    async fn a_close_mid_handshake_is_closed() {
        let (mut a, b) = tokio::io::duplex(4096);
        drop(b);
        let magic = Magic([0xfa, 0xbf, 0xb5, 0xda]);
        let v2 = (Role::Initiator, magic, KeyPrefix::NONE, entropy(1));
        let result = handshake(&mut a, v2, &[], &mut (), &mut |_| {}).await;
        let error = result.err().expect("no session without a responder");
        assert!(
            matches!(error, DriveError::Closed | DriveError::Io(_)),
            "{error:?}"
        );
    }
}
