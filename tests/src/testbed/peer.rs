//! A v1 client of the remote node, through the redirect, driven step by step by a test.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{NODE_PORT, REMOTE_V4, TAGGED_GID, TwoHosts};
use crate::v1::{Message, REGTEST_MAGIC, read_message, version_payload, write_message};

/// A tagged client's connection to the remote node, after `version` and `verack`.
pub struct V1Peer(pub TcpStream);

impl V1Peer {
    pub fn connect(hosts: &TwoHosts) -> V1Peer {
        let remote: SocketAddr = format!("{REMOTE_V4}:{NODE_PORT}").parse().unwrap();
        let stream = hosts
            .client
            .run_as_group(TAGGED_GID, move || TcpStream::connect(remote))
            .expect("connect through the redirect");
        V1Peer::greet(stream, remote)
    }

    /// Says `version` on `stream` (connected to `remote` by any way) and reads the node's.
    pub fn greet(stream: TcpStream, remote: SocketAddr) -> V1Peer {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut peer = V1Peer(stream);
        let version = version_payload(remote, 7, "/e2e-fault-test:0.1/");
        peer.send("version", &version).unwrap();
        assert_eq!(peer.receive().expect("version back").command, "version");
        assert_eq!(peer.receive().expect("verack").command, "verack");
        peer
    }

    pub fn send(&mut self, command: &str, payload: &[u8]) -> std::io::Result<()> {
        write_message(&mut self.0, REGTEST_MAGIC, &Message::new(command, payload))
    }

    pub fn receive(&mut self) -> Option<Message> {
        read_message(&mut self.0, REGTEST_MAGIC).ok().flatten()
    }

    /// The echo node sends every message back: it arrives, unchanged.
    pub fn echoes(&mut self, payload: &[u8]) {
        assert_eq!(self.try_echo(payload), Ok(()));
    }

    /// As `echoes`, saying what went wrong instead of panicking.
    pub fn try_echo(&mut self, payload: &[u8]) -> Result<(), String> {
        self.send("hello", payload)
            .map_err(|e| format!("send: {e}"))?;
        let echo = self.receive().ok_or("no echo")?;
        if (echo.command.as_str(), &echo.payload[..]) == ("hello", payload) {
            Ok(())
        } else {
            Err(format!(
                "a different echo: {} of {} bytes",
                echo.command,
                echo.payload.len()
            ))
        }
    }
}
