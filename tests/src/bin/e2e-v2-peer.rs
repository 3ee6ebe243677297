//! An independent v2 initiator (rust-bitcoin's `bip324` crate) for the system test of inbound
//! mode: it connects to a node, sends `version` over v2 and reads the node's first message.
//!
//! Usage: e2e-v2-peer NODE. Prints `local=ADDR session=HEX command=NAME services=N` (the
//! services field of the reply when it is a `version`, else 0); exits 1 on failure.

use std::net::SocketAddr;
use std::process::ExitCode;

use bip324_e2e::initiator::V2Peer;
use bip324_e2e::v1::{self, Message, REGTEST_MAGIC};

fn run(node: SocketAddr) -> std::io::Result<String> {
    let mut peer = V2Peer::connect(node, REGTEST_MAGIC, (100, 1))?;
    let version = v1::version_payload(node, 7, "/system-test-peer:0.1/");
    peer.send(&Message::new("version", version))?;
    let reply = peer.receive()?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
    let services = match reply.payload.get(4..12) {
        Some(bytes) if reply.command == "version" => {
            u64::from_le_bytes(bytes.try_into().expect("eight bytes"))
        }
        _ => 0,
    };
    Ok(format!(
        "local={} session={} command={} services={services}",
        peer.local_addr(),
        hex::encode(peer.session_id()),
        reply.command
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(Ok(node)) = args.first().map(|a| a.parse::<SocketAddr>()) else {
        eprintln!("usage: e2e-v2-peer NODE");
        return ExitCode::from(2);
    };
    match run(node) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("e2e-v2-peer: the v2 initiator failed: {e}");
            ExitCode::FAILURE
        }
    }
}
