//! The measurements themselves: clients that drive each path and time it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bip324_e2e::v1::{Message, REGTEST_MAGIC};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::*;

pub(crate) async fn read_v1(
    stream: &mut TcpStream,
    keep_payload: bool,
) -> std::io::Result<(String, Vec<u8>, usize)> {
    let mut header = [0u8; bip324_e2e::v1::HEADER_LEN];
    stream.read_exact(&mut header).await?;
    let (command, len) = bip324_e2e::v1::parse_header(&header);
    let mut payload = vec![0u8; if keep_payload { len } else { len.min(1 << 20) }];
    let mut left = len;
    while left > 0 {
        let n = left.min(payload.len());
        stream.read_exact(&mut payload[..n]).await?;
        left -= n;
    }
    Ok((
        command,
        if keep_payload { payload } else { Vec::new() },
        len,
    ))
}

pub(crate) async fn connect(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let version = Message::new("version", vec![0u8; 100]).to_wire(REGTEST_MAGIC);
    stream.write_all(&version).await.unwrap();
    for expected in ["version", "verack"] {
        let (command, _, _) = read_v1(&mut stream, true).await.unwrap();
        assert_eq!(command, expected);
    }
    stream
}

/// Payload bytes per second of the CPU time of `hop` (when given) and per second of wall time.
pub(crate) async fn bulk(addr: SocketAddr, upload: bool, hop: Option<u32>) -> (f64, f64) {
    let mut stream = connect(addr).await;
    let block = Message::new("block", vec![0x5au8; BLOCK]).to_wire(REGTEST_MAGIC);
    let cpu = hop.map(cpu_seconds);
    let started = Instant::now();
    if upload {
        let (mut reader, mut writer) = stream.split();
        let send = async {
            for _ in 0..BULK_BLOCKS {
                writer.write_all(&block).await.unwrap();
            }
            writer
                .write_all(&Message::new("ping", [1u8; 8]).to_wire(REGTEST_MAGIC))
                .await
                .unwrap();
        };
        let receive = async {
            let mut header = [0u8; 24];
            reader.read_exact(&mut header).await.unwrap(); // the pong: everything arrived
            let mut nonce = [0u8; 8];
            reader.read_exact(&mut nonce).await.unwrap();
        };
        tokio::join!(send, receive);
    } else {
        let request = Message::new("getdata", BULK_BLOCKS.to_le_bytes()).to_wire(REGTEST_MAGIC);
        stream.write_all(&request).await.unwrap();
        for _ in 0..BULK_BLOCKS {
            let (command, _, len) = read_v1(&mut stream, false).await.unwrap();
            assert_eq!((command.as_str(), len), ("block", BLOCK));
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let payload = (BULK_BLOCKS as usize * BLOCK) as f64;
    let per_core = match (hop, cpu) {
        (Some(pid), Some(cpu)) => payload / (cpu_seconds(pid) - cpu).max(1e-9),
        _ => 0.0,
    };
    (per_core, payload / wall)
}

pub(crate) struct Latency {
    pub(crate) median: Duration,
    pub(crate) p99: Duration,
}

/// Ping/pong round trips on one connection to each address, interleaved in rounds so that
/// all paths see the same conditions.
pub(crate) async fn round_trips<const N: usize>(addrs: [SocketAddr; N]) -> [Latency; N] {
    let mut streams = Vec::new();
    for addr in addrs {
        streams.push(connect(addr).await);
    }
    let mut times: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(PINGS));
    for round in 0..PINGS / 500 + 1 {
        for (stream, times) in streams.iter_mut().zip(&mut times) {
            for i in 0..500u64 {
                let ping = Message::new("ping", i.to_le_bytes()).to_wire(REGTEST_MAGIC);
                let started = Instant::now();
                stream.write_all(&ping).await.unwrap();
                let (command, payload, _) = read_v1(stream, true).await.unwrap();
                assert_eq!(
                    (command.as_str(), payload.as_slice()),
                    ("pong", &i.to_le_bytes()[..])
                );
                if round > 0 {
                    times.push(started.elapsed()); // the first round warms up
                }
            }
        }
    }
    times.map(|mut times| {
        times.sort();
        Latency {
            median: times[times.len() / 2],
            p99: times[times.len() * 99 / 100],
        }
    })
}

/// Restricts every thread of `processes` to `cpu`, or lets them run anywhere again.
pub(crate) fn pin(processes: &[u32], cpu: Option<usize>) {
    use nix::sched::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    for core in 0..CpuSet::count() {
        if cpu.is_none_or(|cpu| cpu == core) {
            set.set(core).unwrap();
        }
    }
    for process in processes {
        for task in std::fs::read_dir(format!("/proc/{process}/task"))
            .unwrap()
            .flatten()
        {
            let tid: i32 = task.file_name().to_str().unwrap().parse().unwrap();
            let _ = sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set); // threads may exit
        }
    }
}

/// Handshakes per second of proxy CPU and of wall time, 8 clients at a time.
pub(crate) async fn handshakes(addr: SocketAddr, pid: u32) -> (f64, f64) {
    let cpu = cpu_seconds(pid);
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                for _ in 0..HANDSHAKES / 8 {
                    drop(connect(addr).await);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let wall = started.elapsed().as_secs_f64();
    let used = cpu_seconds(pid) - cpu;
    (HANDSHAKES as f64 / used.max(1e-9), HANDSHAKES as f64 / wall)
}

/// Resident bytes the proxy adds per idle connection, `count` open at once.
pub(crate) async fn idle_memory(addr: SocketAddr, pid: u32, count: usize) -> f64 {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(pid);
    let mut open = Vec::with_capacity(count);
    while open.len() < count {
        let batch: Vec<_> = (0..500.min(count - open.len()))
            .map(|_| tokio::spawn(connect(addr)))
            .collect();
        for task in batch {
            open.push(task.await.unwrap());
        }
    }
    // Idle connections give their buffers back after a second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    drop(open);
    (after.saturating_sub(before) * 1024) as f64 / count as f64
}
