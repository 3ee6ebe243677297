//! BIP-324 message types: one-byte short IDs for common commands, `0x00` + 12-byte command
//! for the rest.

use super::v1::{COMMAND_LEN, Command};

/// Commands with a one-byte ID; the ID is the index plus one (BIP-324, IDs 1..=28).
/// How many message types have a one-byte id (1 to this number).
pub const SHORT_IDS: usize = 28;

const SHORT_ID_COMMANDS: [&str; SHORT_IDS] = [
    "addr",
    "block",
    "blocktxn",
    "cmpctblock",
    "feefilter",
    "filteradd",
    "filterclear",
    "filterload",
    "getblocks",
    "getblocktxn",
    "getdata",
    "getheaders",
    "headers",
    "inv",
    "mempool",
    "merkleblock",
    "notfound",
    "ping",
    "pong",
    "sendcmpct",
    "tx",
    "getcfilters",
    "cfilter",
    "getcfheaders",
    "cfheaders",
    "getcfcheckpt",
    "cfcheckpt",
    "addrv2",
];

/// IDs that later BIPs assign or propose (`message_type_ids.md`, beside BIP-324): received,
/// they are translated to their command; sent, those commands keep the 12-byte form, which
/// every peer accepts, since a draft's assignment may still change.
pub const PROPOSED_IDS: [(u8, &str); 9] = [
    (29, "uproof"),
    (30, "getuproof"),
    (31, "uttls"),
    (32, "getuttls"),
    (33, "usummary"),
    (34, "utreexotx"),
    (35, "uroot"),
    (36, "geturoot"),
    (37, "feature"),
];

static PROPOSED_TABLE: [(u8, Command); PROPOSED_IDS.len()] = {
    let mut table = [(0, Command([0; COMMAND_LEN])); PROPOSED_IDS.len()];
    let mut i = 0;
    while i < PROPOSED_IDS.len() {
        table[i] = (PROPOSED_IDS[i].0, padded(PROPOSED_IDS[i].1));
        i += 1;
    }
    table
};

/// Marks the long encoding: the 12-byte command follows.
pub const LONG_FORM_MARKER: u8 = 0;
/// A long-form message type: a zero byte, then the 12-byte v1 command.
pub const LONG_FORM_LEN: usize = 1 + COMMAND_LEN;

const fn padded(name: &str) -> Command {
    let mut field = [0u8; COMMAND_LEN];
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        field[i] = bytes[i];
        i += 1;
    }
    Command(field)
}

/// The padded commands, built once at compile time for cheap comparisons on the hot path.
static SHORT_ID_TABLE: [Command; SHORT_IDS] = {
    let mut table = [Command([0; COMMAND_LEN]); SHORT_IDS];
    let mut i = 0;
    while i < SHORT_ID_COMMANDS.len() {
        table[i] = padded(SHORT_ID_COMMANDS[i]);
        i += 1;
    }
    table
};

/// The short ID of `command`, if BIP-324 assigns one.
pub fn short_id(command: &Command) -> Option<u8> {
    SHORT_ID_TABLE
        .iter()
        .position(|c| c == command)
        .map(|i| i as u8 + 1)
}

/// The command for a short ID, BIP-324's own or a proposed one; `None` for 0 (long form)
/// and for unassigned IDs.
pub fn command_for_short_id(id: u8) -> Option<Command> {
    let index = usize::from(id).checked_sub(1)?;
    SHORT_ID_TABLE.get(index).copied().or_else(|| {
        PROPOSED_TABLE
            .iter()
            .find(|(proposed, _)| *proposed == id)
            .map(|(_, command)| *command)
    })
}

/// Number of bytes the message type takes in v2 contents when encoded for `command`.
pub fn encoded_len(command: &Command) -> usize {
    if short_id(command).is_some() {
        1
    } else {
        LONG_FORM_LEN
    }
}

/// Writes the v2 encoding of `command` into `out`, which must be `encoded_len(command)` long.
pub fn encode(command: &Command, out: &mut [u8]) {
    match short_id(command) {
        Some(id) => out[0] = id,
        None => {
            out[0] = LONG_FORM_MARKER;
            out[1..LONG_FORM_LEN].copy_from_slice(&command.0);
        }
    }
}

/// Why a received v2 message cannot be given a v1 command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UndecodableType {
    /// Contents are empty: there is no type byte at all.
    Empty,
    /// A short ID that BIP-324 does not assign (possibly a draft extension).
    UnknownShortId(u8),
    /// Long form cut short: fewer than 12 command bytes follow the marker.
    TruncatedLongForm,
    /// Long form whose 12 bytes are not a valid command.
    InvalidCommand(Command),
}

impl std::fmt::Display for UndecodableType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UndecodableType::Empty => f.write_str("empty contents (no message type)"),
            UndecodableType::UnknownShortId(id) => write!(f, "unknown short message ID {id}"),
            UndecodableType::TruncatedLongForm => {
                f.write_str("long-form message type shorter than 12 bytes")
            }
            UndecodableType::InvalidCommand(c) => write!(f, "invalid command bytes {:02x?}", c.0),
        }
    }
}

/// Decodes the message type at the start of v2 `contents`: the command and the number of
/// bytes the type took (the payload follows).
pub fn decode(contents: &[u8]) -> Result<(Command, usize), UndecodableType> {
    match contents.first() {
        None => Err(UndecodableType::Empty),
        Some(&LONG_FORM_MARKER) => {
            let field = contents
                .get(1..LONG_FORM_LEN)
                .ok_or(UndecodableType::TruncatedLongForm)?;
            let mut command = Command([0; COMMAND_LEN]);
            command.0.copy_from_slice(field);
            if command.is_valid() {
                Ok((command, LONG_FORM_LEN))
            } else {
                Err(UndecodableType::InvalidCommand(command))
            }
        }
        Some(&id) => command_for_short_id(id)
            .map(|c| (c, 1))
            .ok_or(UndecodableType::UnknownShortId(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_bip324() {
        assert_eq!(short_id(&Command::from_name("addr").unwrap()), Some(1));
        assert_eq!(short_id(&Command::from_name("ping").unwrap()), Some(18));
        assert_eq!(short_id(&Command::from_name("pong").unwrap()), Some(19));
        assert_eq!(short_id(&Command::from_name("tx").unwrap()), Some(21));
        assert_eq!(short_id(&Command::from_name("addrv2").unwrap()), Some(28));
        for name in [
            "version",
            "verack",
            "sendheaders",
            "wtxidrelay",
            "sendaddrv2",
            "getaddr",
        ] {
            assert_eq!(short_id(&Command::from_name(name).unwrap()), None, "{name}");
        }
    }

    #[test]
    fn every_short_id_round_trips() {
        for id in 1..=28u8 {
            let command = command_for_short_id(id).unwrap();
            assert!(command.is_valid());
            assert_eq!(short_id(&command), Some(id));
            let mut out = [0u8; 1];
            encode(&command, &mut out);
            assert_eq!(decode(&out), Ok((command, 1)));
        }
        assert_eq!(command_for_short_id(0), None);
        assert_eq!(command_for_short_id(38), None, "past the proposed ones");
        assert_eq!(command_for_short_id(255), None);
    }

    #[test]
    fn long_form_round_trips_and_is_checked() {
        let command = Command::from_name("version").unwrap();
        let mut out = [0u8; LONG_FORM_LEN];
        assert_eq!(encoded_len(&command), LONG_FORM_LEN);
        encode(&command, &mut out);
        assert_eq!(out[0], 0);
        assert_eq!(decode(&out), Ok((command, LONG_FORM_LEN)));
        // A long-form encoding of a command that has a short ID is still accepted.
        let ping = Command::from_name("ping").unwrap();
        let mut long_ping = [0u8; LONG_FORM_LEN];
        long_ping[1..].copy_from_slice(&ping.0);
        assert_eq!(decode(&long_ping), Ok((ping, LONG_FORM_LEN)));
    }

    /// The proposed IDs are those of the table beside BIP-324, whatever order it lists them in.
    #[test]
    fn proposed_ids_match_the_allocation_table() {
        let table = include_str!("../tests/vectors/message_type_ids.md");
        let listed: Vec<(u8, &str)> = table
            .lines()
            .filter_map(|line| {
                let mut cells = line.split('|').map(str::trim);
                let id = cells.next()?.parse().ok()?;
                Some((id, cells.next()?))
            })
            .collect();
        assert_eq!(listed, PROPOSED_IDS);
        for (id, name) in PROPOSED_IDS {
            let command = Command::from_name(name).unwrap();
            assert_eq!(decode(&[id, 1, 2]), Ok((command, 1)), "received: {name}");
            assert_eq!(encoded_len(&command), LONG_FORM_LEN, "sent long: {name}");
            assert_eq!(short_id(&command), None);
        }
    }

    #[test]
    fn undecodable_types_are_reported() {
        assert_eq!(decode(&[]), Err(UndecodableType::Empty));
        assert_eq!(decode(&[38]), Err(UndecodableType::UnknownShortId(38)));
        assert_eq!(decode(&[0, b'a']), Err(UndecodableType::TruncatedLongForm));
        let mut bad = [0u8; LONG_FORM_LEN];
        bad[1] = 0x01;
        assert!(matches!(
            decode(&bad),
            Err(UndecodableType::InvalidCommand(_))
        ));
    }
}
