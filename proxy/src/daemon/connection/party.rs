//! Who each socket of a connection is, in words true for its direction: an outbound
//! connection's accepted socket is a client and its dialled one the remote node; an inbound
//! connection's are the connecting peer and the local node. Logs, labels and sentences use
//! these words; the code says `Side::Accepted` and `Side::Dialled`.

use bip324_control::Direction;

use crate::daemon::relay::Side;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Party {
    Client = 0,
    Remote = 1,
    Peer = 2,
    Node = 3,
}

impl Party {
    pub(crate) fn of(direction: Direction, side: Side) -> Party {
        match (direction, side) {
            (Direction::Outbound, Side::Accepted) => Party::Client,
            (Direction::Outbound, Side::Dialled) => Party::Remote,
            (Direction::Inbound, Side::Accepted) => Party::Peer,
            (Direction::Inbound, Side::Dialled) => Party::Node,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Party::Client => "client",
            Party::Remote => "remote",
            Party::Peer => "peer",
            Party::Node => "node",
        }
    }
}

impl std::fmt::Display for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
