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
    request(proxy, 1, to, credentials).map(|(stream, code, _)| (stream, code))
}

/// Tor's RESOLVE (command 0xf0) of `name`: the reply code and the address it carried.
pub fn resolve(proxy: SocketAddr, name: &str) -> io::Result<(u8, IpAddr)> {
    request(proxy, 0xf0, To::Name(name, 0), false).map(|(_, code, addr)| (code, addr))
}

/// `command` for `to`: the stream, the reply code and the reply's address.
fn request(
    proxy: SocketAddr,
    command: u8,
    to: To<'_>,
    credentials: bool,
) -> io::Result<(TcpStream, u8, IpAddr)> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut stream = TcpStream::connect_timeout(&proxy, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    let method = if credentials { 2 } else { 0 };
    stream.write_all(&[5, 1, method])?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice)?;
    if choice != [5, method] {
        return Err(bad(format!("the proxy chose method {choice:?}")));
    }
    if credentials {
        // Random credentials, as Bitcoin Core sends for stream isolation.
        stream.write_all(b"\x01\x05alice\x08x7Qz!k2p")?;
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
    Ok((stream, head[1], address))
}
