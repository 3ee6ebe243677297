//! A listening v1-only node for the system test of inbound mode: it knows nothing of BIP-324.
//! It answers each peer's `version` (regtest) with its own, `verack` and an `addr` naming
//! ADVERTISED, and prints `peer=ADDR` for each peer as it sees it.
//!
//! Usage: e2e-v1-node LISTEN ADVERTISED   (e.g. [::]:8333 10.32.4.1:8333)

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::time::Duration;

use bip324_e2e::listening_node::ListeningNode;
use bip324_e2e::v1::REGTEST_MAGIC;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [listen, advertised] => listen
            .parse::<SocketAddr>()
            .and_then(|l| advertised.parse::<SocketAddr>().map(|a| (l, a))),
        _ => {
            eprintln!("usage: e2e-v1-node LISTEN ADVERTISED");
            return ExitCode::from(2);
        }
    };
    let Ok((listen, advertised)) = parsed else {
        eprintln!("e2e-v1-node: bad address");
        return ExitCode::from(2);
    };
    let node = match TcpListener::bind(listen)
        .and_then(|l| ListeningNode::spawn(l, REGTEST_MAGIC, advertised))
    {
        Ok(node) => node,
        Err(e) => {
            eprintln!("e2e-v1-node: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening={listen}");
    let mut printed = 0;
    loop {
        let seen = node.wait_for_peers(printed + 1, Duration::from_secs(3600));
        for peer in &seen[printed..] {
            println!("peer={}", peer.peer);
        }
        printed = seen.len();
    }
}
