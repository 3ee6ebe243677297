//! The client side of SOCKS5 (RFC 1928, with RFC 1929 credentials), written from the RFCs
//! independently of the proxy's code, for test clients that reach a node through a SOCKS5
//! proxy.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// How a CONNECT names its target.
pub enum To<'a> {
    Ip(SocketAddr),
    Name(&'a str, u16),
}

/// Greets `proxy` (with username/password when `credentials`) and asks CONNECT to `to`;
/// returns the stream and the reply code (0: succeeded).
pub fn connect(proxy: SocketAddr, to: To<'_>, credentials: bool) -> io::Result<(TcpStream, u8)> {
    let offer = if credentials {
        Offer::Only(RANDOM_USER, RANDOM_PASS)
    } else {
        Offer::NoAuth
    };
    request(proxy, 1, to, offer).map(|(stream, _, code, _)| (stream, code))
}

/// The credentials `connect` sends, random-looking as Bitcoin Core's.
pub const RANDOM_USER: &[u8] = b"alice";
pub const RANDOM_PASS: &[u8] = b"x7Qz!k2p";

/// What a greeting offers.
#[derive(Clone, Copy)]
pub enum Offer<'a> {
    /// No authentication only.
    NoAuth,
    /// Username/password only, with these.
    Only(&'a [u8], &'a [u8]),
    /// Both, as Bitcoin Core's `-proxyrandomize` does (`[0x00, 0x02]`), with these
    /// credentials, sent if the proxy chooses username/password.
    Both(&'a [u8], &'a [u8]),
}

/// CONNECT to `to` offering `offer`: the stream, the method the proxy chose and the reply
/// code (none when it accepted no method).
pub fn connect_offering(
    proxy: SocketAddr,
    to: To<'_>,
    offer: Offer<'_>,
) -> io::Result<(TcpStream, u8, u8)> {
    request(proxy, 1, to, offer).map(|(stream, method, code, _)| (stream, method, code))
}

/// Tor's RESOLVE (command 0xf0) of `name`: the reply code and the address it carried.
pub fn resolve(proxy: SocketAddr, name: &str) -> io::Result<(u8, IpAddr)> {
    request(proxy, 0xf0, To::Name(name, 0), Offer::NoAuth).map(|(_, _, code, addr)| (code, addr))
}

/// `command` for `to`: the stream, the method chosen, the reply code and the reply's address.
fn request(
    proxy: SocketAddr,
    command: u8,
    to: To<'_>,
    offer: Offer<'_>,
) -> io::Result<(TcpStream, u8, u8, IpAddr)> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut stream = TcpStream::connect_timeout(&proxy, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    let (greeting, credentials): (&[u8], _) = match offer {
        Offer::NoAuth => (&[5, 1, 0], None),
        Offer::Only(user, pass) => (&[5, 1, 2], Some((user, pass))),
        Offer::Both(user, pass) => (&[5, 2, 0, 2], Some((user, pass))),
    };
    stream.write_all(greeting)?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice)?;
    if choice[0] != 5 || !greeting[2..].contains(&choice[1]) {
        return Err(bad(format!("the proxy chose method {choice:?}")));
    }
    if let (2, Some((user, pass))) = (choice[1], credentials) {
        // RFC 1929: version 1, then each with its length.
        let mut auth = vec![1, user.len() as u8];
        auth.extend_from_slice(user);
        auth.push(pass.len() as u8);
        auth.extend_from_slice(pass);
        stream.write_all(&auth)?;
        let mut ok = [0u8; 2];
        stream.read_exact(&mut ok)?;
        if ok != [1, 0] {
            return Err(bad(format!("credentials refused: {ok:?}")));
        }
    }
    let mut request = vec![5, command, 0];
    match to {
        To::Ip(SocketAddr::V4(a)) => {
            request.push(1);
            request.extend_from_slice(&a.ip().octets());
            request.extend_from_slice(&a.port().to_be_bytes());
        }
        To::Ip(SocketAddr::V6(a)) => {
            request.push(4);
            request.extend_from_slice(&a.ip().octets());
            request.extend_from_slice(&a.port().to_be_bytes());
        }
        To::Name(name, port) => {
            request.extend_from_slice(&[3, name.len() as u8]);
            request.extend_from_slice(name.as_bytes());
            request.extend_from_slice(&port.to_be_bytes());
        }
    }
    stream.write_all(&request)?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head)?;
    let address = match head[3] {
        1 => {
            let mut a = [0u8; 4 + 2];
            stream.read_exact(&mut a)?;
            IpAddr::from(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        }
        4 => {
            let mut a = [0u8; 16 + 2];
            stream.read_exact(&mut a)?;
            let octets: [u8; 16] = a[..16].try_into().expect("16 bytes");
            IpAddr::from(Ipv6Addr::from(octets))
        }
        other => return Err(bad(format!("reply address type {other}"))),
    };
    Ok((stream, choice[1], head[1], address))
}
