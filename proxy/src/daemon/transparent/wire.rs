//! The messages between the proxy and its binding helper, over a `SOCK_SEQPACKET` socketpair:
//! fixed sizes, every field checked. The helper treats requests as hostile (a proxy taken over
//! through a bug must not turn it into a general IP_TRANSPARENT service), so `check` admits
//! only connections to the node's configured ports on loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const TAG_CONNECT: u8 = 1;
const TAG_ARM: u8 = 2;

/// tag, id, family, peer address and port, node address and port.
pub(crate) const REQUEST_LEN: usize = 1 + 4 + 1 + 16 + 2 + 16 + 2;
/// status, id, detail (an errno or a refusal code).
pub(crate) const REPLY_LEN: usize = 1 + 4 + 4;
/// tag, uid, gid.
pub(crate) const ARM_LEN: usize = 1 + 4 + 4;

/// "Connect from `peer` to `node`": answered under the same `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub id: u32,
    pub peer: SocketAddr,
    pub node: SocketAddr,
}

/// Why the helper refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a well-formed request.
    Malformed = 1,
    /// The destination is not a loopback address.
    NodeNotLoopback = 2,
    /// The destination port is not one of the node's (`--inbound-ports`).
    PortNotAllowed = 3,
    /// The source is no single host's address, or its port is 0.
    BadPeer = 4,
    /// The source and the destination are of different families.
    FamilyMismatch = 5,
}

impl Refusal {
    fn from_code(code: u32) -> Option<Refusal> {
        [
            Refusal::Malformed,
            Refusal::NodeNotLoopback,
            Refusal::PortNotAllowed,
            Refusal::BadPeer,
            Refusal::FamilyMismatch,
        ]
        .into_iter()
        .find(|r| *r as u32 == code)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Malformed => "a malformed request",
            Refusal::NodeNotLoopback => "the destination is not on loopback",
            Refusal::PortNotAllowed => "the destination port is not one of --inbound-ports",
            Refusal::BadPeer => "the source is not a single host's address and port",
            Refusal::FamilyMismatch => "the source and destination families differ",
        })
    }
}

/// The helper's answer to a `Request`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The socket comes with this message (`SCM_RIGHTS`), its connect under way.
    Connecting,
    Refused(Refusal),
    /// The system refused: this errno.
    Failed(i32),
}

fn put_ip(out: &mut [u8], ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
}

pub(crate) fn encode_request(request: &Request) -> [u8; REQUEST_LEN] {
    let mut out = [0u8; REQUEST_LEN];
    out[0] = TAG_CONNECT;
    out[1..5].copy_from_slice(&request.id.to_le_bytes());
    out[5] = if request.peer.is_ipv4() { 4 } else { 6 };
    put_ip(&mut out[6..22], request.peer.ip());
    out[22..24].copy_from_slice(&request.peer.port().to_be_bytes());
    put_ip(&mut out[24..40], request.node.ip());
    out[40..42].copy_from_slice(&request.node.port().to_be_bytes());
    out
}

/// Parses a request; its id along with the refusal when the rest is malformed (so the reply
/// can name it), `None` when not even that can be read.
pub(crate) fn decode_request(bytes: &[u8]) -> Result<Request, Option<u32>> {
    let Ok(bytes) = <&[u8; REQUEST_LEN]>::try_from(bytes) else {
        return Err(None);
    };
    if bytes[0] != TAG_CONNECT {
        return Err(None);
    }
    let id = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let ip = |field: &[u8]| -> Option<IpAddr> {
        let field: [u8; 16] = field.try_into().ok()?;
        match bytes[5] {
            // An IPv4 address fills 4 bytes; the rest must be zero.
            4 if field[4..].iter().all(|b| *b == 0) => {
                Some(Ipv4Addr::new(field[0], field[1], field[2], field[3]).into())
            }
            6 => Some(Ipv6Addr::from(field).into()),
            _ => None,
        }
    };
    let port = |field: &[u8]| u16::from_be_bytes([field[0], field[1]]);
    match (ip(&bytes[6..22]), ip(&bytes[24..40])) {
        (Some(peer), Some(node)) => Ok(Request {
            id,
            peer: SocketAddr::new(peer, port(&bytes[22..24])),
            node: SocketAddr::new(node, port(&bytes[40..42])),
        }),
        _ => Err(Some(id)),
    }
}

/// Whether the helper may make this connection: to a loopback address at one of `ports`,
/// from one host's address (the peer's) of the same family.
pub(crate) fn check(request: &Request, ports: &[u16]) -> Result<(), Refusal> {
    let (peer, node) = (request.peer, request.node);
    if peer.is_ipv4() != node.is_ipv4() {
        return Err(Refusal::FamilyMismatch);
    }
    if !node.ip().is_loopback() {
        return Err(Refusal::NodeNotLoopback);
    }
    if !ports.contains(&node.port()) {
        return Err(Refusal::PortNotAllowed);
    }
    let single_host = match peer.ip() {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    };
    if !single_host || peer.port() == 0 {
        return Err(Refusal::BadPeer);
    }
    Ok(())
}

pub(crate) fn encode_reply(id: u32, reply: Reply) -> [u8; REPLY_LEN] {
    let (status, detail) = match reply {
        Reply::Connecting => (0u8, 0u32),
        Reply::Refused(refusal) => (1, refusal as u32),
        Reply::Failed(errno) => (2, errno as u32),
    };
    let mut out = [0u8; REPLY_LEN];
    out[0] = status;
    out[1..5].copy_from_slice(&id.to_le_bytes());
    out[5..9].copy_from_slice(&detail.to_le_bytes());
    out
}

/// The id and the reply; `None` for anything malformed.
pub(crate) fn decode_reply(bytes: &[u8]) -> Option<(u32, Reply)> {
    let bytes = <&[u8; REPLY_LEN]>::try_from(bytes).ok()?;
    let id = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let detail = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
    let reply = match bytes[0] {
        0 if detail == 0 => Reply::Connecting,
        1 => Reply::Refused(Refusal::from_code(detail)?),
        2 => Reply::Failed(i32::try_from(detail).ok()?),
        _ => return None,
    };
    Some((id, reply))
}

/// "Become `uid`/`gid`, keep only CAP_NET_RAW": the proxy's own identity once it gave up root.
pub(crate) fn encode_arm(uid: u32, gid: u32) -> [u8; ARM_LEN] {
    let mut out = [0u8; ARM_LEN];
    out[0] = TAG_ARM;
    out[1..5].copy_from_slice(&uid.to_le_bytes());
    out[5..9].copy_from_slice(&gid.to_le_bytes());
    out
}

pub(crate) fn decode_arm(bytes: &[u8]) -> Option<(u32, u32)> {
    let bytes = <&[u8; ARM_LEN]>::try_from(bytes).ok()?;
    if bytes[0] != TAG_ARM {
        return None;
    }
    let uid = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let gid = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
    Some((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: [u16; 2] = [8333, 18444];

    fn request(peer: &str, node: &str) -> Request {
        Request {
            id: 7,
            peer: peer.parse().unwrap(),
            node: node.parse().unwrap(),
        }
    }

    #[test]
    fn requests_round_trip() {
        for r in [
            request("203.0.113.9:50000", "127.0.0.1:8333"),
            request("[2001:db8::9]:50000", "[::1]:18444"),
        ] {
            assert_eq!(decode_request(&encode_request(&r)), Ok(r));
        }
    }

    #[test]
    fn only_the_nodes_ports_on_loopback_are_allowed() {
        let ok = |p: &str, n: &str| check(&request(p, n), &PORTS);
        assert_eq!(ok("203.0.113.9:5", "127.0.0.1:8333"), Ok(()));
        assert_eq!(ok("203.0.113.9:5", "127.0.0.2:18444"), Ok(()));
        assert_eq!(ok("[2001:db8::9]:5", "[::1]:8333"), Ok(()));
        assert_eq!(
            ok("203.0.113.9:5", "10.0.0.1:8333"),
            Err(Refusal::NodeNotLoopback)
        );
        assert_eq!(
            ok("203.0.113.9:5", "192.0.2.1:8333"),
            Err(Refusal::NodeNotLoopback)
        );
        assert_eq!(
            ok("[2001:db8::9]:5", "[2001:db8::1]:8333"),
            Err(Refusal::NodeNotLoopback)
        );
        assert_eq!(
            ok("203.0.113.9:5", "127.0.0.1:22"),
            Err(Refusal::PortNotAllowed)
        );
        assert_eq!(
            ok("203.0.113.9:5", "127.0.0.1:9050"),
            Err(Refusal::PortNotAllowed)
        );
        assert_eq!(
            ok("203.0.113.9:5", "[::1]:8333"),
            Err(Refusal::FamilyMismatch)
        );
        for peer in [
            "0.0.0.0:5",
            "224.0.0.1:5",
            "255.255.255.255:5",
            "203.0.113.9:0",
        ] {
            assert_eq!(ok(peer, "127.0.0.1:8333"), Err(Refusal::BadPeer), "{peer}");
        }
        assert_eq!(ok("[::]:5", "[::1]:8333"), Err(Refusal::BadPeer));
        assert_eq!(ok("[ff02::1]:5", "[::1]:8333"), Err(Refusal::BadPeer));
    }

    #[test]
    fn malformed_requests_are_refused() {
        let good = encode_request(&request("203.0.113.9:5", "127.0.0.1:8333"));
        assert_eq!(decode_request(&good[..REQUEST_LEN - 1]), Err(None));
        let mut long = good.to_vec();
        long.push(0);
        assert_eq!(decode_request(&long), Err(None));
        assert_eq!(decode_request(&[]), Err(None));
        let mut tag = good;
        tag[0] = TAG_ARM;
        assert_eq!(decode_request(&tag), Err(None));
        let mut family = good;
        family[5] = 5;
        assert_eq!(decode_request(&family), Err(Some(7)));
        // Bytes beyond an IPv4 address must be zero.
        let mut padded = good;
        padded[10] = 1;
        assert_eq!(decode_request(&padded), Err(Some(7)));
    }

    #[test]
    fn replies_and_arm_round_trip_and_reject_garbage() {
        for reply in [
            Reply::Connecting,
            Reply::Refused(Refusal::PortNotAllowed),
            Reply::Failed(libc::EADDRINUSE),
        ] {
            assert_eq!(decode_reply(&encode_reply(9, reply)), Some((9, reply)));
        }
        assert_eq!(decode_reply(&[0; REPLY_LEN - 1]), None);
        assert_eq!(decode_reply(&[9; REPLY_LEN]), None);
        assert_eq!(decode_reply(&[1, 0, 0, 0, 0, 99, 0, 0, 0]), None);
        assert_eq!(decode_arm(&encode_arm(65534, 100)), Some((65534, 100)));
        assert_eq!(decode_arm(&[TAG_CONNECT; ARM_LEN]), None);
        assert_eq!(decode_arm(&[TAG_ARM; ARM_LEN - 1]), None);
    }
}
