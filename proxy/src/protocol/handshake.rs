//! The BIP-324 handshake, as a state machine over bytes. The proxy is always the initiator;
//! the responder role serves tests and benchmarks that need a peer.
//!
//! ```text
//! initiator                                   responder
//!   key(64) | garbage(0..=4095)        ->
//!                                      <-     key(64) | garbage | terminator | [decoys] | version
//!   terminator | version packet (AAD = our garbage) ->
//! ```
//! Each side sends its key and garbage at once. When the other's key arrives, it derives the
//! session keys and sends its terminator and version packet; when the other's terminator is
//! found, it hands over an `Encoder` and a `Decoder`. The decoder then authenticates the
//! other's decoys and version packet before any message.

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

/// An established v2 session, handed over once the other side's terminator is found.
pub struct Session {
    pub session_id: [u8; SESSION_ID_LEN],
    /// Our messages to the other side.
    pub encoder: Encoder,
    /// The other side's messages; still expects its version packet.
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

pub struct Handshake {
    magic: Magic,
    initiating: bool,
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

impl Handshake {
    /// Starts a handshake as the initiator; returns it with the bytes to send at once: key
    /// and garbage.
    pub fn start(
        magic: Magic,
        entropy: HandshakeEntropy,
    ) -> Result<(Self, Vec<u8>), ProtocolError> {
        Self::start_as(magic, entropy, true)
    }

    /// Starts a handshake as the responder (for test and benchmark peers).
    pub fn respond(
        magic: Magic,
        entropy: HandshakeEntropy,
    ) -> Result<(Self, Vec<u8>), ProtocolError> {
        Self::start_as(magic, entropy, false)
    }

    fn start_as(
        magic: Magic,
        mut entropy: HandshakeEntropy,
        initiating: bool,
    ) -> Result<(Self, Vec<u8>), ProtocolError> {
        if entropy.garbage.len() > MAX_GARBAGE_LEN {
            return Err(ProtocolError::TooMuchGarbage);
        }
        // A key starting with the network magic could be taken for a v1 message (the `bip324`
        // crate's responder refuses it): pick another encoding of the same key then.
        let mut aux_rand = entropy.aux_rand;
        let key = loop {
            let key = EphemeralKey::new(entropy.secret_key, aux_rand);
            if key.as_ref().map_or(true, |k| k.encoding()[..4] != magic.0) {
                break key;
            }
            aux_rand[0] = aux_rand[0].wrapping_add(1);
        };
        zeroize::Zeroize::zeroize(&mut entropy.secret_key);
        let key = key?;
        let (mut handshake, first_bytes) = Self::with_key(magic, key, entropy.garbage);
        handshake.initiating = initiating;
        Ok((handshake, first_bytes))
    }

    /// Starts as the initiator with a given key (tests use the BIP's vectors).
    pub fn with_key(magic: Magic, key: EphemeralKey, garbage: Vec<u8>) -> (Self, Vec<u8>) {
        let mut first_bytes = Vec::with_capacity(ELLSWIFT_LEN + garbage.len());
        first_bytes.extend_from_slice(&key.encoding());
        first_bytes.extend_from_slice(&garbage);
        let handshake = Handshake {
            magic,
            initiating: true,
            state: State::AwaitingKey {
                key,
                our_garbage: garbage,
                their_key: [0; ELLSWIFT_LEN],
                received: 0,
            },
        };
        (handshake, first_bytes)
    }

    /// True until the other side has sent anything that counts as its key: Bitcoin Core's
    /// condition for retrying a peer in v1.
    pub fn in_key_phase(&self) -> bool {
        matches!(self.state, State::AwaitingKey { .. })
    }

    /// Consumes bytes from the other side, appending what must be sent back to `send`.
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
                    let secret = key.shared_secret(their_key, self.initiating);
                    let keys = Box::new(SessionKeys::derive(&secret, self.magic));
                    let mut sealer = keys.sealer(self.initiating);
                    // Terminator, then our version packet (empty contents, AAD = our garbage).
                    send.extend_from_slice(&keys.send_terminator(self.initiating));
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
                    let terminator = keys.recv_terminator(self.initiating);
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
            decoder: Decoder::new(self.magic, keys.opener(self.initiating), scanned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pipe::Pipe;

    fn entropy(seed: u8, garbage: usize) -> HandshakeEntropy {
        HandshakeEntropy {
            secret_key: [seed; 32],
            aux_rand: [seed ^ 0xff; 32],
            garbage: vec![seed; garbage],
        }
    }

    /// Runs one side over the other's bytes until it is established.
    fn establish(side: &mut Handshake, input: &[u8], send: &mut Vec<u8>) -> (usize, Session) {
        match side.receive(input, send).unwrap() {
            Progress::Established { consumed, session } => (consumed, *session),
            Progress::NeedMore => panic!("established with all the bytes"),
        }
    }

    #[test]
    fn initiator_and_responder_agree() {
        let magic = crate::protocol::Network::Regtest.magic();
        let (mut initiator, to_responder) = Handshake::start(magic, entropy(1, 300)).unwrap();
        let (mut responder, to_initiator) = Handshake::respond(magic, entropy(2, 4095)).unwrap();
        let (mut from_initiator, mut from_responder) = (Vec::new(), Vec::new());
        // Each needs the other's key before it answers with terminator and version packet.
        assert!(matches!(
            initiator
                .receive(&to_initiator[..64], &mut from_initiator)
                .unwrap(),
            Progress::NeedMore
        ));
        assert!(matches!(
            responder
                .receive(&to_responder[..64], &mut from_responder)
                .unwrap(),
            Progress::NeedMore
        ));
        let mut rest_for_initiator = to_initiator[64..].to_vec();
        rest_for_initiator.extend_from_slice(&from_responder);
        let mut rest_for_responder = to_responder[64..].to_vec();
        rest_for_responder.extend_from_slice(&from_initiator);
        let (used_i, mut at_initiator) =
            establish(&mut initiator, &rest_for_initiator, &mut Vec::new());
        let (used_r, mut at_responder) =
            establish(&mut responder, &rest_for_responder, &mut Vec::new());
        assert_eq!(at_initiator.session_id, at_responder.session_id);
        // The version packets authenticate, and a message goes through each way.
        at_initiator
            .decoder
            .push(&rest_for_initiator[used_i..], &mut |_| {})
            .unwrap();
        at_responder
            .decoder
            .push(&rest_for_responder[used_r..], &mut |_| {})
            .unwrap();
        assert!(at_initiator.decoder.version_received() && at_responder.decoder.version_received());
        let mut ping = vec![0u8; 24];
        let command = crate::protocol::v1::Command::from_name("ping").unwrap();
        let header: &mut [u8; 24] = (&mut ping[..]).try_into().unwrap();
        crate::protocol::v1::Header::write(header, magic, &command, &[5; 8]);
        ping.extend_from_slice(&[5; 8]);
        at_initiator.encoder.push(&ping, &mut |_| {}).unwrap();
        let wire = at_initiator.encoder.output().to_vec();
        at_responder.decoder.push(&wire, &mut |_| {}).unwrap();
        assert_eq!(at_responder.decoder.output(), &ping[..]);
    }
}
