//! Many concurrent v1 connections at once, each exchanging messages of mixed sizes with an
//! echo node for a bounded time, checking every echo (content and order).
//!
//! Usage: e2e-load-client ADDR --connections N --seconds S
//! Prints `connections=`, `messages=`, `bytes=` and `failures=`, and the longest wait for an
//! echo, per connection: its median and maximum over all connections (`gap_median_ms=`,
//! `gap_max_ms=`, what a pause of the proxy costs each connection); exits 1 on any failure.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bip324_e2e::v1::{MAX_PAYLOAD, Message, REGTEST_MAGIC, sha256d, version_payload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Messages in flight per connection: both directions carry traffic at once.
const IN_FLIGHT: usize = 8;
const COMMANDS: [&str; 6] = ["tx", "inv", "headers", "block", "e2e-load", "cfilter"];

#[derive(Default)]
struct Totals {
    connections: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
    failures: AtomicU64,
}

/// A deterministic generator per connection (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Mostly small messages, some medium, a few large: 70% < 256 B, 25% < 16 KiB, 5% < 256 KiB.
    fn size(&mut self) -> usize {
        let roll = self.next() % 100;
        let cap = if roll < 70 {
            256
        } else if roll < 95 {
            16 * 1024
        } else {
            256 * 1024
        };
        (self.next() % cap as u64) as usize
    }
}

fn message(rng: &mut Rng, connection: usize, seq: u64) -> Message {
    let mut payload = format!("{connection}:{seq}:").into_bytes();
    let size = rng.size().max(payload.len());
    let fill = rng.next() as u8;
    payload.resize(size, fill);
    Message::new(
        COMMANDS[(rng.next() % COMMANDS.len() as u64) as usize],
        payload,
    )
}

async fn read_message(stream: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Message> {
    let mut header = [0u8; 24];
    stream.read_exact(&mut header).await?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    if header[..4] != REGTEST_MAGIC {
        return Err(bad("wrong magic"));
    }
    let len = u32::from_le_bytes(header[16..20].try_into().unwrap()) as usize;
    if len > MAX_PAYLOAD {
        return Err(bad("oversized"));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    if sha256d(&payload)[..4] != header[20..24] {
        return Err(bad("bad checksum"));
    }
    let name_len = header[4..16].iter().position(|&b| b == 0).unwrap_or(12);
    let command = String::from_utf8_lossy(&header[4..4 + name_len]).into_owned();
    Ok(Message { command, payload })
}

async fn connection(
    addr: SocketAddr,
    id: usize,
    deadline: Instant,
    totals: Arc<Totals>,
) -> Result<Duration, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let version = version_payload(addr, id as u64, "/e2e-load-client/");
    stream
        .write_all(&Message::new("version", version).to_wire(REGTEST_MAGIC))
        .await
        .map_err(|e| e.to_string())?;
    for expected in ["version", "verack"] {
        let got = read_message(&mut stream)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        if got.command != expected {
            return Err(format!("expected {expected}, got {}", got.command));
        }
    }
    totals.connections.fetch_add(1, Ordering::Relaxed);

    let (mut reader, mut writer) = stream.into_split();
    let (mut last, mut longest) = (Instant::now(), Duration::ZERO);
    let (queue, mut expected) = tokio::sync::mpsc::channel::<Message>(IN_FLIGHT);
    let sender = tokio::spawn(async move {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1));
        let mut seq = 0;
        while Instant::now() < deadline {
            let message = message(&mut rng, id, seq);
            seq += 1;
            let wire = message.to_wire(REGTEST_MAGIC);
            if queue.send(message).await.is_err() {
                return Err("the reader stopped".to_string());
            }
            writer
                .write_all(&wire)
                .await
                .map_err(|e| format!("send: {e}"))?;
        }
        writer.shutdown().await.map_err(|e| e.to_string())
    });
    while let Some(sent) = expected.recv().await {
        let got = read_message(&mut reader)
            .await
            .map_err(|e| format!("echo: {e}"))?;
        if got != sent {
            return Err(format!("echo differs: sent {sent:?}, got {got:?}"));
        }
        longest = longest.max(last.elapsed());
        last = Instant::now();
        totals.messages.fetch_add(1, Ordering::Relaxed);
        totals
            .bytes
            .fetch_add(got.payload.len() as u64, Ordering::Relaxed);
    }
    sender.await.map_err(|e| e.to_string())??;
    Ok(longest)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1)?.parse::<u64>().ok())
    };
    let (Some(addr), Some(count), Some(seconds)) = (
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        value("--connections"),
        value("--seconds"),
    ) else {
        eprintln!("usage: e2e-load-client ADDR --connections N --seconds S");
        return ExitCode::from(2);
    };
    raise_fd_limit();
    let totals = Arc::new(Totals::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..count as usize)
        .map(|id| {
            let totals = Arc::clone(&totals);
            tokio::spawn(async move {
                let gap = connection(addr, id, deadline, Arc::clone(&totals)).await;
                gap.inspect_err(|e| {
                    eprintln!("connection {id}: {e}");
                    totals.failures.fetch_add(1, Ordering::Relaxed);
                })
                .ok()
            })
        })
        .collect();
    let mut gaps = Vec::new();
    for task in tasks {
        gaps.extend(task.await.ok().flatten());
    }
    gaps.sort();
    let ms = |gap: Option<&Duration>| gap.map_or(0, Duration::as_millis);
    println!("gap_median_ms={}", ms(gaps.get(gaps.len() / 2)));
    println!("gap_max_ms={}", ms(gaps.last()));
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!("connections={}", get(&totals.connections));
    println!("messages={}", get(&totals.messages));
    println!("bytes={}", get(&totals.bytes));
    println!("failures={}", get(&totals.failures));
    if get(&totals.failures) == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
