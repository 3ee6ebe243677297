//! The remote host's node, and the test's own nftables redirect.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;

use super::{NODE_PORT, PROXY_PORT};
use crate::echo::spawn_echo_node;
use crate::netns::Netns;
use crate::responder::{Responder, ResponderOptions};
use crate::server::Server;
use crate::v1::REGTEST_MAGIC;

/// The remote host's node: a v2 responder on `NODE_PORT` (both families) in front of a v1
/// echo node on its loopback.
pub struct RemoteNode {
    pub responder: Responder,
    _echo: Server,
}

impl RemoteNode {
    pub fn start(
        host: &Netns,
        options: impl FnOnce(SocketAddr) -> ResponderOptions + Send + 'static,
    ) -> RemoteNode {
        host.run(move || {
            let echo = spawn_echo_node(TcpListener::bind("127.0.0.1:0")?, REGTEST_MAGIC)?;
            let options = options(echo.addr());
            // [::] accepts IPv4 too (v4-mapped), as a dual-stack node does.
            let listener = TcpListener::bind(("::", NODE_PORT))?;
            let responder = Responder::spawn(listener, options)?;
            io::Result::Ok(RemoteNode {
                responder,
                _echo: echo,
            })
        })
        .expect("start the remote node")
    }
}

impl RemoteNode {
    /// A node that only speaks v1, on `NODE_PORT`. Like Bitcoin Core, it drops a peer whose
    /// first 24 bytes are not a v1 header of its network.
    pub fn v1_only(host: &Netns) -> Server {
        host.run(|| spawn_echo_node(TcpListener::bind(("::", NODE_PORT))?, REGTEST_MAGIC))
            .expect("start the v1-only node")
    }
}

/// Responder settings that exercise garbage and decoys everywhere they may appear.
pub fn noisy_responder(upstream: SocketAddr) -> ResponderOptions {
    ResponderOptions {
        magic: REGTEST_MAGIC,
        garbage_len: 1000,
        decoys_before_version: 2,
        decoys_after_version: 2,
        decoy_every: 1000,
        upstream,
        keep_received: true,
    }
}

/// Installs, in the client host, an nftables redirect of the tagged group's TCP connections
/// to `NODE_PORT` towards the proxy (with the `nft` command; the product's CLI does this
/// through netlink).
pub fn nft_redirect(host: &Netns, gid: u32) {
    let ruleset = format!(
        "table inet b324test {{
           chain output {{
             type nat hook output priority -100; policy accept;
             meta l4proto tcp tcp dport {NODE_PORT} meta skgid {gid} redirect to :{PROXY_PORT}
           }}
         }}"
    );
    let mut nft = host
        .command("nft", None)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft (apt-get install nftables)");
    nft.stdin
        .take()
        .unwrap()
        .write_all(ruleset.as_bytes())
        .unwrap();
    let output = nft.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "nft failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
