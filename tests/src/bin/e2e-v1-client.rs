//! An unmodified v1 client: it knows nothing of BIP-324 or of any proxy. It connects to a
//! node, does the version handshake and a ping, then sends one large and many small messages
//! and checks each echo byte for byte, in order.
//!
//! Usage: e2e-v1-client ADDR [--large BYTES] [--small COUNT] [--pace-ms MS] [--hold-ms MS]
//!        [--ipv6-only 1] [--socks5 PROXY]
//! Prints `key=value` lines (peer, local, echoed, bytes_echoed, and the bytes it sent and
//! received on the wire); with --pace-ms, waits that long between small messages (a
//! connection that lives through whatever happens meanwhile); with --hold-ms, keeps the
//! connection open that long after printing;
//! with --ipv6-only 1, connects from an IPv6-only socket (which cannot reach a v4-mapped
//! address: the kernel fails such a connect before any packet); with --socks5, reaches ADDR
//! through that SOCKS5 proxy (CONNECT, no authentication). Exits 1 on any mismatch.

use std::io::{BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use bip324_e2e::socks5_client::To;
use bip324_e2e::v1::{
    Message, PLAINTEXT_MARKER as MARKER, REGTEST_MAGIC, read_message, version_payload,
    write_message,
};

const SMALL_COMMANDS: [&str; 5] = ["tx", "inv", "getdata", "e2e-custom", "headers"];

struct Args {
    addr: SocketAddr,
    large: usize,
    small: usize,
    pace_ms: usize,
    hold_ms: usize,
    ipv6_only: bool,
    socks5: Option<SocketAddr>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .ok_or(
            "usage: e2e-v1-client ADDR [--large BYTES] [--small COUNT] [--pace-ms MS] [--hold-ms MS] [--ipv6-only 1] [--socks5 PROXY]",
        )?
        .parse()
        .map_err(|e| format!("bad address: {e}"))?;
    let mut parsed = Args {
        addr,
        large: 4_000_000,
        small: 10_000,
        pace_ms: 0,
        hold_ms: 0,
        ipv6_only: false,
        socks5: None,
    };
    while let Some(flag) = args.next() {
        if flag == "--socks5" {
            let proxy = args.next().and_then(|v| v.parse().ok());
            parsed.socks5 = Some(proxy.ok_or("--socks5 needs an address")?);
            continue;
        }
        let value: usize = args
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--large" => parsed.large = value,
            "--small" => parsed.small = value,
            "--pace-ms" => parsed.pace_ms = value,
            "--hold-ms" => parsed.hold_ms = value,
            "--ipv6-only" => parsed.ipv6_only = value != 0,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(parsed)
}

/// The messages sent after the handshake, in order; the same list checks the echoes.
fn workload(large: usize, small: usize) -> impl Iterator<Item = Message> {
    let big = (large > 0).then(|| {
        let mut payload: Vec<u8> = (0..large).map(|i| (i * 31 % 251) as u8).collect();
        let n = MARKER.len().min(payload.len());
        payload[..n].copy_from_slice(&MARKER[..n]);
        Message::new("block", payload)
    });
    let smalls = (0..small).map(|i| {
        let mut payload = MARKER.to_vec();
        payload.extend_from_slice(format!("-{i}-").as_bytes());
        payload.resize(payload.len() + i % 200, (i % 256) as u8);
        Message::new(SMALL_COMMANDS[i % SMALL_COMMANDS.len()], payload)
    });
    big.into_iter().chain(smalls)
}

fn connect(args: &Args) -> std::io::Result<TcpStream> {
    if let Some(proxy) = args.socks5 {
        return match bip324_e2e::socks5_client::connect(proxy, To::Ip(args.addr), false)? {
            (stream, 0) => Ok(stream),
            (_, code) => Err(std::io::Error::other(format!("SOCKS5 reply {code}"))),
        };
    }
    let SocketAddr::V6(v6) = args.addr else {
        return TcpStream::connect_timeout(&args.addr, Duration::from_secs(10));
    };
    if !args.ipv6_only {
        return TcpStream::connect_timeout(&args.addr, Duration::from_secs(10));
    }
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn6, setsockopt, socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    nix::sys::socket::connect(fd.as_raw_fd(), &SockaddrIn6::from(v6))?;
    Ok(TcpStream::from(fd))
}

fn run(args: &Args) -> Result<(), String> {
    let stream = connect(args).map_err(|e| format!("connect to {}: {e}", args.addr))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    println!("peer={}", stream.peer_addr().map_err(|e| e.to_string())?);
    println!("local={}", stream.local_addr().map_err(|e| e.to_string())?);
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let magic = REGTEST_MAGIC;
    let io = |e: std::io::Error| e.to_string();
    let mut expect = |command: &str| -> Result<Message, String> {
        match read_message(&mut reader, magic).map_err(io)? {
            Some(m) if m.command == command => Ok(m),
            Some(m) => Err(format!("expected {command}, got {m:?}")),
            None => Err(format!("connection closed while waiting for {command}")),
        }
    };

    let version = version_payload(
        args.addr,
        0x5eed,
        &format!("/e2e-v1-client:{}/", String::from_utf8_lossy(MARKER)),
    );
    let version_len = 24 + version.len();
    write_message(&mut writer, magic, &Message::new("version", version)).map_err(io)?;
    let their_version = expect("version")?;
    expect("verack")?;
    write_message(&mut writer, magic, &Message::new("verack", [])).map_err(io)?;
    let nonce = 0x0123_4567_89ab_cdefu64.to_le_bytes();
    write_message(&mut writer, magic, &Message::new("ping", nonce)).map_err(io)?;
    let pong = expect("pong")?;
    // version, verack and pong, with their headers.
    let received_handshake = 24 + their_version.payload.len() + 24 + 24 + pong.payload.len();
    if pong.payload != nonce {
        return Err(format!(
            "pong carries {:02x?}, expected the ping's nonce",
            pong.payload
        ));
    }

    // Send on another thread while reading: a long pipeline must never deadlock.
    let (large, small) = (args.large, args.small);
    let pace = Duration::from_millis(args.pace_ms as u64);
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let mut out = BufWriter::with_capacity(64 * 1024, writer);
        for message in workload(large, small) {
            write_message(&mut out, magic, &message)?;
            if !pace.is_zero() {
                out.flush()?;
                std::thread::sleep(pace);
            }
        }
        out.flush()
    });
    let mut echoed = 0;
    let mut bytes = 0;
    for (i, sent) in workload(large, small).enumerate() {
        let got = read_message(&mut reader, magic)
            .map_err(|e| format!("echo {i}: {e}"))?
            .ok_or(format!("connection closed after {i} echoes"))?;
        if got != sent {
            return Err(format!("echo {i} differs: sent {sent:?}, got {got:?}"));
        }
        echoed += 1;
        bytes += got.payload.len();
    }
    sender
        .join()
        .map_err(|_| "sender panicked".to_string())?
        .map_err(|e| format!("send: {e}"))?;
    println!("echoed={echoed}");
    println!("bytes_echoed={bytes}");
    // Every byte on the wire: the handshake's and the workload's, both ways.
    let handshake_sent = [version_len, 24, 24 + 8];
    let sent: usize = handshake_sent.iter().sum::<usize>()
        + workload(args.large, args.small)
            .map(|m| 24 + m.payload.len())
            .sum::<usize>();
    println!("bytes_sent={sent}");
    println!(
        "bytes_received={}",
        received_handshake + 24 * echoed + bytes
    );
    std::io::Write::flush(&mut std::io::stdout()).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(args.hold_ms as u64));
    Ok(())
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|args| run(&args));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
