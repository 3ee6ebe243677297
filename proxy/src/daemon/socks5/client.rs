//! The client side of SOCKS5, for `--upstream-socks5` (Tor's SOCKS port, say): every upstream
//! connection is asked of that proxy. Names go to it unresolved, so the proxy itself never
//! resolves one (no DNS leak, and `.onion` works); a SOCKS client's credentials are passed on,
//! so that Tor keeps isolating its streams.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{self, Target};

pub(crate) use super::wire::Credentials;

/// Asks the upstream proxy on `stream` to connect to `target`; the reply's failure codes
/// become the errors a direct connect would have given.
pub(crate) async fn connect(
    stream: &mut TcpStream,
    target: &Target,
    credentials: Option<&Credentials>,
) -> io::Result<()> {
    request(stream, (wire::CONNECT, target), credentials)
        .await
        .map(drop)
}

/// Asks the upstream proxy on `stream` for the address of `name` (Tor's RESOLVE).
pub(crate) async fn resolve(
    stream: &mut TcpStream,
    name: &str,
    credentials: Option<&Credentials>,
) -> io::Result<IpAddr> {
    let target = Target::Domain(name.to_string(), 0);
    request(stream, (wire::RESOLVE, &target), credentials)
        .await?
        .ok_or_else(|| invalid("RESOLVE answered without an address"))
}

/// Greeting, credentials, the request; returns the reply's address (`None` for a name).
async fn request(
    stream: &mut TcpStream,
    (command, target): (u8, &Target),
    credentials: Option<&Credentials>,
) -> io::Result<Option<IpAddr>> {
    // With credentials both methods are offered: a server that takes them (Tor) isolates
    // streams by them, one that does not (microsocks) connects anyway.
    let offered: &[u8] = if credentials.is_some() {
        &[wire::USER_PASS, wire::NO_AUTH]
    } else {
        &[wire::NO_AUTH]
    };
    stream.write_all(&wire::greeting(offered)).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    if choice[0] != wire::VERSION || !offered.contains(&choice[1]) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the upstream SOCKS5 proxy accepts none of our authentication methods",
        ));
    }
    if let (wire::USER_PASS, Some(credentials)) = (choice[1], credentials) {
        stream
            .write_all(&wire::user_pass_request(credentials))
            .await?;
        let mut status = [0u8; 2];
        stream.read_exact(&mut status).await?;
        if status[1] != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the upstream SOCKS5 proxy refused the credentials",
            ));
        }
    }
    stream.write_all(&wire::request(command, target)).await?;
    // Read exactly the reply: the remote's bytes follow it.
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    if head[0] != wire::VERSION {
        return Err(invalid(format!("version {:#04x}", head[0])));
    }
    let address_len = match head[3] {
        0x01 => 4,
        0x04 => 16,
        0x03 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await?;
            usize::from(len[0])
        }
        other => return Err(invalid(format!("address type {other:#04x}"))),
    };
    let mut address = vec![0u8; address_len + 2];
    stream.read_exact(&mut address).await?;
    let bound = match head[3] {
        0x01 => <[u8; 4]>::try_from(&address[..4])
            .ok()
            .map(|a| Ipv4Addr::from(a).into()),
        0x04 => <[u8; 16]>::try_from(&address[..16])
            .ok()
            .map(|a| Ipv6Addr::from(a).into()),
        _ => None,
    };
    let code = head[1];
    match code {
        0x00 => Ok(bound),
        0x02 => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the upstream SOCKS5 proxy does not allow this connection",
        )),
        0x03 => Err(io::ErrorKind::NetworkUnreachable.into()),
        0x04 => Err(io::ErrorKind::HostUnreachable.into()),
        0x05 => Err(io::ErrorKind::ConnectionRefused.into()),
        0x06 => Err(io::ErrorKind::TimedOut.into()),
        0x07 => Err(io::ErrorKind::Unsupported.into()),
        other => Err(io::Error::other(format!(
            "the upstream SOCKS5 proxy replied {other:#04x}"
        ))),
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the upstream SOCKS5 proxy's reply: {e}"),
    )
}
