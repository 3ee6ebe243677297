//! SOCKS5 (RFC 1928, with RFC 1929's username/password) without I/O: the server side of the
//! negotiation as a state machine ([`Negotiation`]: bytes in, bytes to send and a decision
//! out), and the messages a client sends, for the daemon's `--upstream-socks5`.
//!
//! Everything a client sends is bounded (at most [`MAX_NEGOTIATION`] bytes are ever held) and
//! checked before the daemon acts on it: a name must have hostname syntax, so no byte a client
//! chooses beyond letters, digits, hyphens and dots reaches a resolver or a log line.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// SOCKS version 5.
pub const VERSION: u8 = 5;
/// Method: no authentication.
pub const NO_AUTH: u8 = 0x00;
/// Method: username/password (RFC 1929).
pub const USER_PASS: u8 = 0x02;
/// The server's answer when it accepts none of the methods offered.
pub const NO_ACCEPTABLE_METHOD: u8 = 0xff;
/// Command: connect to the target.
pub const CONNECT: u8 = 0x01;
/// Tor's extension: resolve a name and reply with its address, without connecting (Kyoto asks
/// it for peers given by name).
pub const RESOLVE: u8 = 0xf0;

/// The longest greeting: version, count, 255 methods.
pub const MAX_GREETING: usize = 2 + 255;
/// The longest username/password request: version, two lengths, 255 bytes each.
pub const MAX_USER_PASS: usize = 3 + 255 + 255;
/// The longest request: version, command, reserved, address type, a 255-byte name, port.
pub const MAX_REQUEST: usize = 4 + 1 + 255 + 2;
/// The most a [`Negotiation`] ever holds: a client may send its three messages at once.
pub const MAX_NEGOTIATION: usize = MAX_GREETING + MAX_USER_PASS + MAX_REQUEST;

/// What a client asked to reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An address, as sent or as a name that was an address literal.
    Ip(SocketAddr),
    /// A name in hostname syntax ([`is_hostname`]), passed on unresolved when an upstream
    /// SOCKS5 proxy resolves it (Tor, `.onion`).
    Domain(String, u16),
}

impl Target {
    /// The port asked for.
    pub fn port(&self) -> u16 {
        match self {
            Target::Ip(addr) => addr.port(),
            Target::Domain(_, port) => *port,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Ip(addr) => write!(f, "{addr}"),
            // Hostname syntax: letters, digits, hyphens and dots only, safe to print.
            Target::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

/// Whether `name` has hostname syntax: dot-separated labels of 1 to 63 letters, digits and
/// hyphens (LDH), at most 255 bytes, one trailing dot allowed. `.onion` and `.i2p` names have
/// it; a newline, a space, a `%`, an `_` or any non-ASCII byte does not.
pub fn is_hostname(name: &[u8]) -> bool {
    let name = name.strip_suffix(b".").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 254
        && name.split(|&b| b == b'.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Reply codes (RFC 1928 section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// Succeeded.
    Succeeded = 0x00,
    /// General SOCKS server failure.
    GeneralFailure = 0x01,
    /// Connection not allowed by ruleset.
    NotAllowed = 0x02,
    /// Network unreachable.
    NetworkUnreachable = 0x03,
    /// Host unreachable.
    HostUnreachable = 0x04,
    /// Connection refused.
    ConnectionRefused = 0x05,
    /// TTL expired (the proxy's answer to a timeout).
    TtlExpired = 0x06,
    /// Command not supported.
    CommandNotSupported = 0x07,
    /// Address type not supported.
    AddressTypeNotSupported = 0x08,
}

impl Reply {
    /// Every code, each at the index of its value.
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
}

/// Why the bytes are not SOCKS5: the connection is closed without a reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Another SOCKS version, or no SOCKS at all.
    #[error("not SOCKS version 5 (first byte {0:#04x})")]
    Version(u8),
    /// A greeting with a method count of zero.
    #[error("a greeting that offers no authentication method")]
    NoMethods,
    /// A username/password request of another version than 1.
    #[error("username/password negotiation of version {0:#04x}, not 1")]
    AuthVersion(u8),
    /// A request whose reserved byte is not zero.
    #[error("reserved byte {0:#04x} is not zero")]
    Reserved(u8),
    /// More bytes than the negotiation can need.
    #[error("a message longer than SOCKS5 allows")]
    TooLong,
    /// The client closed before its request was complete (the driver's to report).
    #[error("the client closed the connection")]
    Closed,
}

/// Why a well-formed request is answered with a failure code and not served. Carries no
/// client text: a refused name is described, never repeated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client offered neither method the proxy takes.
    NoAcceptableMethod,
    /// A command other than CONNECT and RESOLVE (BIND, UDP ASSOCIATE, ...).
    Command(u8),
    /// An address type other than IPv4, IPv6 and a domain name.
    AddressType(u8),
    /// A name outside hostname syntax, of this many bytes.
    NotAHostname(usize),
}

impl Refusal {
    /// The reply code it is answered with (none for the method: its answer is `0xff`).
    pub fn reply(self) -> Option<Reply> {
        match self {
            Refusal::NoAcceptableMethod => None,
            Refusal::Command(_) => Some(Reply::CommandNotSupported),
            Refusal::AddressType(_) => Some(Reply::AddressTypeNotSupported),
            Refusal::NotAHostname(_) => Some(Reply::HostUnreachable),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoAcceptableMethod => {
                f.write_str("it offers neither no authentication nor username/password")
            }
            Refusal::Command(c) => write!(f, "command {c:#04x} is not supported"),
            Refusal::AddressType(t) => write!(f, "address type {t:#04x} is not supported"),
            Refusal::NotAHostname(len) => write!(
                f,
                "a name of {len} bytes outside hostname syntax (letters, digits, hyphens, dots)"
            ),
        }
    }
}

/// A SOCKS client's username and password, passed upstream as they came.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The username, 0 to 255 bytes.
    pub user: Vec<u8>,
    /// The password, 0 to 255 bytes.
    pub pass: Vec<u8>,
}

/// Never printed: they may be secrets, and they identify a client's streams.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(..)")
    }
}

/// A client's request, once negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// [`CONNECT`] or [`RESOLVE`].
    pub command: u8,
    /// What to reach or resolve.
    pub target: Target,
    /// What the client sent, when it chose username/password.
    pub credentials: Option<Credentials>,
}

/// What the driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read at most [`Negotiation::wanted`] bytes and pass them to [`Negotiation::receive`].
    NeedMore,
    /// Write these bytes to the client (the chosen method, the credentials' status), then
    /// step again.
    Send(Vec<u8>),
    /// Negotiated: the driver acts on the request and writes the reply ([`reply`]).
    Request(Request),
    /// Write these bytes (a failure reply) and close.
    Refuse {
        /// The answer to write before closing.
        answer: Vec<u8>,
        /// Why, for the log.
        why: Refusal,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Greeting,
    Credentials,
    Request,
    Finished,
}

/// The server side of a SOCKS5 negotiation, from the first byte to the request.
///
/// Reading at most [`wanted`](Negotiation::wanted) bytes at a time never takes a byte past the
/// request, so whatever the client sends after it (its first P2P bytes) stays in the socket.
/// Bytes that came early (a request pipelined before the method reply) wait in the buffer.
#[derive(Debug)]
pub struct Negotiation {
    phase: Phase,
    buf: Vec<u8>,
    prefer_credentials: bool,
    credentials: Option<Credentials>,
}

impl Negotiation {
    /// `prefer_credentials`: when the client offers username/password, choose it even if it
    /// offers no authentication too (there is an upstream proxy, and a client that sends
    /// credentials, such as Bitcoin Core's `-proxyrandomize`, wants its streams isolated
    /// by them). Without it, no authentication is chosen when offered.
    pub fn new(prefer_credentials: bool) -> Negotiation {
        Negotiation {
            phase: Phase::Greeting,
            buf: Vec::new(),
            prefer_credentials,
            credentials: None,
        }
    }

    /// Takes bytes the client sent. More than [`MAX_NEGOTIATION`] held at once is an error.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        if self.buf.len() + bytes.len() > MAX_NEGOTIATION {
            return Err(WireError::TooLong);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// How many more bytes the current message needs at least (0 when none is awaited):
    /// reading no more than this never reads past the request.
    pub fn wanted(&self) -> usize {
        let needed = match self.phase {
            Phase::Greeting => match *self.buf.as_slice() {
                [_, count, ..] => 2 + usize::from(count),
                _ => 2,
            },
            Phase::Credentials => match *self.buf.as_slice() {
                [_, user_len, ..] => match self.buf.get(2 + usize::from(user_len)) {
                    Some(&pass_len) => 3 + usize::from(user_len) + usize::from(pass_len),
                    None => 3 + usize::from(user_len),
                },
                _ => 2,
            },
            Phase::Request => match *self.buf.as_slice() {
                [_, _, _, 0x01, ..] => 4 + 4 + 2,
                [_, _, _, 0x04, ..] => 4 + 16 + 2,
                [_, _, _, 0x03, len, ..] => 5 + usize::from(len) + 2,
                [_, _, _, 0x03] => 5,
                // An unknown address type is answered as soon as it is seen.
                _ => 4,
            },
            Phase::Finished => return 0,
        };
        needed.saturating_sub(self.buf.len())
    }

    /// Advances as far as the bytes received allow.
    pub fn step(&mut self) -> Result<Step, WireError> {
        match self.phase {
            Phase::Greeting => {
                let Some((methods, used)) = parse_greeting(&self.buf)? else {
                    return Ok(Step::NeedMore);
                };
                let method = if self.prefer_credentials && methods.contains(&USER_PASS) {
                    USER_PASS
                } else if methods.contains(&NO_AUTH) {
                    NO_AUTH
                } else if methods.contains(&USER_PASS) {
                    USER_PASS
                } else {
                    self.phase = Phase::Finished;
                    return Ok(Step::Refuse {
                        answer: vec![VERSION, NO_ACCEPTABLE_METHOD],
                        why: Refusal::NoAcceptableMethod,
                    });
                };
                self.buf.drain(..used);
                self.phase = if method == USER_PASS {
                    Phase::Credentials
                } else {
                    Phase::Request
                };
                Ok(Step::Send(vec![VERSION, method]))
            }
            Phase::Credentials => {
                let Some((credentials, used)) = parse_user_pass(&self.buf)? else {
                    return Ok(Step::NeedMore);
                };
                self.buf.drain(..used);
                // Any credentials: clients use them to isolate streams, not to log in.
                self.credentials = Some(credentials);
                self.phase = Phase::Request;
                Ok(Step::Send(vec![1, 0]))
            }
            Phase::Request => {
                let parsed = match parse_request(&self.buf) {
                    Ok(None) => return Ok(Step::NeedMore),
                    Ok(Some(parsed)) => parsed,
                    Err(RequestError::Wire(e)) => return Err(e),
                    Err(RequestError::Refused(why)) => {
                        self.phase = Phase::Finished;
                        let code = why.reply().unwrap_or(Reply::GeneralFailure);
                        return Ok(Step::Refuse {
                            answer: reply(code, None),
                            why,
                        });
                    }
                };
                let ((command, target), used) = parsed;
                self.buf.drain(..used);
                self.phase = Phase::Finished;
                if command != CONNECT && command != RESOLVE {
                    let why = Refusal::Command(command);
                    return Ok(Step::Refuse {
                        answer: reply(Reply::CommandNotSupported, None),
                        why,
                    });
                }
                Ok(Step::Request(Request {
                    command,
                    target,
                    credentials: self.credentials.take(),
                }))
            }
            Phase::Finished => Ok(Step::NeedMore),
        }
    }

    /// Bytes received after the request (none when the driver reads at most
    /// [`wanted`](Negotiation::wanted)).
    pub fn into_rest(self) -> Vec<u8> {
        self.buf
    }
}

/// `None`: more bytes are needed; otherwise the value and how many bytes it took.
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
pub fn parse_user_pass(input: &[u8]) -> Parsed<Credentials> {
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
    match (input.get(2..user_end), input.get(user_end + 1..pass_end)) {
        (Some(user), Some(pass)) => Ok(Some((
            Credentials {
                user: user.to_vec(),
                pass: pass.to_vec(),
            },
            pass_end,
        ))),
        _ => Ok(None),
    }
}

/// Why a request cannot be acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Not SOCKS5: close.
    Wire(WireError),
    /// Well formed, but answered with a failure code.
    Refused(Refusal),
}

impl From<WireError> for RequestError {
    fn from(e: WireError) -> Self {
        RequestError::Wire(e)
    }
}

/// A request's command and target, and how many bytes it took; `None`: more are needed.
pub type ParsedRequest = Result<Option<((u8, Target), usize)>, RequestError>;

/// The request: version, command, reserved zero, then the target. The command is returned
/// as sent: the caller answers those it does not support. A name that is an IPv4 or IPv6
/// address literal becomes [`Target::Ip`], so that it is checked as the address it is.
pub fn parse_request(input: &[u8]) -> ParsedRequest {
    let [version, command, reserved, ..] = *input else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(WireError::Version(version).into());
    }
    if reserved != 0 {
        return Err(WireError::Reserved(reserved).into());
    }
    match parse_address(&input[3..])? {
        Some((target, used)) => Ok(Some(((command, target), 3 + used))),
        None => Ok(None),
    }
}

/// An address type, address and port, as in requests and replies.
fn parse_address(input: &[u8]) -> Result<Option<(Target, usize)>, RequestError> {
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
        other => return Err(RequestError::Refused(Refusal::AddressType(other))),
    };
    let end = host_start + host_len + 2;
    let Some(bytes) = input.get(host_start..end) else {
        return Ok(None);
    };
    let (host, port) = bytes.split_at(host_len);
    let port = u16::from_be_bytes([port[0], port[1]]);
    let ip = match (<[u8; 4]>::try_from(host), <[u8; 16]>::try_from(host)) {
        (Ok(v4), _) if kind == 0x01 => IpAddr::from(Ipv4Addr::from(v4)),
        (_, Ok(v6)) if kind == 0x04 => IpAddr::from(Ipv6Addr::from(v6)),
        _ => {
            if !is_hostname(host) {
                return Err(RequestError::Refused(Refusal::NotAHostname(host.len())));
            }
            // Hostname syntax is ASCII.
            let name: String = host.iter().map(|&b| char::from(b)).collect();
            match name.strip_suffix('.').unwrap_or(&name).parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => return Ok(Some((Target::Domain(name, port), end))),
            }
        }
    };
    Ok(Some((Target::Ip(SocketAddr::new(ip, port)), end)))
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

/// A client's greeting, offering `methods` (at most 255).
pub fn greeting(methods: &[u8]) -> Vec<u8> {
    let methods = &methods[..methods.len().min(255)];
    let mut out = vec![VERSION, methods.len() as u8];
    out.extend_from_slice(methods);
    out
}

/// A client's username/password request (each at most 255 bytes: longer ones are cut).
pub fn user_pass_request(credentials: &Credentials) -> Vec<u8> {
    let (user, pass) = (&credentials.user, &credentials.pass);
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

    fn credentials(user: &[u8], pass: &[u8]) -> Credentials {
        Credentials {
            user: user.to_vec(),
            pass: pass.to_vec(),
        }
    }

    /// Drives a negotiation the way the daemon does (reading at most `wanted` bytes, here
    /// from `input` at most `chunk` at a time); returns what was sent, the outcome, and how
    /// many bytes of `input` were taken.
    fn drive(
        prefer_credentials: bool,
        input: &[u8],
        chunk: usize,
    ) -> (Vec<u8>, Result<Step, WireError>, usize) {
        let mut negotiation = Negotiation::new(prefer_credentials);
        let (mut sent, mut taken) = (Vec::new(), 0);
        loop {
            match negotiation.step() {
                Ok(Step::Send(bytes)) => sent.extend_from_slice(&bytes),
                Ok(Step::NeedMore) => {
                    let n = negotiation.wanted().min(chunk);
                    assert!(n > 0, "NeedMore, but nothing wanted");
                    let end = (taken + n).min(input.len());
                    if end == taken {
                        return (sent, Err(WireError::Closed), taken);
                    }
                    negotiation.receive(&input[taken..end]).unwrap();
                    taken = end;
                }
                other => {
                    if matches!(other, Ok(Step::Request(_))) {
                        assert!(negotiation.into_rest().is_empty(), "read past the request");
                    }
                    return (sent, other, taken);
                }
            }
        }
    }

    fn connect_bytes(methods: &[u8], creds: Option<&Credentials>, target: &Target) -> Vec<u8> {
        let mut bytes = greeting(methods);
        if let Some(c) = creds {
            bytes.extend(user_pass_request(c));
        }
        bytes.extend(request(CONNECT, target));
        bytes
    }

    #[test]
    fn hostname_syntax() {
        for good in [
            "seed.bitcoin.sipa.be",
            "localhost",
            "localhost.",
            "node-1.example",
            "10.32.4.2",
            "2bqghnldu6mcug4pikzprwhtjjnsyederctvci6klcwzepnjd46ikjyd.onion",
            "ukeu3k5oycgaauneqgtnvselmt4yemvoilkln7jpvamvfx7dnkdq.b32.i2p",
        ] {
            assert!(is_hostname(good.as_bytes()), "{good}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["a".repeat(63).as_str(); 5].join(".");
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "a.b..",
            "node.test\n2026 connection opened session_id=00",
            "a b",
            "a_b",
            "a%0a",
            "ünïcode",
            "a\\b",
            "a\"b",
            "::1",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(!is_hostname(bad.as_bytes()), "{bad:?}");
        }
        let max = ["a".repeat(63).as_str(); 4].join(".");
        assert_eq!(max.len(), 255);
        assert!(
            !is_hostname(max.as_bytes()),
            "255 bytes without a trailing dot"
        );
        assert!(is_hostname(&max.as_bytes()[..253]), "253 bytes");
    }

    #[test]
    fn greetings_and_credentials() {
        assert_eq!(parse_greeting(&[5]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 0]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 0, 2, 9]), Ok(Some((vec![0, 2], 4))));
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(WireError::Version(4)));
        assert_eq!(parse_greeting(&[5, 0]), Err(WireError::NoMethods));
        let c = credentials(b"alice", b"s3cret");
        let request = user_pass_request(&c);
        for len in 0..request.len() {
            assert_eq!(parse_user_pass(&request[..len]), Ok(None), "{len}");
        }
        assert_eq!(parse_user_pass(&request), Ok(Some((c, request.len()))));
        assert_eq!(
            parse_user_pass(&[1, 0, 0]),
            Ok(Some((credentials(b"", b""), 3)))
        );
        assert_eq!(parse_user_pass(&[2, 0, 0]), Err(WireError::AuthVersion(2)));
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

    /// An address written as a name is the address: it is checked as one.
    #[test]
    fn address_literals_given_as_names_are_addresses() {
        for (name, ip) in [("127.0.0.1", "127.0.0.1"), ("10.32.4.2.", "10.32.4.2")] {
            let request = request(CONNECT, &Target::Domain(name.into(), 8333));
            let expected = Target::Ip(SocketAddr::new(ip.parse().unwrap(), 8333));
            assert_eq!(
                parse_request(&request),
                Ok(Some(((CONNECT, expected), request.len())))
            );
        }
    }

    #[test]
    fn bad_requests_say_why() {
        let refused = |r| Err(RequestError::Refused(r));
        assert_eq!(
            parse_request(&[5, 1, 1, 1]),
            Err(RequestError::Wire(WireError::Reserved(1)))
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 9]),
            refused(Refusal::AddressType(9))
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 0, 0, 1]),
            refused(Refusal::NotAHostname(0))
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 1, 0xff, 0, 1]),
            refused(Refusal::NotAHostname(1))
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 3, b'a', b'\n', b'b', 0, 1]),
            refused(Refusal::NotAHostname(3))
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

    /// Bitcoin Core's `-proxyrandomize`: both methods offered, random credentials. With an
    /// upstream they are asked for and kept; without one, no authentication is chosen.
    #[test]
    fn credentials_are_asked_for_when_an_upstream_isolates_by_them() {
        let c = credentials(b"0123456789", b"abcdef");
        let target = Target::Domain("seed.example".into(), 8333);
        let with = connect_bytes(&[NO_AUTH, USER_PASS], Some(&c), &target);
        let (sent, outcome, taken) = drive(true, &with, usize::MAX);
        assert_eq!(sent, [5, USER_PASS, 1, 0]);
        assert_eq!(
            outcome,
            Ok(Step::Request(Request {
                command: CONNECT,
                target: target.clone(),
                credentials: Some(c.clone()),
            }))
        );
        assert_eq!(taken, with.len());
        let without = connect_bytes(&[NO_AUTH, USER_PASS], None, &target);
        let (sent, outcome, _) = drive(false, &without, usize::MAX);
        assert_eq!(sent, [5, NO_AUTH]);
        assert!(matches!(
            outcome,
            Ok(Step::Request(Request {
                credentials: None,
                ..
            }))
        ));
        // Only username/password offered: taken even without an upstream.
        let only = connect_bytes(&[USER_PASS], Some(&c), &target);
        let (sent, _, _) = drive(false, &only, usize::MAX);
        assert_eq!(sent, [5, USER_PASS, 1, 0]);
        // Only no authentication offered: taken even with an upstream.
        let (sent, _, _) = drive(true, &connect_bytes(&[NO_AUTH], None, &target), 1);
        assert_eq!(sent, [5, NO_AUTH]);
        let (sent, outcome, _) = drive(true, &greeting(&[0x01, 0x80]), 1);
        assert_eq!(sent, b"");
        assert_eq!(
            outcome,
            Ok(Step::Refuse {
                answer: vec![5, 0xff],
                why: Refusal::NoAcceptableMethod
            })
        );
    }

    /// One byte at a time, or everything at once before any answer (a client that pipelines
    /// its request before the method reply), or any chunk size between: the same outcome,
    /// and never a byte read past the request.
    #[test]
    fn any_chunking_gives_the_same_outcome() {
        let c = credentials(b"u", b"p");
        let target = Target::Ip("[2001:db8::7]:8333".parse().unwrap());
        let bytes = connect_bytes(&[NO_AUTH, USER_PASS], Some(&c), &target);
        let mut after = bytes.clone();
        after.extend_from_slice(b"\xfa\xbf\xb5\xdaversion\0\0\0\0\0");
        let expected = drive(true, &bytes, usize::MAX);
        for chunk in 1..=bytes.len() {
            assert_eq!(drive(true, &bytes, chunk), expected, "chunks of {chunk}");
            // The client's first P2P bytes behind its request stay unread.
            assert_eq!(drive(true, &after, chunk), expected, "chunks of {chunk}");
        }
        // Everything in one receive: held, answered in order, nothing lost.
        let mut negotiation = Negotiation::new(true);
        negotiation.receive(&after).unwrap();
        assert_eq!(negotiation.step(), Ok(Step::Send(vec![5, USER_PASS])));
        assert_eq!(negotiation.step(), Ok(Step::Send(vec![1, 0])));
        assert!(matches!(negotiation.step(), Ok(Step::Request(_))));
        assert_eq!(negotiation.into_rest(), &after[bytes.len()..]);
    }

    #[test]
    fn refusals_are_answered_with_their_code() {
        let name = b"node.test\n2026-12-03 connection opened session_id=00";
        let mut bytes = greeting(&[NO_AUTH]);
        bytes.extend_from_slice(&[5, CONNECT, 0, 3, name.len() as u8]);
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(&8333u16.to_be_bytes());
        let (_, outcome, _) = drive(false, &bytes, 1);
        assert_eq!(
            outcome,
            Ok(Step::Refuse {
                answer: reply(Reply::HostUnreachable, None),
                why: Refusal::NotAHostname(name.len())
            })
        );
        let bind = [
            greeting(&[NO_AUTH]),
            vec![5, 2, 0, 1, 10, 0, 0, 1, 0x20, 0x8d],
        ]
        .concat();
        let (_, outcome, _) = drive(false, &bind, 3);
        assert_eq!(
            outcome,
            Ok(Step::Refuse {
                answer: reply(Reply::CommandNotSupported, None),
                why: Refusal::Command(2)
            })
        );
        let udp_type = [greeting(&[NO_AUTH]), vec![5, 1, 0, 7]].concat();
        let (_, outcome, _) = drive(false, &udp_type, 64);
        assert_eq!(
            outcome,
            Ok(Step::Refuse {
                answer: reply(Reply::AddressTypeNotSupported, None),
                why: Refusal::AddressType(7)
            })
        );
        let (_, outcome, _) = drive(false, b"GET / HTTP/1.1\r\n\r\n", 64);
        assert_eq!(outcome, Err(WireError::Version(b'G')));
        let mut negotiation = Negotiation::new(false);
        assert_eq!(
            negotiation.receive(&[0; MAX_NEGOTIATION + 1]),
            Err(WireError::TooLong)
        );
    }
}
