//! Bitcoin networks, told apart by the 4-byte magic that starts every v1 message.
//!
//! BIP-324 salts its key schedule with the network magic, so the proxy must know which
//! network a client speaks before it can open a v2 session for it.

use std::fmt;

/// The 4 bytes that open every v1 message of one network.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Magic(pub [u8; 4]);

impl fmt::Debug for Magic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Magic({self})")
    }
}

impl fmt::Display for Magic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The networks the proxy knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Network {
    /// The main network.
    Mainnet,
    /// testnet3.
    Testnet3,
    /// testnet4 (BIP-94).
    Testnet4,
    /// The default signet.
    Signet,
    /// Local regression testing.
    Regtest,
}

impl Network {
    /// Every network, in a fixed order.
    pub const ALL: [Network; 5] = [
        Network::Mainnet,
        Network::Testnet3,
        Network::Testnet4,
        Network::Signet,
        Network::Regtest,
    ];

    /// The 4 bytes that start each of its v1 messages.
    pub const fn magic(self) -> Magic {
        Magic(match self {
            Network::Mainnet => [0xf9, 0xbe, 0xb4, 0xd9],
            Network::Testnet3 => [0x0b, 0x11, 0x09, 0x07],
            Network::Testnet4 => [0x1c, 0x16, 0x3f, 0x28],
            Network::Signet => [0x0a, 0x03, 0xcf, 0x40],
            Network::Regtest => [0xfa, 0xbf, 0xb5, 0xda],
        })
    }

    /// The P2P port Bitcoin Core uses by default on this network (default signet for signet).
    pub const fn default_port(self) -> u16 {
        match self {
            Network::Mainnet => 8333,
            Network::Testnet3 => 18333,
            Network::Testnet4 => 48333,
            Network::Signet => 38333,
            Network::Regtest => 18444,
        }
    }

    /// Its name, as in logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Network::Mainnet => "mainnet",
            Network::Testnet3 => "testnet3",
            Network::Testnet4 => "testnet4",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }

    /// The network that uses `magic`, if any.
    pub fn from_magic(magic: Magic) -> Option<Network> {
        Network::ALL.into_iter().find(|n| n.magic() == magic)
    }

    /// The network whose default P2P port this is.
    pub fn from_port(port: u16) -> Option<Network> {
        Network::ALL.into_iter().find(|n| n.default_port() == port)
    }

    /// The network of this name (`mainnet`, `testnet3`, `testnet4`, `signet`, `regtest`).
    pub fn from_name(name: &str) -> Option<Network> {
        Network::ALL.into_iter().find(|n| n.name() == name)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Names a magic for logs: the network's name when known, the hex bytes otherwise (a custom
/// signet has a magic of its own, derived from its challenge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkLabel(pub Magic);

impl fmt::Display for NetworkLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Network::from_magic(self.0) {
            Some(network) => f.write_str(network.name()),
            None => write!(f, "unknown(magic {})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_are_distinct_and_round_trip() {
        for network in Network::ALL {
            assert_eq!(Network::from_magic(network.magic()), Some(network));
        }
        assert_eq!(Network::from_magic(Magic([0, 0, 0, 0])), None);
    }

    #[test]
    fn label_names_known_and_unknown_magics() {
        assert_eq!(NetworkLabel(Network::Signet.magic()).to_string(), "signet");
        assert_eq!(
            NetworkLabel(Magic([1, 2, 3, 0xff])).to_string(),
            "unknown(magic 010203ff)"
        );
    }
}
