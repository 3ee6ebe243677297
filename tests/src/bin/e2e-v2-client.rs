//! A client that already speaks v2 (rust-bitcoin's `bip324` crate as initiator): the proxy must
//! pass it through untouched. It does the version handshake and a ping over v2.
//!
//! Usage: e2e-v2-client ADDR. Prints `peer=` and `pong=ok`; exits 1 on failure.

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use bip324::io::{Payload, Protocol};
use bip324::{PacketType, Role};
use bip324_e2e::v1::REGTEST_MAGIC;

fn run(addr: SocketAddr) -> Result<(), String> {
    let stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    println!("peer={}", stream.peer_addr().map_err(|e| e.to_string())?);
    let reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut protocol = Protocol::new(
        REGTEST_MAGIC,
        Role::Initiator,
        Some(vec![7; 99]),
        None,
        reader,
        stream,
    )
    .map_err(|e| format!("v2 handshake: {e}"))?;
    let e = |e: bip324::io::ProtocolError| e.to_string();
    let mut version = vec![0u8];
    version.extend_from_slice(b"version\0\0\0\0\0");
    version.extend_from_slice(b"v2 client version payload");
    protocol.write(&Payload::genuine(version)).map_err(e)?;
    // Ping has short ID 18, pong 19.
    protocol
        .write(&Payload::genuine(vec![18, 1, 2, 3, 4, 5, 6, 7, 8]))
        .map_err(e)?;
    let mut seen = Vec::new();
    loop {
        let payload = protocol.read().map_err(e)?;
        if payload.packet_type() == PacketType::Decoy {
            continue;
        }
        let contents = payload.contents().to_vec();
        if contents.first() == Some(&19) {
            if contents[1..] != [1, 2, 3, 4, 5, 6, 7, 8] {
                return Err(format!("pong carries {:?}", &contents[1..]));
            }
            println!("pong=ok");
            return Ok(());
        }
        seen.push(contents.first().copied());
        if seen.len() > 10 {
            return Err(format!("no pong among {seen:?}"));
        }
    }
}

fn main() -> ExitCode {
    let Some(addr) = std::env::args().nth(1).and_then(|a| a.parse().ok()) else {
        eprintln!("usage: e2e-v2-client ADDR");
        return ExitCode::from(2);
    };
    match run(addr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
