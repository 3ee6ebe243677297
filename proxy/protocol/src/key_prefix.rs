//! The bytes the proxy's ElligatorSwift keys start with (`--key-prefix`).
//!
//! A key's 64-byte encoding is `u || t`: `u` may be any 32 bytes, `t` is solved from `u` and
//! the key. A prefix fixes the first bytes of `u`; the rest of `u`, `t` and the garbage stay
//! random. That defeats a filter that reads only a connection's first bytes, and is itself a
//! fingerprint (docs/security.md).
//!
//! Which prefixes are refused, and why (on every network, since one prefix serves all
//! connections):
//! * one that starts with a network's magic (4 bytes or more): rust-bitcoin's `bip324`, in
//!   either role, takes a key starting with the magic for v1, and so does Bitcoin Core's
//!   responder once `version\0\0\0\0\0` follows;
//! * one of 16 bytes or more whose bytes 4..16 are `version\0\0\0\0\0`: Bitcoin Core's
//!   responder disconnects such a peer whatever bytes 0..4 are (a v1 peer of another network,
//!   to it). Refusing the magic alone does not cover this.
//!
//! A shorter prefix that the random bytes after it could complete into either (1 to 3 bytes
//! that begin a magic, or bytes from the 5th on that begin `version\0\0\0\0\0`) is
//! accepted: the encoder draws again when that happens, as it does for the magic without a
//! prefix. So no key the proxy sends starts with its connection's magic or carries that
//! command in bytes 4..16. Any 32 bytes may be `u`, even 0 mod p (decoding reads 0 as 1).

use crate::network::Network;

/// The command of a v1 `version` message, as bytes 4..16 of its header.
pub(crate) const V1_VERSION_COMMAND: &[u8; 12] = b"version\0\0\0\0\0";

/// Longest prefix: all of `u`.
pub const MAX_KEY_PREFIX_LEN: usize = 32;

/// The first bytes of every key's encoding; empty for none (then libsecp256k1 encodes keys).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyPrefix {
    bytes: [u8; MAX_KEY_PREFIX_LEN],
    len: usize,
}

/// Why bytes cannot be a key prefix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyPrefixError {
    /// Longer than `u`.
    #[error("a key prefix is at most 32 bytes (the first half of the 64-byte key), not {0}")]
    TooLong(usize),
    /// It starts with a network's magic.
    #[error(
        "it starts with the {network} network's magic {magic}: a v2 responder would take every \
         handshake for a v1 message (Bitcoin Core does when `version` follows, rust-bitcoin's \
         bip324 always) and never answer in v2"
    )]
    LooksLikeV1 {
        /// The network.
        network: &'static str,
        /// Its magic, in hex.
        magic: String,
    },
    /// Bytes 4..16 are a v1 `version` command.
    #[error(
        "bytes 5 to 16 are `version` and five NUL bytes: Bitcoin Core's v2 responder disconnects \
         any peer whose first 16 bytes end so, whatever the first 4 (it takes it for a v1 peer \
         of another network), so no handshake would ever complete"
    )]
    VersionCommand,
}

impl KeyPrefix {
    /// No prefix.
    pub const NONE: KeyPrefix = KeyPrefix {
        bytes: [0; MAX_KEY_PREFIX_LEN],
        len: 0,
    };

    /// `bytes` as a prefix, unless it is refused (see the module's documentation).
    pub fn new(bytes: &[u8]) -> Result<KeyPrefix, KeyPrefixError> {
        if bytes.len() > MAX_KEY_PREFIX_LEN {
            return Err(KeyPrefixError::TooLong(bytes.len()));
        }
        if let Some(network) = Network::ALL
            .into_iter()
            .find(|n| bytes.starts_with(&n.magic().0))
        {
            return Err(KeyPrefixError::LooksLikeV1 {
                network: network.name(),
                magic: network.magic().to_string(),
            });
        }
        if bytes.get(4..16) == Some(&V1_VERSION_COMMAND[..]) {
            return Err(KeyPrefixError::VersionCommand);
        }
        let mut prefix = KeyPrefix::NONE;
        prefix.bytes[..bytes.len()].copy_from_slice(bytes);
        prefix.len = bytes.len();
        Ok(prefix)
    }

    /// The prefix's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Whether there is no prefix.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// In hex, as `--key-prefix` takes it.
impl std::fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_bytes()
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPrefix({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_networks_magic_is_refused_and_its_start_is_not() {
        for network in Network::ALL {
            let magic = network.magic().0;
            let mut v1 = magic.to_vec();
            v1.extend_from_slice(b"version\0\0\0\0\0");
            for len in 4..=v1.len() {
                let refused = KeyPrefix::new(&v1[..len]).expect_err("a magic");
                assert!(refused.to_string().contains(network.name()), "{refused}");
            }
            // magic + "GET": still the magic.
            assert!(KeyPrefix::new(&[&magic[..], b"GET"].concat()).is_err());
            for len in 1..4 {
                assert!(KeyPrefix::new(&magic[..len]).is_ok(), "{len} bytes");
            }
        }
        let http = KeyPrefix::new(b"GET / HTTP/1.1\r\n").expect("not a magic");
        assert_eq!(http.as_bytes(), b"GET / HTTP/1.1\r\n");
        assert_eq!(http.to_string(), "474554202f20485454502f312e310d0a");
        assert!(KeyPrefix::new(&[]).is_ok_and(|p| p.is_empty()));
    }

    #[test]
    fn longer_than_u_is_refused_and_any_u_is_not() {
        assert_eq!(KeyPrefix::new(&[1; 33]), Err(KeyPrefixError::TooLong(33)));
        assert!(KeyPrefix::new(&[1; 32]).is_ok());
        // 0 mod p: decoding reads such a u as 1, and the encoder solves for 1.
        assert!(KeyPrefix::new(&[0; 32]).is_ok());
        let p = hex::decode("fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f");
        assert!(KeyPrefix::new(&p.expect("hex")).is_ok());
        assert!(KeyPrefix::new(&[0xff; 32]).is_ok());
    }

    /// Bitcoin Core's responder disconnects whoever sends `version` and 5 NULs as bytes 4..16,
    /// whatever bytes 0..4 are.
    #[test]
    fn a_version_command_after_any_four_bytes_is_refused() {
        for start in [*b"GET ", [0; 4], [0xff; 4]] {
            let v1 = [&start[..], V1_VERSION_COMMAND].concat();
            for tail in [&[][..], b"x", &[7; 16]] {
                let bytes = [&v1[..], tail].concat();
                let refused = KeyPrefix::new(&bytes).expect_err("bytes 4..16 are the command");
                assert_eq!(refused, KeyPrefixError::VersionCommand, "{bytes:02x?}");
                assert!(refused.to_string().contains("Bitcoin Core"), "{refused}");
            }
            // Shorter, or another command: the encoder keeps the random rest from completing it.
            assert!(KeyPrefix::new(&v1[..15]).is_ok());
            assert!(KeyPrefix::new(&[&start[..], b"verack\0\0\0\0\0\0"].concat()).is_ok());
        }
    }
}
