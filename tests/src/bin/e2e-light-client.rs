//! Kyoto (crate `bip157` from crates.io), a real BIP-157 light client, unmodified: it knows
//! nothing of this proxy, speaks v1 to peers that do not announce v2 and always speaks v1
//! through a SOCKS5 proxy (as to Tor). It syncs headers, filter headers and filters from one
//! regtest peer, and downloads every block whose filter matches the watched script.
//!
//! Usage: e2e-light-client PEER --watch SCRIPT_HEX [--socks5 ADDR] [--v2 1] [--timeout SECS]
//! PEER is an address or NAME:PORT.
//! With --v2 1 it is told the peer offers `NODE_P2P_V2`, and speaks v2 itself (with its own
//! `bip324` crate) unless it goes through a SOCKS5 proxy.
//! Prints `key=value` lines: the tip it synced to (`tip_height`, `tip_hash`), the heights of the
//! blocks it downloaded (`matched`) and whether they pay the script (`paid`). Exits 1 if it did
//! not sync within the timeout.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bip157::chain::ChainState;
use bip157::tokio;
use bip157::{Builder, Client, Event, Network, ScriptBuf, ServiceFlags, TrustedPeer};

struct Args {
    peer: TrustedPeer,
    watch: ScriptBuf,
    socks5: Option<SocketAddr>,
    v2: bool,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let usage =
        "usage: e2e-light-client PEER --watch SCRIPT_HEX [--socks5 ADDR] [--v2 1] [--timeout SECS]";
    let mut args = std::env::args().skip(1);
    let peer = peer(&args.next().ok_or(usage)?)?;
    let (mut watch, mut socks5, mut timeout) = (None, None, Duration::from_secs(120));
    let mut v2 = false;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(usage)?;
        match flag.as_str() {
            "--watch" => {
                let bytes = hex::decode(&value).map_err(|e| format!("bad script: {e}"))?;
                watch = Some(ScriptBuf::from_bytes(bytes));
            }
            "--socks5" => socks5 = Some(value.parse().map_err(|e| format!("bad proxy: {e}"))?),
            "--v2" => v2 = value == "1",
            "--timeout" => {
                let secs = value.parse().map_err(|e| format!("bad timeout: {e}"))?;
                timeout = Duration::from_secs(secs);
            }
            _ => return Err(usage.into()),
        }
    }
    Ok(Args {
        peer,
        watch: watch.ok_or(usage)?,
        socks5,
        v2,
        timeout,
    })
}

/// An address, or a name and port (which Kyoto resolves when it connects: through the SOCKS5
/// proxy with Tor's RESOLVE when there is one).
fn peer(arg: &str) -> Result<TrustedPeer, String> {
    if let Ok(addr) = arg.parse::<SocketAddr>() {
        return Ok(TrustedPeer::from_socket_addr(addr));
    }
    let (name, port) = arg.rsplit_once(':').ok_or(format!("bad peer {arg}"))?;
    let port = port
        .parse()
        .map_err(|e| format!("bad port in {arg}: {e}"))?;
    Ok(TrustedPeer::from_hostname(name, port))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut peer = args.peer;
    if args.v2 {
        peer.set_services(ServiceFlags::P2P_V2);
    }
    let mut builder = Builder::new(Network::Regtest)
        .chain_state(ChainState::Checkpoint(
            bip157::HashCheckpoint::from_genesis(Network::Regtest),
        ))
        .add_peer(peer)
        .whitelist_only()
        .required_peers(1);
    if let Some(proxy) = args.socks5 {
        builder = builder.socks5_proxy(proxy);
    }
    let (node, client) = builder.build();
    let node = tokio::spawn(async move { node.run().await });
    let Client {
        requester,
        mut info_rx,
        mut warn_rx,
        mut event_rx,
    } = client;
    let (mut matched, mut paid) = (Vec::new(), true);
    let synced = tokio::time::timeout(args.timeout, async {
        loop {
            tokio::select! {
                Some(info) = info_rx.recv() => eprintln!("info: {info}"),
                Some(warning) = warn_rx.recv() => eprintln!("warning: {warning}"),
                Some(event) = event_rx.recv() => match event {
                    Event::IndexedFilter(filter) if filter.contains_any([&args.watch].into_iter()) => {
                        let height = filter.height();
                        let block = requester.get_block(filter.block_hash()).await;
                        let pays = block.is_ok_and(|indexed| {
                            indexed.block.txdata.iter().any(|tx| {
                                tx.output.iter().any(|out| out.script_pubkey == args.watch)
                            })
                        });
                        matched.push(height);
                        paid &= pays;
                    }
                    Event::FiltersSynced(update) => return update.tip(),
                    _ => {}
                },
                else => std::future::pending().await,
            }
        }
    })
    .await;
    let _ = requester.shutdown();
    let _ = node.await;
    let Ok(tip) = synced else {
        eprintln!("not synced within {:?}", args.timeout);
        return ExitCode::FAILURE;
    };
    let matched: Vec<String> = matched.iter().map(u32::to_string).collect();
    println!("tip_height={}", tip.height);
    println!("tip_hash={}", tip.hash);
    println!("matched={}", matched.join(","));
    println!("paid={paid}");
    ExitCode::SUCCESS
}
