//! The ephemeral ElligatorSwift key, the x-only ECDH and the HKDF key schedule of BIP-324.

use hkdf::Hkdf;
use secp256k1::SecretKey;
use secp256k1::ellswift::{ElligatorSwift, Party};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::UsageError;
use crate::cipher::{PacketOpener, PacketSealer};
use crate::ellswift::encode_with_prefix;
use crate::key_prefix::KeyPrefix;
use crate::network::Magic;
use crate::role::Role;

/// An ElligatorSwift-encoded public key.
pub const ELLSWIFT_LEN: usize = 64;
/// A garbage terminator.
pub const TERMINATOR_LEN: usize = 16;
/// A session id.
pub const SESSION_ID_LEN: usize = 32;

/// One side's ephemeral key: the secret and its 64-byte ElligatorSwift encoding, which is
/// indistinguishable from random bytes on the wire.
pub struct EphemeralKey {
    secret: SecretKey,
    encoding: ElligatorSwift,
}

impl EphemeralKey {
    /// `secret` and `aux_rand` must come from a CSPRNG. Fails (with negligible probability)
    /// when `secret` is zero or not below the curve order; draw again then.
    pub fn new(secret: [u8; 32], mut aux_rand: [u8; 32]) -> Result<Self, UsageError> {
        let key = parse_secret(secret).map(|secret| EphemeralKey {
            secret,
            encoding: ElligatorSwift::from_seckey(secret, Some(aux_rand)),
        });
        aux_rand.zeroize();
        key
    }

    /// Like `new`, but the encoding starts with `prefix` and not with `magic`. With a 32-byte
    /// prefix the key may be one derived from `secret` and `aux_rand` (see `ellswift`).
    pub fn with_prefix(
        secret: [u8; 32],
        mut aux_rand: [u8; 32],
        prefix: &KeyPrefix,
        magic: Magic,
    ) -> Result<Self, UsageError> {
        let encoded = parse_secret(secret)
            .and_then(|secret| encode_with_prefix(secret, &aux_rand, prefix, magic));
        // With the key, it would give the encoder's draws (and derived keys) again.
        aux_rand.zeroize();
        let encoded = encoded?;
        Ok(EphemeralKey {
            secret: encoded.secret,
            encoding: ElligatorSwift::from_array(encoded.encoding),
        })
    }

    /// The X coordinate of the public key: what the encoding decodes to.
    #[cfg(any(test, feature = "test-util"))]
    pub fn public_x(&self) -> [u8; 32] {
        secp256k1::PublicKey::from_secret_key(&self.secret)
            .x_only_public_key()
            .0
            .to_byte_array()
    }

    /// Uses a given encoding of the key, as the BIP-324 test vectors do.
    pub fn with_encoding(
        secret: [u8; 32],
        encoding: [u8; ELLSWIFT_LEN],
    ) -> Result<Self, UsageError> {
        Ok(EphemeralKey {
            secret: parse_secret(secret)?,
            encoding: ElligatorSwift::from_array(encoding),
        })
    }

    /// The 64 bytes sent on the wire.
    pub fn encoding(&self) -> [u8; ELLSWIFT_LEN] {
        self.encoding.to_array()
    }

    /// The BIP-324 shared secret: the tagged hash of both encodings and the x-only ECDH point.
    pub fn shared_secret(&self, theirs: &[u8; ELLSWIFT_LEN], role: Role) -> Zeroizing<[u8; 32]> {
        let theirs = ElligatorSwift::from_array(*theirs);
        let (a, b, party) = match role {
            Role::Initiator => (self.encoding, theirs, Party::Initiator),
            Role::Responder => (theirs, self.encoding, Party::Responder),
        };
        Zeroizing::new(ElligatorSwift::shared_secret(a, b, self.secret, party).to_secret_bytes())
    }
}

impl Drop for EphemeralKey {
    fn drop(&mut self) {
        self.secret.non_secure_erase();
    }
}

fn parse_secret(mut secret: [u8; 32]) -> Result<SecretKey, UsageError> {
    let key = SecretKey::from_secret_bytes(secret).map_err(|_| UsageError::InvalidSecretKey);
    secret.zeroize();
    key
}

/// Everything the key schedule derives from the shared secret.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    /// The initiator's length key.
    pub initiator_l: [u8; 32],
    /// The initiator's contents key.
    pub initiator_p: [u8; 32],
    /// The responder's length key.
    pub responder_l: [u8; 32],
    /// The responder's contents key.
    pub responder_p: [u8; 32],
    /// What ends the initiator's garbage.
    pub initiator_terminator: [u8; TERMINATOR_LEN],
    /// What ends the responder's garbage.
    pub responder_terminator: [u8; TERMINATOR_LEN],
    /// Shared by both ends of the session.
    pub session_id: [u8; SESSION_ID_LEN],
}

impl SessionKeys {
    /// HKDF-SHA256 with salt `bitcoin_v2_shared_secret || magic`.
    pub fn derive(shared_secret: &[u8; 32], magic: Magic) -> SessionKeys {
        let mut salt = [0u8; 24 + 4];
        salt[..24].copy_from_slice(b"bitcoin_v2_shared_secret");
        salt[24..].copy_from_slice(&magic.0);
        let hkdf = Hkdf::<Sha256>::new(Some(&salt), shared_secret);
        let expand = |info: &[u8], out: &mut [u8]| {
            // Outputs of at most 32 bytes can never exceed HKDF's limit of 255 * 32.
            hkdf.expand(info, out)
                .expect("HKDF output length within limit");
        };
        let mut keys = SessionKeys {
            initiator_l: [0; 32],
            initiator_p: [0; 32],
            responder_l: [0; 32],
            responder_p: [0; 32],
            initiator_terminator: [0; TERMINATOR_LEN],
            responder_terminator: [0; TERMINATOR_LEN],
            session_id: [0; SESSION_ID_LEN],
        };
        expand(b"initiator_L", &mut keys.initiator_l);
        expand(b"initiator_P", &mut keys.initiator_p);
        expand(b"responder_L", &mut keys.responder_l);
        expand(b"responder_P", &mut keys.responder_p);
        let mut terminators = Zeroizing::new([0u8; 2 * TERMINATOR_LEN]);
        expand(b"garbage_terminators", &mut terminators[..]);
        keys.initiator_terminator
            .copy_from_slice(&terminators[..TERMINATOR_LEN]);
        keys.responder_terminator
            .copy_from_slice(&terminators[TERMINATOR_LEN..]);
        expand(b"session_id", &mut keys.session_id);
        keys
    }

    /// The terminator `role` sends after its garbage.
    pub fn send_terminator(&self, role: Role) -> [u8; TERMINATOR_LEN] {
        match role {
            Role::Initiator => self.initiator_terminator,
            Role::Responder => self.responder_terminator,
        }
    }

    /// The terminator that ends the garbage of `role`'s peer.
    pub fn recv_terminator(&self, role: Role) -> [u8; TERMINATOR_LEN] {
        self.send_terminator(role.peer())
    }

    /// What `role` encrypts its packets with.
    pub fn sealer(&self, role: Role) -> PacketSealer {
        match role {
            Role::Initiator => PacketSealer::new(self.initiator_l, self.initiator_p),
            Role::Responder => PacketSealer::new(self.responder_l, self.responder_p),
        }
    }

    /// What `role` decrypts its peer's packets with.
    pub fn opener(&self, role: Role) -> PacketOpener {
        match role.peer() {
            Role::Initiator => PacketOpener::new(self.initiator_l, self.initiator_p),
            Role::Responder => PacketOpener::new(self.responder_l, self.responder_p),
        }
    }
}
