//! `--user-agent-suffix` end to end: a redirected v1 client's `version` reaches the node
//! behind the independent v2 responder with `/bip324-proxy:VERSION/` appended to its user
//! agent, every other byte as the client sent it; without the option, untouched.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use bip324_e2e::listening_node::ListeningNode;
use bip324_e2e::responder::Responder;
use bip324_e2e::testbed::{
    NODE_PORT, Proxy, REMOTE_V4, TAGGED_GID, TwoHosts, nft_redirect, noisy_responder,
};
use bip324_e2e::v1::{self, Message, REGTEST_MAGIC};

/// The client's `version` as the node behind the responder received it.
fn version_at_the_node(proxy_args: &[&str], agent: &'static str) -> (Vec<u8>, Vec<u8>) {
    let hosts = TwoHosts::create();
    let (node, _responder) = hosts.remote.run(|| {
        let node = ListeningNode::spawn(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            REGTEST_MAGIC,
            "127.0.0.1:1".parse().unwrap(),
        )
        .unwrap();
        let upstream = node.addr();
        let listener = TcpListener::bind(("::", NODE_PORT)).unwrap();
        (
            node,
            Responder::spawn(listener, noisy_responder(upstream)).unwrap(),
        )
    });
    nft_redirect(&hosts.client, TAGGED_GID);
    let _proxy = Proxy::start(&hosts.client, proxy_args);
    let remote = SocketAddr::new(REMOTE_V4.parse().unwrap(), NODE_PORT);
    let sent = v1::version_payload(remote, 0xabcdef, agent);
    let payload = sent.clone();
    hosts.client.run_as_group(TAGGED_GID, move || {
        let mut stream = TcpStream::connect(remote).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        v1::write_message(
            &mut stream,
            REGTEST_MAGIC,
            &Message::new("version", payload),
        )
        .unwrap();
        v1::read_message(&mut stream, REGTEST_MAGIC)
            .unwrap()
            .expect("the node's version");
    });
    let seen = node.wait_for_peers(1, Duration::from_secs(5));
    (sent, seen[0].received[0].payload.clone())
}

#[test]
fn the_suffix_is_appended_and_nothing_else_changes() {
    let agent = "/Satoshi:25.1.0/";
    let (sent, received) = version_at_the_node(&["--user-agent-suffix"], agent);
    let suffixed = format!("{agent}bip324-proxy:{}/", env!("CARGO_PKG_VERSION"));
    // Fixed fields, then the user agent (one length byte here), then the rest.
    const AT: usize = 80;
    assert_eq!(
        received[..AT],
        sent[..AT],
        "every field before the user agent"
    );
    assert_eq!(usize::from(received[AT]), suffixed.len());
    assert_eq!(
        &received[AT + 1..AT + 1 + suffixed.len()],
        suffixed.as_bytes()
    );
    assert_eq!(
        received[AT + 1 + suffixed.len()..],
        sent[AT + 1 + agent.len()..],
        "every field after it"
    );
}

#[test]
fn without_the_option_the_version_is_untouched() {
    let (sent, received) = version_at_the_node(&[], "/btcwire:0.5.0/btcd:0.24.2/");
    assert_eq!(received, sent);
}
