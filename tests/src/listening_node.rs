//! A listening v1-only node, as inbound mode serves it: it records who connected (the
//! address it sees) and what each peer sent; it answers `version` with its own `version`,
//! `verack` and an `addr` advertising itself, `ping` with `pong`, and echoes the rest.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::server::Server;
use crate::v1::{Message, read_message, write_message};

/// NODE_NETWORK | NODE_WITNESS | NODE_NETWORK_LIMITED: a v1-only node's services.
pub const SERVICES: u64 = 0x409;

/// What the node saw of one peer.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The peer's address, as the node's `accept` returned it.
    pub peer: SocketAddr,
    pub received: Vec<Message>,
    /// How the connection ended, once it did: `Ok` for a clean close, else the error's kind
    /// (`ConnectionReset` for a reset).
    pub ended: Option<Result<(), io::ErrorKind>>,
}

pub struct ListeningNode {
    server: Server,
    seen: Arc<Mutex<Vec<Arc<Mutex<Seen>>>>>,
    /// The node's own `version` payload, as it sends it.
    pub version: Vec<u8>,
}

impl ListeningNode {
    /// Serves on `listener`; advertises `advertised` (its public address) in `addr`.
    pub fn spawn(
        listener: TcpListener,
        magic: [u8; 4],
        advertised: SocketAddr,
    ) -> io::Result<Self> {
        let version = version(advertised);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (sink, payload) = (Arc::clone(&seen), version.clone());
        let server = Server::spawn(listener, move |stream| {
            let Ok(peer) = stream.peer_addr() else { return };
            let record = Arc::new(Mutex::new(Seen {
                peer: crate::canonical(peer),
                received: Vec::new(),
                ended: None,
            }));
            sink.lock().unwrap().push(Arc::clone(&record));
            let ended = serve(stream, magic, &payload, advertised, &record);
            record.lock().unwrap().ended = Some(ended.map_err(|e| e.kind()));
        })?;
        Ok(ListeningNode {
            server,
            seen,
            version,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every peer so far, once `n` have connected (or the timeout passed).
    pub fn wait_for_peers(&self, n: usize, timeout: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen: Vec<Seen> = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.lock().unwrap().clone())
                .collect();
            if seen.len() >= n || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The node's `addr` message: itself, and another node.
pub fn self_advertisement(advertised: SocketAddr, services: u64) -> Vec<u8> {
    let mut payload = vec![2];
    for (addr, services) in [
        (advertised, services),
        (SocketAddr::from(([192, 0, 2, 77], 8333)), SERVICES),
    ] {
        payload.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        payload.extend_from_slice(&services.to_le_bytes());
        let ip = match addr {
            SocketAddr::V4(a) => a.ip().to_ipv6_mapped().octets(),
            SocketAddr::V6(a) => a.ip().octets(),
        };
        payload.extend_from_slice(&ip);
        payload.extend_from_slice(&addr.port().to_be_bytes());
    }
    payload
}

fn version(advertised: SocketAddr) -> Vec<u8> {
    let mut payload = crate::v1::version_payload(advertised, 0x1234_5678, "/listening-node:0.1/");
    payload[4..12].copy_from_slice(&SERVICES.to_le_bytes());
    payload
}

fn serve(
    stream: TcpStream,
    magic: [u8; 4],
    version: &[u8],
    advertised: SocketAddr,
    record: &Mutex<Seen>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = io::BufReader::new(stream.try_clone()?);
    let mut writer = stream.try_clone()?;
    while let Some(message) = read_message(&mut reader, magic)? {
        record.lock().unwrap().received.push(message.clone());
        match message.command.as_str() {
            "version" => {
                write_message(&mut writer, magic, &Message::new("version", version))?;
                write_message(&mut writer, magic, &Message::new("verack", []))?;
                let addr = self_advertisement(advertised, SERVICES);
                write_message(&mut writer, magic, &Message::new("addr", addr))?;
            }
            "verack" => {}
            "ping" => write_message(&mut writer, magic, &Message::new("pong", message.payload))?,
            _ => write_message(&mut writer, magic, &message)?,
        }
    }
    stream.shutdown(Shutdown::Write)
}
