//! The BIP-324 handshake, as a state machine over bytes, for either role.
//!
//! ```text
//! initiator                                   responder
//!   key(64) | garbage(0..=4095)        ->
//!                                      <-     key(64) | garbage | terminator | [decoys] | version
//!   terminator | [decoys] | version packet (AAD = our garbage) ->
//! ```
//! Each side sends its key and garbage at once. When the other's key arrives, it derives the
//! session keys and sends its terminator and version packet. It then finds the other's
//! terminator, and authenticates the other's decoys and version packet: only then is the
//! session established, so "established" always means "authenticated".
//!
//! `receive` takes the handshake by value and gives it back until it is established: a
//! finished handshake cannot be fed again.

use crate::cipher::{PACKET_OVERHEAD, PacketSealer};
use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::key_prefix::KeyPrefix;
use crate::keys::{ELLSWIFT_LEN, EphemeralKey, SESSION_ID_LEN, SessionKeys, TERMINATOR_LEN};
use crate::network::Magic;
use crate::pipe::{Event, Pipe};
use crate::role::Role;
use crate::{ProtocolError, UsageError};
use zeroize::Zeroize;

/// Most garbage either side may send after its key.
pub const MAX_GARBAGE_LEN: usize = 4095;

/// Randomness for one handshake; every field must come from a CSPRNG.
pub struct HandshakeEntropy {
    /// The ephemeral secret key; wiped once used.
    pub secret_key: [u8; 32],
    /// Randomness for the ElligatorSwift encoding of the public key.
    pub aux_rand: [u8; 32],
    /// Sent after the key; at most `MAX_GARBAGE_LEN` bytes.
    pub garbage: Vec<u8>,
}

/// An established v2 session: the other side's version packet has authenticated.
pub struct Session {
    /// Identical at both ends of one session, and at no other: compare it out of band to rule
    /// out a man in the middle.
    pub session_id: [u8; SESSION_ID_LEN],
    /// Our messages to the other side.
    pub encoder: Encoder,
    /// The other side's messages. It may already hold some that arrived right behind the
    /// version packet.
    pub decoder: Decoder,
}

/// What `receive` achieved.
pub enum Progress {
    /// All input was consumed; feed the handshake more.
    NeedMore(Handshake),
    /// The other side's version packet authenticated. `consumed` bytes of the input were
    /// used; the rest (only ever left when more than 64 KiB of messages came with the
    /// version packet) belongs to `session.decoder`: push it once its output has drained.
    Established {
        /// Bytes of this input the handshake and the decoder took.
        consumed: usize,
        /// The session.
        session: Box<Session>,
    },
}

/// A handshake in progress.
pub struct Handshake {
    magic: Magic,
    role: Role,
    state: State,
}

/// What the handshake waits for.
enum State {
    Key(Box<AwaitingKey>),
    Terminator {
        keys: Box<SessionKeys>,
        sealer: Box<PacketSealer>,
        /// Garbage received so far, followed by a possible partial terminator.
        scanned: Vec<u8>,
    },
    Version(Box<Session>),
}

struct AwaitingKey {
    key: EphemeralKey,
    our_garbage: Vec<u8>,
    their_key: [u8; ELLSWIFT_LEN],
    received: usize,
}

impl Handshake {
    /// Starts a handshake in `role`; returns it with the bytes to send at once: our key and
    /// garbage.
    pub fn new(
        role: Role,
        magic: Magic,
        entropy: HandshakeEntropy,
    ) -> Result<(Self, Vec<u8>), UsageError> {
        Self::new_with_prefix(role, magic, &KeyPrefix::NONE, entropy)
    }

    /// As `new`, with a key whose encoding starts with `prefix` (`--key-prefix`); with an
    /// empty one, libsecp256k1 encodes it.
    pub fn new_with_prefix(
        role: Role,
        magic: Magic,
        prefix: &KeyPrefix,
        mut entropy: HandshakeEntropy,
    ) -> Result<(Self, Vec<u8>), UsageError> {
        if entropy.garbage.len() > MAX_GARBAGE_LEN {
            return Err(UsageError::TooMuchGarbage);
        }
        let key = if prefix.is_empty() {
            // A key starting with the network magic could be taken for a v1 message (Bitcoin
            // Core's and the `bip324` crate's responders treat it so): pick another encoding
            // of the same key then. (The prefix encoder keeps the same rule.)
            let mut aux_rand = entropy.aux_rand;
            let key = loop {
                let key = EphemeralKey::new(entropy.secret_key, aux_rand);
                if key.as_ref().map_or(true, |k| k.encoding()[..4] != magic.0) {
                    break key;
                }
                aux_rand[0] = aux_rand[0].wrapping_add(1);
            };
            aux_rand.zeroize();
            key
        } else {
            EphemeralKey::with_prefix(entropy.secret_key, entropy.aux_rand, prefix, magic)
        };
        // With the key, they would give the encoder's draws (and derived keys) again.
        entropy.secret_key.zeroize();
        entropy.aux_rand.zeroize();
        Ok(Self::with_key(role, magic, key?, entropy.garbage))
    }

    /// Starts with a given key, as the BIP-324 test vectors do.
    #[must_use]
    pub fn with_key(
        role: Role,
        magic: Magic,
        key: EphemeralKey,
        garbage: Vec<u8>,
    ) -> (Self, Vec<u8>) {
        let mut first_bytes = Vec::with_capacity(ELLSWIFT_LEN + garbage.len());
        first_bytes.extend_from_slice(&key.encoding());
        first_bytes.extend_from_slice(&garbage);
        let handshake = Handshake {
            magic,
            role,
            state: State::Key(Box::new(AwaitingKey {
                key,
                our_garbage: garbage,
                their_key: [0; ELLSWIFT_LEN],
                received: 0,
            })),
        };
        (handshake, first_bytes)
    }

    /// Consumes bytes from the other side, appending what must be sent back to `send`;
    /// `events` hears of the other side's decoys and version packet.
    pub fn receive(
        mut self,
        input: &[u8],
        send: &mut Vec<u8>,
        events: &mut dyn FnMut(Event),
    ) -> Result<Progress, ProtocolError> {
        let mut consumed = 0;
        loop {
            match self.state {
                State::Key(mut waiting) => {
                    let n = (ELLSWIFT_LEN - waiting.received).min(input.len() - consumed);
                    let at = waiting.received;
                    waiting.their_key[at..at + n].copy_from_slice(&input[consumed..consumed + n]);
                    waiting.received += n;
                    consumed += n;
                    if waiting.received < ELLSWIFT_LEN {
                        self.state = State::Key(waiting);
                        return Ok(Progress::NeedMore(self));
                    }
                    let secret = waiting.key.shared_secret(&waiting.their_key, self.role);
                    let keys = Box::new(SessionKeys::derive(&secret, self.magic));
                    let mut sealer = Box::new(keys.sealer(self.role));
                    // Terminator, then our version packet (empty contents, AAD = our garbage).
                    send.extend_from_slice(&keys.send_terminator(self.role));
                    let start = send.len();
                    send.resize(start + PACKET_OVERHEAD, 0);
                    sealer.seal(&mut send[start..], &waiting.our_garbage, false);
                    self.state = State::Terminator {
                        keys,
                        sealer,
                        scanned: Vec::new(),
                    };
                }
                State::Terminator {
                    keys,
                    sealer,
                    mut scanned,
                } => {
                    const LIMIT: usize = MAX_GARBAGE_LEN + TERMINATOR_LEN;
                    let terminator = keys.recv_terminator(self.role);
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
                            // The garbage is the AAD of the first packet that follows.
                            let opener = keys.opener(self.role);
                            self.state = State::Version(Box::new(Session {
                                session_id: keys.session_id,
                                encoder: Encoder::new(self.magic, *sealer),
                                decoder: Decoder::new(self.magic, opener, scanned),
                            }));
                        }
                        None if scanned.len() >= LIMIT => {
                            return Err(ProtocolError::NoGarbageTerminator);
                        }
                        None => {
                            self.state = State::Terminator {
                                keys,
                                sealer,
                                scanned,
                            };
                            return Ok(Progress::NeedMore(self));
                        }
                    }
                }
                State::Version(mut session) => {
                    // Decoys, then the version packet: nothing is established before it
                    // authenticates. Before it the decoder has no output, so it takes
                    // everything given.
                    consumed += session.decoder.push(&input[consumed..], events)?;
                    if session.decoder.version_received() {
                        return Ok(Progress::Established { consumed, session });
                    }
                    self.state = State::Version(session);
                    return Ok(Progress::NeedMore(self));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entropy(seed: u8, garbage: usize) -> HandshakeEntropy {
        HandshakeEntropy {
            secret_key: [seed; 32],
            aux_rand: [seed ^ 0xff; 32],
            garbage: vec![seed; garbage],
        }
    }

    /// Feeds `input` to `side` in pieces of `chunk` bytes until it is established.
    fn establish(
        mut side: Handshake,
        input: &[u8],
        chunk: usize,
        send: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> (usize, Session) {
        let mut fed = 0;
        loop {
            let piece = &input[fed..(fed + chunk).min(input.len())];
            match side.receive(piece, send, &mut |e| events.push(e)).unwrap() {
                Progress::Established { consumed, session } => return (fed + consumed, *session),
                Progress::NeedMore(next) => {
                    assert!(
                        fed + piece.len() < input.len(),
                        "established with all the bytes"
                    );
                    fed += piece.len();
                    side = next;
                }
            }
        }
    }

    /// Both roles, fed all at once and byte by byte: established only once the other's
    /// version packet authenticated, with the same session id, and a message goes through.
    #[test]
    fn initiator_and_responder_agree() {
        let magic = crate::Network::Regtest.magic();
        for chunk in [usize::MAX, 1] {
            let (initiator, to_responder) =
                Handshake::new(Role::Initiator, magic, entropy(1, 300)).unwrap();
            let (responder, to_initiator) =
                Handshake::new(Role::Responder, magic, entropy(2, 4095)).unwrap();
            let (mut from_initiator, mut from_responder) = (Vec::new(), Vec::new());
            // Each needs the other's key before it answers with terminator and version.
            let Progress::NeedMore(initiator) = initiator
                .receive(&to_initiator[..64], &mut from_initiator, &mut |_| {})
                .unwrap()
            else {
                panic!("no version packet yet")
            };
            let Progress::NeedMore(responder) = responder
                .receive(&to_responder[..64], &mut from_responder, &mut |_| {})
                .unwrap()
            else {
                panic!("no version packet yet")
            };
            let mut for_initiator = to_initiator[64..].to_vec();
            for_initiator.extend_from_slice(&from_responder);
            let mut for_responder = to_responder[64..].to_vec();
            for_responder.extend_from_slice(&from_initiator);
            let mut events = Vec::new();
            let (used_i, mut at_initiator) = establish(
                initiator,
                &for_initiator,
                chunk,
                &mut Vec::new(),
                &mut events,
            );
            let (used_r, mut at_responder) = establish(
                responder,
                &for_responder,
                chunk,
                &mut Vec::new(),
                &mut events,
            );
            assert_eq!((used_i, used_r), (for_initiator.len(), for_responder.len()));
            assert_eq!(at_initiator.session_id, at_responder.session_id);
            assert!(
                events
                    .iter()
                    .filter(|e| matches!(e, Event::VersionPacket { .. }))
                    .count()
                    == 2
            );
            let ping = crate::test_util::v1_frame(magic, "ping", &[5; 8]);
            at_initiator.encoder.push(&ping, &mut |_| {}).unwrap();
            let wire = at_initiator.encoder.output().to_vec();
            at_responder.decoder.push(&wire, &mut |_| {}).unwrap();
            assert_eq!(at_responder.decoder.output(), &ping[..]);
        }
    }

    /// Keys encoded with a prefix (16 bytes; 32, where the key itself may be replaced) still
    /// agree with the other side on the session.
    #[test]
    fn prefixed_keys_agree() {
        let magic = crate::Network::Regtest.magic();
        let (short, full) = (
            KeyPrefix::new(b"GET / HTTP/1.1\r\n"),
            KeyPrefix::new(&[0x42; 32]),
        );
        let (short, full) = (short.expect("valid"), full.expect("valid"));
        for seed in 1..5 {
            let start = |role, prefix, seed| {
                Handshake::new_with_prefix(role, magic, prefix, entropy(seed, 10)).expect("key")
            };
            let (initiator, to_responder) = start(Role::Initiator, &short, seed);
            let (responder, to_initiator) = start(Role::Responder, &full, seed + 100);
            assert!(to_responder.starts_with(short.as_bytes()));
            assert!(to_initiator.starts_with(full.as_bytes()));
            let (mut from_initiator, mut from_responder) = (Vec::new(), Vec::new());
            let Ok(Progress::NeedMore(initiator)) =
                initiator.receive(&to_initiator, &mut from_initiator, &mut |_| {})
            else {
                panic!("no version packet yet")
            };
            let Ok(Progress::NeedMore(responder)) =
                responder.receive(&to_responder, &mut from_responder, &mut |_| {})
            else {
                panic!("no version packet yet")
            };
            let mut events = Vec::new();
            let (_, at_initiator) = establish(
                initiator,
                &from_responder,
                usize::MAX,
                &mut Vec::new(),
                &mut events,
            );
            let (_, at_responder) = establish(
                responder,
                &from_initiator,
                usize::MAX,
                &mut Vec::new(),
                &mut events,
            );
            assert_eq!(
                at_initiator.session_id, at_responder.session_id,
                "seed {seed}"
            );
        }
    }

    /// A terminator that never comes ends the handshake as the peer's fault.
    #[test]
    fn endless_garbage_is_refused() {
        let magic = crate::Network::Regtest.magic();
        let (initiator, _) = Handshake::new(Role::Initiator, magic, entropy(1, 0)).unwrap();
        let (_, their_key) = Handshake::new(Role::Responder, magic, entropy(2, 0)).unwrap();
        let mut input = their_key[..64].to_vec();
        input.extend(std::iter::repeat_n(0x47, MAX_GARBAGE_LEN + TERMINATOR_LEN));
        assert!(matches!(
            initiator.receive(&input, &mut Vec::new(), &mut |_| {}),
            Err(ProtocolError::NoGarbageTerminator)
        ));
    }

    #[test]
    fn too_much_garbage_is_the_callers_mistake() {
        let magic = crate::Network::Regtest.magic();
        assert!(matches!(
            Handshake::new(Role::Initiator, magic, entropy(1, MAX_GARBAGE_LEN + 1)),
            Err(UsageError::TooMuchGarbage)
        ));
    }
}
