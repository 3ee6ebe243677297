//! SOCKS5 on the wire (RFC 1928, and RFC 1929's username/password), as pure functions over
//! bytes: each parser says "need more", "here it is and how many bytes it took", or why the
//! client broke the protocol. The server side is all the proxy needs of it, plus the client
//! side's request for `--upstream-socks5`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

pub const VERSION: u8 = 5;
pub const NO_AUTH: u8 = 0x00;
pub const USER_PASS: u8 = 0x02;
pub const NO_ACCEPTABLE_METHOD: u8 = 0xff;
pub const CONNECT: u8 = 0x01;
/// Tor's extension: resolve a name and reply with its address, without connecting (Kyoto asks
/// it for peers given by name).
pub const RESOLVE: u8 = 0xf0;

/// The longest greeting or request a client can send (a 255-byte domain name): reads stop
/// there.
pub const MAX_MESSAGE: usize = 4 + 1 + 255 + 2 + 255 + 255;

/// What a client asked to reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Ip(SocketAddr),
    /// A name, passed on unresolved when an upstream SOCKS5 proxy resolves it (Tor, `.onion`).
    Domain(String, u16),
}

impl Target {
    pub fn port(&self) -> u16 {
        match self {
            Target::Ip(addr) => addr.port(),
            Target::Domain(_, port) => *port,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Ip(addr) => write!(f, "{addr}"),
            Target::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

/// Reply codes (RFC 1928 section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowed = 0x02,
    NetworkUnreachable = 0x03,
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    TtlExpired = 0x06,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

impl Reply {
    pub const ALL: &[Reply] = &[
        Reply::Succeeded,
        Reply::GeneralFailure,
        Reply::NotAllowed,
        Reply::NetworkUnreachable,
        Reply::HostUnreachable,
        Reply::ConnectionRefused,
        Reply::TtlExpired,
        Reply::CommandNotSupported,
        Reply::AddressTypeNotSupported,
    ];

    /// The label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reply::Succeeded => "succeeded",
            Reply::GeneralFailure => "general_failure",
            Reply::NotAllowed => "not_allowed",
            Reply::NetworkUnreachable => "network_unreachable",
            Reply::HostUnreachable => "host_unreachable",
            Reply::ConnectionRefused => "connection_refused",
            Reply::TtlExpired => "ttl_expired",
            Reply::CommandNotSupported => "command_not_supported",
            Reply::AddressTypeNotSupported => "address_type_not_supported",
        }
    }

    /// What a failed connect's error means to a SOCKS client.
    pub fn for_connect_error(error: &std::io::Error) -> Reply {
        use std::io::ErrorKind;
        match error.kind() {
            ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
            ErrorKind::HostUnreachable => Reply::HostUnreachable,
            ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
            ErrorKind::TimedOut => Reply::TtlExpired,
            ErrorKind::Unsupported => Reply::CommandNotSupported,
            _ => Reply::GeneralFailure,
        }
    }
}

/// Why the bytes are not SOCKS5.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not SOCKS version 5 (first byte {0:#04x})")]
    Version(u8),
    #[error("a greeting that offers no authentication method")]
    NoMethods,
    #[error("username/password negotiation of version {0:#04x}, not 1")]
    AuthVersion(u8),
    #[error("reserved byte {0:#04x} is not zero")]
    Reserved(u8),
    #[error("address type {0:#04x} is not IPv4, IPv6 or a domain name")]
    AddressType(u8),
    #[error("an empty or non-ASCII domain name")]
    Domain,
    #[error("a message longer than SOCKS5 allows")]
    TooLong,
    #[error("the client closed the connection")]
    Closed,
}

/// `None`: more bytes are needed.
pub type Parsed<T> = Result<Option<(T, usize)>, WireError>;

/// The greeting: version, then the methods offered.
pub fn parse_greeting(input: &[u8]) -> Parsed<Vec<u8>> {
    let [version, count, ..] = *input else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    if count == 0 {
        return Err(WireError::NoMethods);
    }
    let end = 2 + usize::from(count);
    Ok(input.get(2..end).map(|methods| (methods.to_vec(), end)))
}

/// RFC 1929's username/password request; any credentials are accepted (as Tor does: clients
/// such as Bitcoin Core send random ones to isolate streams), and kept to pass upstream.
pub fn parse_user_pass(input: &[u8]) -> Parsed<(Vec<u8>, Vec<u8>)> {
    let [version, user_len, ..] = *input else {
        return Ok(None);
    };
    if version != 1 {
        return Err(WireError::AuthVersion(version));
    }
    let user_end = 2 + usize::from(user_len);
    let Some(&pass_len) = input.get(user_end) else {
        return Ok(None);
    };
    let pass_end = user_end + 1 + usize::from(pass_len);
    let Some(pass) = input.get(user_end + 1..pass_end) else {
        return Ok(None);
    };
    Ok(Some((
        (input[2..user_end].to_vec(), pass.to_vec()),
        pass_end,
    )))
}

/// The request: version, command, reserved zero, then the target. The command is returned
/// as sent: the caller answers those it does not support.
pub fn parse_request(input: &[u8]) -> Parsed<(u8, Target)> {
    let [version, command, reserved, ..] = *input else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    if reserved != 0 {
        return Err(WireError::Reserved(reserved));
    }
    match parse_address(&input[3..])? {
        Some((target, used)) => Ok(Some(((command, target), 3 + used))),
        None => Ok(None),
    }
}

/// An address type, address and port, as in requests and replies.
fn parse_address(input: &[u8]) -> Parsed<Target> {
    let Some(&kind) = input.first() else {
        return Ok(None);
    };
    let (host_len, host_start) = match kind {
        0x01 => (4, 1),
        0x04 => (16, 1),
        0x03 => match input.get(1) {
            Some(&len) => (usize::from(len), 2),
            None => return Ok(None),
        },
        other => return Err(WireError::AddressType(other)),
    };
    let end = host_start + host_len + 2;
    let Some(bytes) = input.get(host_start..end) else {
        return Ok(None);
    };
    let (host, port) = bytes.split_at(host_len);
    let port = u16::from_be_bytes([port[0], port[1]]);
    let target = match kind {
        0x01 => Target::Ip(SocketAddr::new(
            Ipv4Addr::from(<[u8; 4]>::try_from(host).expect("4 bytes")).into(),
            port,
        )),
        0x04 => Target::Ip(SocketAddr::new(
            Ipv6Addr::from(<[u8; 16]>::try_from(host).expect("16 bytes")).into(),
            port,
        )),
        _ => {
            let name = std::str::from_utf8(host)
                .ok()
                .filter(|n| !n.is_empty() && n.is_ascii())
                .ok_or(WireError::Domain)?;
            Target::Domain(name.to_string(), port)
        }
    };
    Ok(Some((target, end)))
}

/// A reply, with the address the proxy connects from (zeros when there is none).
pub fn reply(code: Reply, bound: Option<SocketAddr>) -> Vec<u8> {
    let bound = bound.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut out = vec![VERSION, code as u8, 0];
    write_address(&mut out, &Target::Ip(bound));
    out
}

/// A client's request (CONNECT or RESOLVE) for `target`, to an upstream SOCKS5 proxy.
pub fn request(command: u8, target: &Target) -> Vec<u8> {
    let mut out = vec![VERSION, command, 0];
    write_address(&mut out, target);
    out
}

/// A client's greeting, offering `methods`.
pub fn greeting(methods: &[u8]) -> Vec<u8> {
    let mut out = vec![VERSION, methods.len() as u8];
    out.extend_from_slice(methods);
    out
}

/// A client's username/password request (each at most 255 bytes: longer ones are cut).
pub fn user_pass_request(user: &[u8], pass: &[u8]) -> Vec<u8> {
    let (user, pass) = (&user[..user.len().min(255)], &pass[..pass.len().min(255)]);
    let mut out = vec![1, user.len() as u8];
    out.extend_from_slice(user);
    out.push(pass.len() as u8);
    out.extend_from_slice(pass);
    out
}

fn write_address(out: &mut Vec<u8>, target: &Target) {
    match target {
        Target::Ip(SocketAddr::V4(v4)) => {
            out.push(0x01);
            out.extend_from_slice(&v4.ip().octets());
        }
        Target::Ip(SocketAddr::V6(v6)) => {
            out.push(0x04);
            out.extend_from_slice(&v6.ip().octets());
        }
        Target::Domain(name, _) => {
            let name = &name.as_bytes()[..name.len().min(255)];
            out.push(0x03);
            out.push(name.len() as u8);
            out.extend_from_slice(name);
        }
    }
    out.extend_from_slice(&target.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_and_credentials() {
        assert_eq!(parse_greeting(&[5]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 0]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 0, 2, 9]), Ok(Some((vec![0, 2], 4))));
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(WireError::Version(4)));
        assert_eq!(parse_greeting(&[5, 0]), Err(WireError::NoMethods));
        let request = user_pass_request(b"alice", b"s3cret");
        for len in 0..request.len() {
            assert_eq!(parse_user_pass(&request[..len]), Ok(None), "{len}");
        }
        assert_eq!(
            parse_user_pass(&request),
            Ok(Some((
                (b"alice".to_vec(), b"s3cret".to_vec()),
                request.len()
            )))
        );
    }

    #[test]
    fn requests_round_trip_for_every_address_type() {
        for target in [
            Target::Ip("203.0.113.7:8333".parse().unwrap()),
            Target::Ip("[2001:db8::7]:18333".parse().unwrap()),
            Target::Domain("seed.example.onion".into(), 8333),
        ] {
            let request = request(CONNECT, &target);
            for len in 0..request.len() {
                assert_eq!(parse_request(&request[..len]), Ok(None), "{target} {len}");
            }
            assert_eq!(
                parse_request(&request),
                Ok(Some(((CONNECT, target.clone()), request.len())))
            );
        }
    }

    #[test]
    fn bad_requests_say_why() {
        assert_eq!(parse_request(&[5, 1, 1, 1]), Err(WireError::Reserved(1)));
        assert_eq!(parse_request(&[5, 1, 0, 9]), Err(WireError::AddressType(9)));
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 0, 0, 1]),
            Err(WireError::Domain)
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 1, 0xff, 0, 1]),
            Err(WireError::Domain)
        );
    }

    /// Metrics count replies by `code as usize`: `ALL` lists each code at its own index.
    #[test]
    fn all_lists_every_reply_at_its_code() {
        for (i, code) in Reply::ALL.iter().enumerate() {
            assert_eq!(*code as usize, i);
        }
    }

    #[test]
    fn replies_carry_the_bound_address() {
        let bound: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let reply = reply(Reply::ConnectionRefused, Some(bound));
        assert_eq!(reply, [5, 5, 0, 1, 10, 0, 0, 1, 0x9c, 0x40]);
        assert_eq!(
            // A reply has a request's layout: version, code, reserved, address.
            parse_request(&reply),
            Ok(Some(((5, Target::Ip(bound)), reply.len())))
        );
    }
}
