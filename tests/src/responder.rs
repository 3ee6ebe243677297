//! A BIP-324 responder built on rust-bitcoin's `bip324` crate: an implementation independent of
//! the proxy's, standing in for a v2 Bitcoin node. Like Bitcoin Core it also accepts v1
//! peers, and it relays every connection to a v1 node behind it.
//!
//! It records everything its peer sent, so tests can show that nothing arrived in plaintext.
//!
//! Long because it is a whole, independent BIP-324 responder peer (on rust-bitcoin's `bip324`
//! crate) with its decoys and reports.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bip324::{GarbageResult, Handshake, Initialized, PacketType, ReceivedKey, Role, VersionResult};

use crate::server::Server;
use crate::v1::{Message, read_exact_or_eof, read_message, write_message};

#[derive(Clone, Debug)]
pub struct ResponderOptions {
    pub magic: [u8; 4],
    pub garbage_len: usize,
    /// Decoy packets sent before the version packet.
    pub decoys_before_version: usize,
    /// Decoy packets sent right after the handshake, before any message.
    pub decoys_after_version: usize,
    /// Also send a decoy before every n-th relayed message (0: never).
    pub decoy_every: usize,
    /// The v1 node every connection is relayed to.
    pub upstream: SocketAddr,
    /// Keep every byte received in the reports (off for long runs: it all stays in memory).
    pub keep_received: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    V1,
    V2,
}

/// What the responder saw of one connection.
#[derive(Clone, Debug)]
pub struct Report {
    pub peer: SocketAddr,
    pub transport: Transport,
    pub session_id: Option<[u8; 32]>,
    /// Every byte the peer sent (empty unless `keep_received`).
    pub received: Vec<u8>,
    /// How many bytes the peer sent, and how many were sent to it.
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub decoys_sent: usize,
    /// Every v2 packet after the handshake, by direction and message type.
    pub ledger: Ledger,
    pub error: Option<String>,
}

/// Which way a packet went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flow {
    FromPeer,
    ToPeer,
}

/// Messages of one type: how many, their size framed as v1 (a 24-byte header and the payload)
/// and as the v2 packets that carried them here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub messages: u64,
    pub v1_bytes: u64,
    pub v2_bytes: u64,
}

/// Tallies by direction and message type; decoys count as `(decoy)`, with no v1 size.
pub type Ledger = BTreeMap<(Flow, String), Tally>;

fn tally(ledger: &Mutex<Ledger>, flow: Flow, message: Option<&Message>, v2_bytes: usize) {
    let (command, v1_bytes) = match message {
        Some(m) => (m.command.clone(), 24 + m.payload.len()),
        None => ("(decoy)".to_string(), 0),
    };
    let mut ledger = ledger.lock().unwrap();
    let entry = ledger.entry((flow, command)).or_default();
    entry.messages += 1;
    entry.v1_bytes += v1_bytes as u64;
    entry.v2_bytes += v2_bytes as u64;
}

pub struct Responder {
    server: Server,
    reports: Arc<Mutex<Vec<Report>>>,
    upstream: SocketAddr,
}

impl Responder {
    pub fn spawn(listener: TcpListener, options: ResponderOptions) -> io::Result<Responder> {
        let reports = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&reports);
        let upstream = options.upstream;
        let server = Server::spawn(listener, move |stream| {
            let report = serve(stream, &options);
            sink.lock().unwrap().push(report);
        })?;
        Ok(Responder {
            server,
            reports,
            upstream,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The v1 node it relays to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Waits until `n` connections have ended and returns their reports.
    pub fn wait_for_reports(&self, n: usize, timeout: Duration) -> Vec<Report> {
        let deadline = Instant::now() + timeout;
        loop {
            let reports = self.reports.lock().unwrap().clone();
            if reports.len() >= n || Instant::now() > deadline {
                return reports;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    sent: AtomicU64,
    ledger: Mutex<Ledger>,
}

/// Counts every byte read through it, and records them when asked to.
struct Recorder<R> {
    inner: R,
    log: Option<Arc<Mutex<Vec<u8>>>>,
    counts: Arc<Counts>,
}

impl<R: Read> Read for Recorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counts.received.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(log) = &self.log {
            log.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

/// Counts every byte written through it.
struct Counter<W> {
    inner: W,
    counts: Arc<Counts>,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.counts.sent.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn serve(stream: TcpStream, options: &ResponderOptions) -> Report {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut report = Report {
        peer: stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
        transport: Transport::V2,
        session_id: None,
        received: Vec::new(),
        bytes_received: 0,
        bytes_sent: 0,
        decoys_sent: 0,
        ledger: Ledger::new(),
        error: None,
    };
    let counts = Arc::new(Counts::default());
    if let Err(e) = serve_connection(&stream, options, &log, &counts, &mut report) {
        report.error = Some(e.to_string());
    }
    report.ledger = std::mem::take(&mut *counts.ledger.lock().unwrap());
    report.bytes_received = counts.received.load(Ordering::Relaxed);
    report.bytes_sent = counts.sent.load(Ordering::Relaxed);
    if options.keep_received {
        report.received = std::mem::take(&mut *log.lock().unwrap());
    }
    report
}

fn serve_connection(
    stream: &TcpStream,
    options: &ResponderOptions,
    log: &Arc<Mutex<Vec<u8>>>,
    counts: &Arc<Counts>,
    report: &mut Report,
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = Recorder {
        inner: stream.try_clone()?,
        log: options.keep_received.then(|| Arc::clone(log)),
        counts: Arc::clone(counts),
    };
    let mut writer = Counter {
        inner: stream.try_clone()?,
        counts: Arc::clone(counts),
    };
    let upstream = TcpStream::connect(options.upstream)?;

    // Bitcoin Core's rule: 16 bytes equal to magic + "version" padded mean a v1 peer.
    let mut first = [0u8; 16];
    reader.read_exact(&mut first)?;
    let mut v1_prefix = [0u8; 16];
    v1_prefix[..4].copy_from_slice(&options.magic);
    v1_prefix[4..11].copy_from_slice(b"version");
    if first == v1_prefix {
        report.transport = Transport::V1;
        let mut up = upstream.try_clone()?;
        up.write_all(&first)?;
        let down = std::thread::spawn({
            let (mut from, mut to) = (upstream, writer);
            move || {
                let _ = io::copy(&mut from, &mut to);
                let _ = to.inner.shutdown(Shutdown::Write);
            }
        });
        io::copy(&mut reader, &mut up)?;
        up.shutdown(Shutdown::Write)?;
        let _ = down.join();
        return Ok(());
    }

    let mut their_key = [0u8; 64];
    their_key[..16].copy_from_slice(&first);
    reader.read_exact(&mut their_key[16..])?;
    let (cipher, leftover) = handshake(
        &mut reader,
        &mut writer,
        (options.magic, Role::Responder, Some(their_key)),
        (options.garbage_len, options.decoys_before_version),
    )?;
    report.decoys_sent += options.decoys_before_version;
    report.session_id = Some(*cipher.id());
    let (mut inbound, mut outbound) = cipher.into_split();

    for i in 0..options.decoys_after_version {
        let decoy = outbound.encrypt_to_vec(&vec![0xd0 ^ i as u8; 64 + i], PacketType::Decoy, None);
        writer.write_all(&decoy)?;
        tally(&counts.ledger, Flow::ToPeer, None, decoy.len());
        report.decoys_sent += 1;
    }

    // Remote node -> peer, on its own thread.
    let decoy_every = options.decoy_every;
    let magic = options.magic;
    let mut node_reader = io::BufReader::new(upstream.try_clone()?);
    let down_counts = Arc::clone(counts);
    let down = std::thread::spawn(move || -> io::Result<usize> {
        let mut decoys = 0;
        let mut relayed = 0usize;
        while let Some(message) = read_message(&mut node_reader, magic)? {
            relayed += 1;
            if decoy_every > 0 && relayed.is_multiple_of(decoy_every) {
                let decoy = outbound.encrypt_to_vec(&[0xdd; 32], PacketType::Decoy, None);
                writer.write_all(&decoy)?;
                tally(&down_counts.ledger, Flow::ToPeer, None, decoy.len());
                decoys += 1;
            }
            let packet =
                outbound.encrypt_to_vec(&encode_contents(&message), PacketType::Genuine, None);
            writer.write_all(&packet)?;
            tally(
                &down_counts.ledger,
                Flow::ToPeer,
                Some(&message),
                packet.len(),
            );
        }
        writer.inner.shutdown(Shutdown::Write)?;
        Ok(decoys)
    });

    // Peer -> remote node.
    let mut from_peer = io::Cursor::new(leftover).chain(reader);
    let mut to_node = upstream;
    loop {
        let mut length = [0u8; 3];
        if !read_exact_or_eof(&mut from_peer, &mut length)? {
            break;
        }
        let packet_len = inbound.decrypt_packet_len(length);
        let mut packet = vec![0u8; packet_len];
        from_peer.read_exact(&mut packet)?;
        let (packet_type, plaintext) = inbound
            .decrypt_in_place(&mut packet, None)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if packet_type == PacketType::Decoy {
            tally(&counts.ledger, Flow::FromPeer, None, 3 + packet_len);
            continue;
        }
        let message = decode_contents(&plaintext[1..])?;
        write_message(&mut to_node, magic, &message)?;
        tally(
            &counts.ledger,
            Flow::FromPeer,
            Some(&message),
            3 + packet_len,
        );
    }
    to_node.shutdown(Shutdown::Write)?;
    let decoys = down
        .join()
        .map_err(|_| io::Error::other("relay thread panicked"))??;
    report.decoys_sent += decoys;
    Ok(())
}

/// Runs `role`'s side of the handshake on network `magic` with the crate, sending `garbage_len` bytes of garbage
/// and `decoys` decoy packets before the version packet; `their_key` when it was already read.
/// Returns the session and any bytes read past the other side's version packet.
pub(crate) fn handshake(
    reader: &mut impl Read,
    writer: &mut impl Write,
    (magic, role, their_key): ([u8; 4], Role, Option<[u8; 64]>),
    (garbage_len, decoys): (usize, usize),
) -> io::Result<(bip324::CipherSession, Vec<u8>)> {
    let bip = |e: bip324::Error| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let garbage: Vec<u8> = pseudo_random(garbage_len);
    let handshake = Handshake::<Initialized>::new(magic, role).map_err(bip)?;
    let mut out = vec![0u8; Handshake::<Initialized>::send_key_len(Some(&garbage))];
    let handshake = handshake.send_key(Some(&garbage), &mut out).map_err(bip)?;
    writer.write_all(&out)?;
    let their_key = match their_key {
        Some(key) => key,
        None => {
            let mut key = [0u8; 64];
            reader.read_exact(&mut key)?;
            key
        }
    };
    let handshake = handshake.receive_key(their_key).map_err(bip)?;

    let decoys: Vec<Vec<u8>> = (0..decoys).map(|i| pseudo_random(10 + 50 * i)).collect();
    let decoy_refs: Vec<&[u8]> = decoys.iter().map(Vec::as_slice).collect();
    let mut out = vec![0u8; Handshake::<ReceivedKey>::send_version_len(Some(&decoy_refs))];
    let handshake = handshake
        .send_version(&mut out, Some(&decoy_refs))
        .map_err(bip)?;
    writer.write_all(&out)?;

    let mut received = Vec::new();
    let mut handshake = handshake;
    let (mut handshake, consumed) = loop {
        let mut chunk = [0u8; 512];
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        received.extend_from_slice(&chunk[..n]);
        match handshake.receive_garbage(&received).map_err(bip)? {
            GarbageResult::FoundGarbage {
                handshake,
                consumed_bytes,
            } => break (handshake, consumed_bytes),
            GarbageResult::NeedMoreData(h) => handshake = h,
        }
    };
    let mut rest = io::Cursor::new(received[consumed..].to_vec()).chain(&mut *reader);
    let cipher = loop {
        let mut length = [0u8; 3];
        rest.read_exact(&mut length)?;
        let packet_len = handshake.decrypt_packet_len(length).map_err(bip)?;
        let mut packet = vec![0u8; packet_len];
        rest.read_exact(&mut packet)?;
        match handshake.receive_version(&mut packet).map_err(bip)? {
            VersionResult::Complete { cipher } => break cipher,
            VersionResult::Decoy(h) => handshake = h,
        }
    };
    let (cursor, _) = rest.into_inner();
    let leftover = cursor.get_ref()[cursor.position() as usize..].to_vec();
    Ok((cipher, leftover))
}

/// BIP-324's one-byte message IDs, kept here apart from the proxy's table on purpose: the
/// responder must not share code with what it tests.
const SHORT_IDS: [&str; 28] = [
    "addr",
    "block",
    "blocktxn",
    "cmpctblock",
    "feefilter",
    "filteradd",
    "filterclear",
    "filterload",
    "getblocks",
    "getblocktxn",
    "getdata",
    "getheaders",
    "headers",
    "inv",
    "mempool",
    "merkleblock",
    "notfound",
    "ping",
    "pong",
    "sendcmpct",
    "tx",
    "getcfilters",
    "cfilter",
    "getcfheaders",
    "cfheaders",
    "getcfcheckpt",
    "cfcheckpt",
    "addrv2",
];

pub(crate) fn encode_contents(message: &Message) -> Vec<u8> {
    let mut contents = Vec::with_capacity(13 + message.payload.len());
    match SHORT_IDS.iter().position(|c| *c == message.command) {
        Some(i) => contents.push(i as u8 + 1),
        None => {
            contents.push(0);
            let mut command = [0u8; 12];
            command[..message.command.len()].copy_from_slice(message.command.as_bytes());
            contents.extend_from_slice(&command);
        }
    }
    contents.extend_from_slice(&message.payload);
    contents
}

pub(crate) fn decode_contents(contents: &[u8]) -> io::Result<Message> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    match contents.first() {
        Some(0) => {
            let field = contents
                .get(1..13)
                .ok_or_else(|| bad("short long-form type"))?;
            let len = field.iter().position(|&b| b == 0).unwrap_or(12);
            let command =
                std::str::from_utf8(&field[..len]).map_err(|_| bad("command not UTF-8"))?;
            Ok(Message::new(command, &contents[13..]))
        }
        Some(&id) => {
            let command = SHORT_IDS
                .get(usize::from(id) - 1)
                .ok_or_else(|| bad("unknown short id"))?;
            Ok(Message::new(command, &contents[1..]))
        }
        None => Err(bad("empty contents")),
    }
}

/// Bytes that look random enough for garbage and decoys (xorshift seeded by the clock and a
/// counter); the responder needs no cryptographic randomness to play its part.
pub fn pseudo_random(len: usize) -> Vec<u8> {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut state = (clock ^ calls.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
