//! Tells, from a client's first bytes, whether it speaks v1 and on which network.
//!
//! A v1 client opens with `magic | "version\0\0\0\0\0"`; a v2 client opens with 64 random
//! bytes. Bitcoin Core's responder decides on the same 16 bytes.

use super::network::{Magic, Network};

const VERSION_COMMAND: &[u8; 12] = b"version\0\0\0\0\0";
/// Bytes needed, at most, to decide.
pub const PREFIX_LEN: usize = 4 + VERSION_COMMAND.len();

/// What a client's first bytes say about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientHello {
    /// Not enough bytes to decide.
    NeedMore,
    /// A v1 client with this magic: a known network's, or any magic followed by `version`
    /// (a custom signet has its own magic).
    V1(Magic),
    /// Not v1: most likely a v2 client, to be passed through untouched.
    NotV1,
}

/// A known magic decides at once: anything else starting with it would be a broken v1
/// stream, and encrypting it is the safe side. Otherwise the `version` command decides.
pub fn classify(prefix: &[u8]) -> ClientHello {
    let Some(magic) = prefix.first_chunk::<4>().map(|m| Magic(*m)) else {
        return ClientHello::NeedMore;
    };
    if Network::from_magic(magic).is_some() {
        return ClientHello::V1(magic);
    }
    let command = &prefix[4..prefix.len().min(PREFIX_LEN)];
    if command != &VERSION_COMMAND[..command.len()] {
        ClientHello::NotV1
    } else if prefix.len() >= PREFIX_LEN {
        ClientHello::V1(magic)
    } else {
        ClientHello::NeedMore
    }
}

/// What a connecting peer's first bytes say to a responder that knows its network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerHello {
    /// Not enough bytes to decide.
    NeedMore,
    /// Our network's magic and `version`: a v1 peer.
    V1,
    /// Anything else: a v2 initiator's key (or garbage, which its handshake will reject).
    V2,
}

/// Bitcoin Core's responder rule: exactly our magic followed by `version` is v1, anything
/// else is v2, decided as soon as a byte differs.
pub fn classify_peer(prefix: &[u8], magic: Magic) -> PeerHello {
    let mut v1 = [0u8; PREFIX_LEN];
    v1[..4].copy_from_slice(&magic.0);
    v1[4..].copy_from_slice(VERSION_COMMAND);
    let n = prefix.len().min(PREFIX_LEN);
    if prefix[..n] != v1[..n] {
        PeerHello::V2
    } else if n == PREFIX_LEN {
        PeerHello::V1
    } else {
        PeerHello::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_magic_decides_after_four_bytes() {
        let magic = Network::Testnet4.magic();
        assert_eq!(classify(&magic.0[..3]), ClientHello::NeedMore);
        assert_eq!(classify(&magic.0), ClientHello::V1(magic));
    }

    #[test]
    fn unknown_magic_needs_the_version_command() {
        let mut prefix = vec![0x12, 0x34, 0x56, 0x78];
        prefix.extend_from_slice(VERSION_COMMAND);
        for len in 4..PREFIX_LEN {
            assert_eq!(classify(&prefix[..len]), ClientHello::NeedMore, "{len}");
        }
        assert_eq!(
            classify(&prefix),
            ClientHello::V1(Magic([0x12, 0x34, 0x56, 0x78]))
        );
    }

    #[test]
    fn a_peer_is_v1_only_with_our_magic_and_version() {
        let ours = Network::Mainnet.magic();
        let mut v1 = ours.0.to_vec();
        v1.extend_from_slice(VERSION_COMMAND);
        for len in 0..PREFIX_LEN {
            assert_eq!(
                classify_peer(&v1[..len], ours),
                PeerHello::NeedMore,
                "{len}"
            );
        }
        assert_eq!(classify_peer(&v1, ours), PeerHello::V1);
        assert_eq!(classify_peer(&v1, Network::Testnet4.magic()), PeerHello::V2);
        let mut ping = ours.0.to_vec();
        ping.extend_from_slice(b"ping\0\0\0\0\0\0\0\0");
        assert_eq!(
            classify_peer(&ping, ours),
            PeerHello::V2,
            "v1 must start with version"
        );
        assert_eq!(classify_peer(&[0x11], ours), PeerHello::V2);
    }

    #[test]
    fn random_bytes_are_not_v1_as_soon_as_they_differ() {
        assert_eq!(classify(&[1, 2, 3, 4, b'v', b'x']), ClientHello::NotV1);
        assert_eq!(classify(&[1, 2, 3, 4, 0xff]), ClientHello::NotV1);
        let key: Vec<u8> = (0..64).map(|i| (i * 37 + 11) as u8).collect();
        assert_eq!(classify(&key), ClientHello::NotV1);
    }
}
