//! The far ends: a v2 node on the protocol crate, a plain v1 node, a copying relay.

use bip324_e2e::v1::{Message, REGTEST_MAGIC};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::*;
use bip324_e2e::pipe_io;

/// A v2 node built on the proxy's protocol code in the responder role: answers version with
/// version + verack and ping with pong, swallows blocks, and answers `getdata N` with N blocks.
pub(crate) async fn node(listener: TcpListener) {
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let _ = serve_v2(stream).await;
        });
    }
}

pub(crate) async fn serve_v2(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let magic = Magic(REGTEST_MAGIC);
    let seed = bip324_e2e::responder::pseudo_random(64);
    let entropy = HandshakeEntropy {
        secret_key: seed[..32].try_into().unwrap(),
        aux_rand: seed[32..].try_into().unwrap(),
        garbage: Vec::new(),
    };
    let v2 = (Role::Responder, magic, KeyPrefix::NONE, entropy);
    let (session, rest) =
        match bip324_driver::handshake(&mut stream, v2, &[], &mut (), &mut |_| {}).await {
            Ok(established) => established,
            Err(bip324_driver::DriveError::Closed) => return Ok(()),
            Err(e) => return Err(std::io::Error::other(e)),
        };
    let (mut encoder, mut decoder) = (session.encoder, session.decoder);
    let mut parser = bip324_e2e::v1::Splitter::new("block");
    // The decoder may already hold messages that came with the version packet.
    let mut v1 = decoder.output().to_vec();
    let len = v1.len();
    decoder.consume_output(len);
    pipe_io::push_all(&mut decoder, &rest, &mut v1)?;
    loop {
        parser.feed(&v1);
        v1.clear();
        for Message { command, payload } in parser.messages.drain(..).collect::<Vec<_>>() {
            let answers: Vec<Vec<u8>> = match command.as_str() {
                "version" => vec![
                    Message::new("version", vec![0u8; 100]).to_wire(REGTEST_MAGIC),
                    Message::new("verack", []).to_wire(REGTEST_MAGIC),
                ],
                "ping" => vec![Message::new("pong", payload).to_wire(REGTEST_MAGIC)],
                "getdata" => {
                    let count = u32::from_le_bytes(payload[..4].try_into().unwrap());
                    for _ in 0..count {
                        pipe_io::tokio::send(&mut encoder, &BLOCK_MESSAGE, &mut stream).await?;
                    }
                    Vec::new()
                }
                _ => Vec::new(),
            };
            for answer in answers {
                pipe_io::tokio::send(&mut encoder, &answer, &mut stream).await?;
            }
        }
        if !pipe_io::tokio::receive(&mut decoder, &mut stream, &mut v1).await? {
            return Ok(());
        }
    }
}

/// `e2e-bench relay`: forwards RELAY_PORT to the v1 node and does nothing else, the way
/// the proxy's relay does (one task per connection, large reads): the cost of any
/// user-space hop, in CPU and latency.
pub(crate) fn plain_relay() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = TcpListener::bind(("127.0.0.1", RELAY_PORT)).await.unwrap();
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut node = TcpStream::connect((NODES_IP, DIRECT_PORT)).await?;
                client.set_nodelay(true)?;
                node.set_nodelay(true)?;
                tokio::io::copy_bidirectional_with_sizes(&mut client, &mut node, 1 << 18, 1 << 18)
                    .await
            });
        }
    });
}

/// The direct baseline: a plain v1 node (pong, sink, getdata), no proxy, no encryption.
pub(crate) async fn v1_node(listener: TcpListener) {
    loop {
        let (mut stream, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            while let Ok((command, payload, _)) = read_v1(&mut stream, true).await {
                let answer = match command.as_str() {
                    "version" => [
                        Message::new("version", vec![0u8; 100]).to_wire(REGTEST_MAGIC),
                        Message::new("verack", []).to_wire(REGTEST_MAGIC),
                    ]
                    .concat(),
                    "ping" => Message::new("pong", payload).to_wire(REGTEST_MAGIC),
                    "getdata" => {
                        let count = u32::from_le_bytes(payload[..4].try_into().unwrap());
                        for _ in 0..count {
                            if stream.write_all(&BLOCK_MESSAGE).await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                    _ => continue,
                };
                if stream.write_all(&answer).await.is_err() {
                    return;
                }
            }
        });
    }
}
