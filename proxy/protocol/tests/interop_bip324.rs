//! Our initiator (through the proxy's handshake driver), encoder and decoder against an
//! independent BIP-324 responder built on rust-bitcoin's `bip324` crate, relaying to a v1
//! echo node, over loopback. Reads are cut into small pieces to exercise every boundary.

use std::io::Cursor;
use std::net::{TcpListener, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bip324_e2e::echo::spawn_echo_node;
use bip324_e2e::pipe_io;
use bip324_e2e::responder::{Responder, ResponderOptions, Transport};
use bip324_e2e::v1::{Message, REGTEST_MAGIC, read_message};
use bip324_protocol::{Decoder, Encoder, HandshakeEntropy, KeyPrefix, Magic, Role};

struct Peer {
    responder: Responder,
    _echo: bip324_e2e::server::Server,
}

fn start_peer(decoy_every: usize) -> Peer {
    let echo = spawn_echo_node(TcpListener::bind("127.0.0.1:0").unwrap(), REGTEST_MAGIC).unwrap();
    let options = ResponderOptions {
        magic: REGTEST_MAGIC,
        garbage_len: 4095,
        decoys_before_version: 3,
        decoys_after_version: 3,
        decoy_every,
        upstream: echo.addr(),
        keep_received: true,
    };
    let responder = Responder::spawn(TcpListener::bind("127.0.0.1:0").unwrap(), options).unwrap();
    Peer {
        responder,
        _echo: echo,
    }
}

fn entropy() -> HandshakeEntropy {
    let mut secret_key = [0u8; 32];
    let mut aux_rand = [0u8; 32];
    getrandom::fill(&mut secret_key).unwrap();
    getrandom::fill(&mut aux_rand).unwrap();
    let mut garbage = vec![0u8; 1234];
    getrandom::fill(&mut garbage).unwrap();
    HandshakeEntropy {
        secret_key,
        aux_rand,
        garbage,
    }
}

/// Handshake through the driver the proxy uses, with reads of at most `chunk` bytes, until
/// the responder's decoys and version packet authenticated.
fn handshake(stream: &mut TcpStream, chunk: usize) -> ([u8; 32], Encoder, Decoder) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let (session, leftover) = runtime.block_on(async {
        stream.set_nonblocking(true).unwrap();
        let tokio_stream = tokio::net::TcpStream::from_std(stream.try_clone().unwrap()).unwrap();
        let mut chunked = Chunked(tokio_stream, chunk);
        let v2 = (
            Role::Initiator,
            Magic(REGTEST_MAGIC),
            KeyPrefix::NONE,
            entropy(),
        );
        let mut events = |_| {};
        bip324_driver::handshake(&mut chunked, v2, &[], &mut (), &mut events)
            .await
            .expect("the responder completes the handshake")
    });
    stream.set_nonblocking(false).unwrap();
    let session = *session;
    let mut decoder = session.decoder;
    assert!(decoder.version_received());
    let mut early = Vec::new();
    pipe_io::push_all(&mut decoder, &leftover, &mut early).unwrap();
    assert!(
        early.is_empty(),
        "the responder sends nothing before our first message"
    );
    (session.session_id, session.encoder, decoder)
}

/// A stream whose reads return at most `.1` bytes.
struct Chunked(tokio::net::TcpStream, usize);

impl tokio::io::AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let limit = self.1.min(buf.remaining());
        let mut limited = tokio::io::ReadBuf::new(buf.initialize_unfilled_to(limit));
        let polled = Pin::new(&mut self.0).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        buf.advance(n);
        polled
    }
}

impl tokio::io::AsyncWrite for Chunked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, bytes)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Runs `messages` through encoder -> responder -> echo node -> responder -> decoder and
/// returns the v1 bytes the decoder produced.
fn exchange(peer: &Peer, messages: &[Message], chunk: usize) -> (Vec<Message>, [u8; 32]) {
    let mut stream = TcpStream::connect(peer.responder.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let (session_id, mut encoder, mut decoder) = handshake(&mut stream, chunk);

    let input: Vec<u8> = messages
        .iter()
        .flat_map(|m| m.to_wire(REGTEST_MAGIC))
        .collect();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        pipe_io::blocking::send(&mut encoder, &input, chunk, &mut writer).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });

    let mut v1 = Vec::new();
    while pipe_io::blocking::receive(&mut decoder, &mut stream, chunk, &mut v1).unwrap() {}
    sender.join().unwrap();
    let mut cursor = Cursor::new(v1);
    let mut received = Vec::new();
    while let Some(message) = read_message(&mut cursor, REGTEST_MAGIC).unwrap() {
        received.push(message);
    }
    (received, session_id)
}

fn expected_echoes(sent: &[Message]) -> Vec<Message> {
    sent.iter()
        .flat_map(|m| match m.command.as_str() {
            "version" => vec![m.clone(), Message::new("verack", [])],
            "verack" => vec![],
            "ping" => vec![Message::new("pong", m.payload.clone())],
            _ => vec![m.clone()],
        })
        .map(|m| {
            if m.command == "version" {
                Message::new("version", vec![])
            } else {
                m
            }
        })
        .collect()
}

fn check(peer: &Peer, sent: &[Message], chunk: usize) {
    let (received, session_id) = exchange(peer, sent, chunk);
    let mut expected = expected_echoes(sent);
    // The echo node answers with its own version payload: compare the command only.
    assert_eq!(received[0].command, "version");
    expected[0] = received[0].clone();
    assert_eq!(received.len(), expected.len());
    for (i, (got, want)) in received.iter().zip(&expected).enumerate() {
        assert!(got == want, "message {i}: got {got:?}, want {want:?}");
    }
    let reports = peer.responder.wait_for_reports(1, Duration::from_secs(10));
    assert_eq!(reports[0].error, None);
    assert_eq!(reports[0].transport, Transport::V2);
    assert_eq!(reports[0].session_id, Some(session_id));
}

fn handshake_messages() -> Vec<Message> {
    vec![
        Message::new("version", b"a version payload".to_vec()),
        Message::new("verack", []),
        Message::new("ping", 42u64.to_le_bytes()),
    ]
}

#[test]
fn byte_by_byte_against_bip324_crate() {
    let peer = start_peer(7);
    let mut sent = handshake_messages();
    for i in 0..300usize {
        let command = ["inv", "getheaders", "addrv2", "sendcmpct", "feature"][i % 5];
        sent.push(Message::new(command, vec![i as u8; i % 97]));
    }
    check(&peer, &sent, 1);
}

#[test]
fn bulk_against_bip324_crate_across_rekeys() {
    let peer = start_peer(50);
    let mut sent = handshake_messages();
    sent.push(Message::new(
        "block",
        (0..4_000_000u32)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<_>>(),
    ));
    for i in 0..1000usize {
        sent.push(Message::new(
            ["tx", "headers", "wtxidrelay"][i % 3],
            vec![(i % 256) as u8; i],
        ));
    }
    sent.push(Message::new("cfilter", vec![9; 3_999_000]));
    check(&peer, &sent, 64 * 1024);
}
