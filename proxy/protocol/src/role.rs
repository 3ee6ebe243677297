//! Which end of a v2 connection this side is: it picks the key schedule's half and the
//! terminator each side sends.

/// Which end of the connection this side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The side that connected: it speaks first, and its key must not look like v1.
    Initiator,
    /// The side that accepted the connection.
    Responder,
}

impl Role {
    /// The other end's role.
    #[must_use]
    pub fn peer(self) -> Role {
        match self {
            Role::Initiator => Role::Responder,
            Role::Responder => Role::Initiator,
        }
    }
}
