//! The client side of SOCKS5 (RFC 1928, with RFC 1929 credentials), written from the RFCs
//! independently of the proxy's code, for test clients that reach a node through a SOCKS5
//! proxy.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How a CONNECT names its target.
pub enum To<'a> {
    Ip(SocketAddr),
    Name(&'a str, u16),
}

/// Greets `proxy` (with username/password when `credentials`) and asks CONNECT to `to`;
/// returns the stream and the reply code (0: succeeded).
pub fn connect(proxy: SocketAddr, to: To<'_>, credentials: bool) -> io::Result<(TcpStream, u8)> {
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
    let mut request = vec![5, 1, 0];
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
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        other => return Err(bad(format!("reply address type {other}"))),
    };
    stream.read_exact(&mut vec![0u8; rest])?;
    Ok((stream, head[1]))
}
