//! The initiator side of the BIP-324 handshake, as a state machine over bytes.
//!
//! ```text
//! initiator                                   responder
//!   key(64) | garbage(0..=4095)        ->
//!                                      <-     key(64) | garbage | terminator | [decoys] | version
//!   terminator | version packet (AAD = our garbage) ->
//! ```
//! The initiator sends its key and garbage at once. When the responder's key arrives, it
//! derives the session keys and sends its terminator and version packet; when the
//! responder's terminator is found, it hands over an `Encoder` and a `Decoder`. The decoder
//! then authenticates the responder's decoys and version packet before any message.

use super::ProtocolError;
use super::cipher::{PACKET_OVERHEAD, PacketSealer};
use super::decoder::Decoder;
use super::encoder::Encoder;
use super::keys::{ELLSWIFT_LEN, EphemeralKey, SESSION_ID_LEN, SessionKeys, TERMINATOR_LEN};
use super::network::Magic;

pub const MAX_GARBAGE_LEN: usize = 4095;

/// Randomness for one handshake; every field must come from a CSPRNG.
pub struct HandshakeEntropy {
    pub secret_key: [u8; 32],
    pub aux_rand: [u8; 32],
    /// Sent after the key; at most `MAX_GARBAGE_LEN` bytes.
    pub garbage: Vec<u8>,
}

/// An established v2 session, handed over once the responder's terminator is found.
pub struct Session {
    pub session_id: [u8; SESSION_ID_LEN],
    /// Client -> remote direction.
    pub encoder: Encoder,
    /// Remote -> client direction; still expects the responder's version packet.
    pub decoder: Decoder,
}

/// What `receive` achieved.
pub enum Progress {
    /// All input was consumed; more is needed.
    NeedMore,
    /// The handshake is over: `consumed` bytes were used, the rest belongs to the decoder.
    Established {
        consumed: usize,
        session: Box<Session>,
    },
}

pub struct InitiatorHandshake {
    magic: Magic,
    state: State,
}

enum State {
    AwaitingKey {
        key: EphemeralKey,
        our_garbage: Vec<u8>,
        their_key: [u8; ELLSWIFT_LEN],
        received: usize,
    },
    AwaitingTerminator {
        keys: Box<SessionKeys>,
        sealer: PacketSealer,
        /// Garbage received so far, followed by a possible partial terminator.
        scanned: Vec<u8>,
    },
    Finished,
}

impl InitiatorHandshake {
    /// Starts a handshake; returns it with the bytes to send at once: key and garbage.
    pub fn start(
        magic: Magic,
        entropy: HandshakeEntropy,
    ) -> Result<(Self, Vec<u8>), ProtocolError> {
        if entropy.garbage.len() > MAX_GARBAGE_LEN {
            return Err(ProtocolError::TooMuchGarbage);
        }
        // A key starting with the network magic could be taken for a v1 message (the `bip324`
        // crate's responder refuses it): pick another encoding of the same key then.
        let mut aux_rand = entropy.aux_rand;
        let key = loop {
            let key = EphemeralKey::new(entropy.secret_key, aux_rand)?;
            if key.encoding()[..4] != magic.0 {
                break key;
            }
            aux_rand[0] = aux_rand[0].wrapping_add(1);
        };
        Ok(Self::with_key(magic, key, entropy.garbage))
    }

    /// Starts with a given key (tests use the BIP's vectors).
    pub fn with_key(magic: Magic, key: EphemeralKey, garbage: Vec<u8>) -> (Self, Vec<u8>) {
        let mut first_bytes = Vec::with_capacity(ELLSWIFT_LEN + garbage.len());
        first_bytes.extend_from_slice(&key.encoding());
        first_bytes.extend_from_slice(&garbage);
        let handshake = InitiatorHandshake {
            magic,
            state: State::AwaitingKey {
                key,
                our_garbage: garbage,
                their_key: [0; ELLSWIFT_LEN],
                received: 0,
            },
        };
        (handshake, first_bytes)
    }

    /// True until the responder has sent anything that counts as its key: Bitcoin Core's
    /// condition for retrying a peer in v1.
    pub fn in_key_phase(&self) -> bool {
        matches!(self.state, State::AwaitingKey { .. })
    }

    /// Consumes bytes from the responder, appending what must be sent back to `send`.
    pub fn receive(&mut self, input: &[u8], send: &mut Vec<u8>) -> Result<Progress, ProtocolError> {
        let mut consumed = 0;
        loop {
            match &mut self.state {
                State::AwaitingKey {
                    key,
                    our_garbage,
                    their_key,
                    received,
                } => {
                    let n = (ELLSWIFT_LEN - *received).min(input.len() - consumed);
                    their_key[*received..*received + n]
                        .copy_from_slice(&input[consumed..consumed + n]);
                    *received += n;
                    consumed += n;
                    if *received < ELLSWIFT_LEN {
                        return Ok(Progress::NeedMore);
                    }
                    let secret = key.shared_secret(their_key, true);
                    let keys = Box::new(SessionKeys::derive(&secret, self.magic));
                    let mut sealer = keys.sealer(true);
                    // Terminator, then our version packet (empty contents, AAD = our garbage).
                    send.extend_from_slice(&keys.send_terminator(true));
                    let start = send.len();
                    send.resize(start + PACKET_OVERHEAD, 0);
                    sealer.seal(&mut send[start..], our_garbage, false);
                    self.state = State::AwaitingTerminator {
                        keys,
                        sealer,
                        scanned: Vec::new(),
                    };
                }
                State::AwaitingTerminator { keys, scanned, .. } => {
                    const LIMIT: usize = MAX_GARBAGE_LEN + TERMINATOR_LEN;
                    let terminator = keys.recv_terminator(true);
                    let before = scanned.len();
                    let take = (LIMIT - before).min(input.len() - consumed);
                    scanned.extend_from_slice(&input[consumed..consumed + take]);
                    // Only windows that include new bytes need checking.
                    let from = before.saturating_sub(TERMINATOR_LEN - 1);
                    let found = scanned[from..]
                        .windows(TERMINATOR_LEN)
                        .position(|w| w == terminator)
                        .map(|i| from + i);
                    match found {
                        Some(at) => {
                            consumed += at + TERMINATOR_LEN - before;
                            scanned.truncate(at);
                            return Ok(Progress::Established {
                                consumed,
                                session: Box::new(self.finish()),
                            });
                        }
                        None if scanned.len() >= LIMIT => {
                            return Err(ProtocolError::NoGarbageTerminator);
                        }
                        None => return Ok(Progress::NeedMore),
                    }
                }
                State::Finished => return Err(ProtocolError::HandshakeFinished),
            }
        }
    }

    fn finish(&mut self) -> Session {
        let State::AwaitingTerminator {
            keys,
            sealer,
            scanned,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            unreachable!("finish is only called once the terminator is found");
        };
        Session {
            session_id: keys.session_id,
            encoder: Encoder::new(self.magic, sealer),
            decoder: Decoder::new(self.magic, keys.opener(true), scanned),
        }
    }
}
