//! The end-to-end benchmark (`cargo xtask bench`, as root): in a network namespace of its own,
//! the release `bip324-proxy` behind the product's nftables redirect, between v1 clients and a
//! v2 node that decrypts everything, over loopback. Prints one table; each figure stands
//! beside its bound or baseline, measured in the same run.
//!
//! The same traffic also goes straight to a v1 node (the baseline) and through a plain TCP
//! relay that only copies (what any user-space hop costs the kernel and the scheduler), so
//! each bound can be read with and without that cost.
//!
//! * `bulk`: 4,000,000-byte messages each way; payload per second of the proxy's CPU time
//!   (user + system, from /proc), beside the crypto bound of that direction's work;
//! * `rtt`: ping/pong round trips, median and p99, with every process on one core (the work
//!   on the path) and unpinned (plus the scheduler's cross-CPU wakeups);
//! * `handshakes`: per second of the proxy's CPU time, beside the secp256k1 work of one;
//! * `idle`: resident memory per idle proxied connection, 10,000 of them (or as many as the
//!   hard `RLIMIT_NOFILE` allows).
//!
//! `e2e-bench [bulk] [rtt] [handshakes] [idle]` measures only the figures named.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bip324_e2e::netns::Netns;
use bip324_e2e::v1::{Message, REGTEST_MAGIC};
use bip324_protocol::{Handshake, HandshakeEntropy, Magic, Pipe, Progress, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PROXIED_PORT: u16 = 28333;
const DIRECT_PORT: u16 = 28334;
/// A plain TCP relay (no crypto) to the v1 node: what any user-space hop costs.
const RELAY_PORT: u16 = 28335;
const BLOCK: usize = 4_000_000;
const BULK_BLOCKS: u32 = 250;
const PINGS: usize = 10_000;
const HANDSHAKES: usize = 2_000;
const IDLE_CONNECTIONS: usize = 10_000;
/// The block the nodes send, built once: one copy per connection would not fit 10,000 of them.
static BLOCK_MESSAGE: std::sync::LazyLock<Vec<u8>> =
    std::sync::LazyLock::new(|| Message::new("block", vec![0xa5u8; BLOCK]).to_wire(REGTEST_MAGIC));
/// The proxy runs as this user and group, outside the redirected group (root's, 0).
const NOBODY: u32 = 65534;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => return serve(),
        Some("relay") => return plain_relay(),
        _ => {}
    }
    let phases = Phases::from_args(&args);
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark needs root: run `cargo xtask bench`"
    );
    // The proxy holds two sockets per connection, and a few of its own.
    let idle = IDLE_CONNECTIONS.min((raise_fd_limit() as usize).saturating_sub(100) / 2);
    let ns = Netns::create("bench");
    let report = ns.run(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(phases, idle))
    });
    print!("{report}");
}

/// Raises the soft fd limit to the hard one (raising the hard one needs CAP_SYS_RESOURCE,
/// which containers often lack) and returns it; children inherit it.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise RLIMIT_NOFILE");
    hard
}

/// The nodes, in a process of their own so that their sockets do not count against the
/// client side's fd limit: `e2e-bench serve`, killed by the benchmark when it is done.
fn serve() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let v2 = TcpListener::bind(("127.0.0.1", PROXIED_PORT))
            .await
            .unwrap();
        let v1 = TcpListener::bind(("127.0.0.1", DIRECT_PORT)).await.unwrap();
        tokio::spawn(v1_node(v1));
        node(v2).await;
    });
}

/// A release binary of the workspace, next to this one (`cargo xtask bench` builds them).
fn sibling(name: &str) -> std::path::PathBuf {
    let path = std::env::current_exe().unwrap().with_file_name(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo xtask bench`",
        path.display()
    );
    path
}

/// A child process, killed on drop, or when this process dies.
struct Child(std::process::Child);

impl Child {
    fn spawn(mut command: std::process::Command) -> Child {
        use std::os::unix::process::CommandExt;
        // SAFETY: one system call between fork and exec. It comes after any credential
        // change, which would clear it.
        unsafe {
            command.pre_exec(|| {
                Ok(nix::sys::prctl::set_pdeathsig(
                    nix::sys::signal::Signal::SIGKILL,
                )?)
            });
        }
        Child(command.spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User plus system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Which figures to measure: all by default, or those named on the command line.
#[derive(Clone, Copy)]
struct Phases {
    bulk: bool,
    rtt: bool,
    handshakes: bool,
    idle: bool,
}

impl Phases {
    fn from_args(args: &[String]) -> Phases {
        let all = args.is_empty();
        let has = |name: &str| all || args.iter().any(|a| a == name);
        for arg in args {
            assert!(
                ["bulk", "rtt", "handshakes", "idle"].contains(&arg.as_str()),
                "unknown phase {arg}: choose among bulk, rtt, handshakes, idle"
            );
        }
        Phases {
            bulk: has("bulk"),
            rtt: has("rtt"),
            handshakes: has("handshakes"),
            idle: has("idle"),
        }
    }
}

async fn run(phases: Phases, idle: usize) -> String {
    let dir = std::env::temp_dir().join(format!("b324bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The redirect: root's connections to PROXIED_PORT go to the proxy (which runs as nobody).
    let redirect = std::process::Command::new(sibling("bip324-redirect"))
        .args([
            "enable",
            "--group",
            "0",
            "--ports",
            &PROXIED_PORT.to_string(),
        ])
        .env("BIP324_REDIRECT_STATE_DIR", &dir)
        .output()
        .unwrap();
    assert!(redirect.status.success(), "{redirect:?}");
    let proxy = start_proxy();
    let myself = |role: &str| {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.arg(role);
        command
    };
    let nodes = Child::spawn(myself("serve"));
    let relay = Child::spawn(myself("relay"));
    let setup = Setup {
        proxied: ([127, 0, 0, 1], PROXIED_PORT).into(),
        direct: ([127, 0, 0, 1], DIRECT_PORT).into(),
        relayed: ([127, 0, 0, 1], RELAY_PORT).into(),
        proxy: proxy.pid(),
        relay: relay.pid(),
        processes: [std::process::id(), proxy.pid(), nodes.pid(), relay.pid()],
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut rows = Vec::new();
    if phases.bulk {
        bulk_rows(&setup, &mut rows).await;
    }
    if phases.rtt {
        round_trip_rows(&setup, &mut rows).await;
    }
    if phases.handshakes {
        handshake_rows(&setup, &mut rows).await;
    }
    if phases.idle {
        idle_row(&setup, idle, &mut rows).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    render(&rows)
}

/// The addresses of the three paths, and the processes measured.
struct Setup {
    proxied: SocketAddr,
    direct: SocketAddr,
    relayed: SocketAddr,
    proxy: u32,
    relay: u32,
    /// Everything on the paths: this process, the proxy, the nodes, the relay.
    processes: [u32; 4],
}

async fn bulk_rows(setup: &Setup, rows: &mut Vec<Row>) {
    let bound = crypto_bound();
    for (name, upload) in [
        ("client -> remote (v1 -> v2)", true),
        ("remote -> client (v2 -> v1)", false),
    ] {
        eprintln!("e2e-bench: bulk, {name}");
        let direct_wall = bulk(setup.direct, upload, None).await.1;
        let relay_per_core = bulk(setup.relayed, upload, Some(setup.relay)).await.0;
        let (per_core, wall) = bulk(setup.proxied, upload, Some(setup.proxy)).await;
        // What a relay must spend at best: the crypto, plus what the kernel costs a relay
        // that does nothing else.
        let limit = 1.0 / (1.0 / bound + 1.0 / relay_per_core);
        rows.push(Row::new(
            &format!("bulk {name}"),
            format!(
                "{:.3} GB/s per core, {:.2} GB/s wall (direct: {:.2} GB/s)",
                per_core / 1e9,
                wall / 1e9,
                direct_wall / 1e9
            ),
            format!("{:.3} GB/s per core: crypto", bound / 1e9),
            per_core / bound,
            "≥ 80% and ≥ 0.6 GB/s",
            per_core >= 0.8 * bound && per_core >= 0.6e9,
        ));
        rows.push(Row::new(
            "  the same, beside crypto + plain relay",
            format!(
                "(plain relay alone: {:.2} GB/s per core)",
                relay_per_core / 1e9
            ),
            format!("{:.3} GB/s per core", limit / 1e9),
            per_core / limit,
            "(reported)",
            true,
        ));
    }
}

async fn round_trip_rows(setup: &Setup, rows: &mut Vec<Row>) {
    for (label, cpus) in [("all on one core", Some(0)), ("unpinned", None)] {
        eprintln!("e2e-bench: round trips, {label}");
        pin(&setup.processes, cpus);
        let [direct, relayed, proxied] =
            round_trips([setup.direct, setup.relayed, setup.proxied]).await;
        let added = proxied.median.saturating_sub(direct.median);
        let relay_added = relayed.median.saturating_sub(direct.median);
        rows.push(Row::new(
            &format!("round trip, median, {label}"),
            format!(
                "{} µs: {} µs added ({} µs by a plain relay)",
                proxied.median.as_micros(),
                added.as_micros(),
                relay_added.as_micros()
            ),
            format!("{} µs direct", direct.median.as_micros()),
            proxied.median.as_secs_f64() / direct.median.as_secs_f64(),
            "≤ 25 µs added",
            added <= Duration::from_micros(25),
        ));
        rows.push(Row::new(
            &format!("round trip, p99, {label}"),
            format!(
                "{} µs ({} µs plain relay)",
                proxied.p99.as_micros(),
                relayed.p99.as_micros()
            ),
            format!("{} µs direct", direct.p99.as_micros()),
            proxied.p99.as_secs_f64() / direct.p99.as_secs_f64(),
            "(reported)",
            true,
        ));
    }
}

async fn handshake_rows(setup: &Setup, rows: &mut Vec<Row>) {
    eprintln!("e2e-bench: handshakes");
    let secp = secp256k1_handshakes_per_second();
    let relay_per_core = handshakes(setup.relayed, setup.relay).await.0;
    let (per_core, wall) = handshakes(setup.proxied, setup.proxy).await;
    let limit = 1.0 / (1.0 / secp + 1.0 / relay_per_core);
    rows.push(Row::new(
        "handshakes",
        format!("{per_core:.0}/s per core, {wall:.0}/s wall"),
        format!("{secp:.0}/s: secp256k1 work of one"),
        per_core / secp,
        "≥ 80%",
        per_core >= 0.8 * secp,
    ));
    rows.push(Row::new(
        "  the same, beside secp256k1 + plain relay",
        format!("(plain relay alone: {relay_per_core:.0} connections/s per core)"),
        format!("{limit:.0}/s"),
        per_core / limit,
        "(reported)",
        true,
    ));
}

async fn idle_row(setup: &Setup, idle: usize, rows: &mut Vec<Row>) {
    eprintln!("e2e-bench: {idle} idle connections");
    let per_connection = idle_memory(setup.proxied, setup.proxy, idle).await;
    rows.push(Row::new(
        "memory per idle connection",
        if idle < IDLE_CONNECTIONS {
            format!(
                "{:.1} KiB, {idle} open (all the fd limit allows)",
                per_connection / 1024.0
            )
        } else {
            format!("{:.1} KiB, {idle} open", per_connection / 1024.0)
        },
        "32 KiB (target)".to_string(),
        per_connection / (32.0 * 1024.0),
        "≤ 32 KiB",
        per_connection <= 32.0 * 1024.0,
    ));
}

fn start_proxy() -> Child {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(sibling("bip324-proxy"));
    command
        .args(["--max-connections", "30000", "--log-level", "warn"])
        .arg("--no-control")
        .stdout(std::process::Stdio::null());
    // SAFETY: only system calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
            setgroups(&[])?;
            let (gid, uid) = (Gid::from_raw(NOBODY), Uid::from_raw(NOBODY));
            setresgid(gid, gid, gid)?;
            setresuid(uid, uid, uid)?;
            Ok(())
        });
    }
    Child::spawn(command)
}

/// Bytes per second of: ChaCha20, Poly1305 and one SHA-256 pass, one after the other over
/// the same 4 MB: the work each direction must do per byte of payload.
fn crypto_bound() -> f64 {
    use chacha20::cipher::{KeyIvInit, StreamCipher};
    use poly1305::universal_hash::{KeyInit, UniversalHash};
    use sha2::Digest;
    let mut data = vec![7u8; BLOCK];
    let rounds = 30;
    let started = Instant::now();
    for _ in 0..rounds {
        let mut stream = chacha20::ChaCha20::new(&[1u8; 32].into(), &[0u8; 12].into());
        stream.apply_keystream(&mut data);
        let mut mac = poly1305::Poly1305::new(&[2u8; 32].into());
        mac.update_padded(&data);
        std::hint::black_box(mac.finalize());
        std::hint::black_box(sha2::Sha256::digest(&data));
    }
    (rounds * BLOCK) as f64 / started.elapsed().as_secs_f64()
}

fn secp256k1_handshakes_per_second() -> f64 {
    use secp256k1::ellswift::{ElligatorSwift, Party};
    let theirs = ElligatorSwift::from_seckey(
        secp256k1::SecretKey::from_secret_bytes([9; 32]).unwrap(),
        None,
    );
    let rounds = 2000;
    let started = Instant::now();
    for i in 0..rounds {
        let mut bytes = [0x42u8; 32];
        bytes[0] = i as u8;
        let secret = secp256k1::SecretKey::from_secret_bytes(bytes).unwrap();
        let ours = ElligatorSwift::from_seckey(secret, Some([i as u8; 32]));
        std::hint::black_box(ElligatorSwift::shared_secret(
            ours,
            theirs,
            secret,
            Party::Initiator,
        ));
    }
    rounds as f64 / started.elapsed().as_secs_f64()
}

async fn read_v1(
    stream: &mut TcpStream,
    keep_payload: bool,
) -> std::io::Result<(String, Vec<u8>, usize)> {
    let mut header = [0u8; 24];
    stream.read_exact(&mut header).await?;
    let len = u32::from_le_bytes(header[16..20].try_into().unwrap()) as usize;
    let name_len = header[4..16].iter().position(|&b| b == 0).unwrap_or(12);
    let command = String::from_utf8_lossy(&header[4..4 + name_len]).into_owned();
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

async fn connect(addr: SocketAddr) -> TcpStream {
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
async fn bulk(addr: SocketAddr, upload: bool, hop: Option<u32>) -> (f64, f64) {
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

struct Latency {
    median: Duration,
    p99: Duration,
}

/// Ping/pong round trips on one connection to each address, interleaved in rounds so that
/// all paths see the same conditions.
async fn round_trips<const N: usize>(addrs: [SocketAddr; N]) -> [Latency; N] {
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
fn pin(processes: &[u32], cpu: Option<usize>) {
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
async fn handshakes(addr: SocketAddr, pid: u32) -> (f64, f64) {
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
async fn idle_memory(addr: SocketAddr, pid: u32, count: usize) -> f64 {
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

/// A v2 node built on the proxy's protocol code in the responder role: answers version with
/// version + verack and ping with pong, swallows blocks, and answers `getdata N` with N blocks.
async fn node(listener: TcpListener) {
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let _ = serve_v2(stream).await;
        });
    }
}

async fn serve_v2(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let magic = Magic(REGTEST_MAGIC);
    let seed = bip324_e2e::responder::pseudo_random(64);
    let entropy = HandshakeEntropy {
        secret_key: seed[..32].try_into().unwrap(),
        aux_rand: seed[32..].try_into().unwrap(),
        garbage: Vec::new(),
    };
    let (mut handshake, first) =
        Handshake::new(Role::Responder, magic, entropy).map_err(std::io::Error::other)?;
    stream.write_all(&first).await?;
    let mut buf = vec![0u8; 4096];
    let mut reply = Vec::new();
    let (session, rest) = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let progress = handshake
            .receive(&buf[..n], &mut reply, &mut |_| {})
            .map_err(std::io::Error::other)?;
        stream.write_all(&reply).await?;
        reply.clear();
        match progress {
            Progress::NeedMore(next) => handshake = next,
            Progress::Established { consumed, session } => {
                break (session, buf[consumed..n].to_vec());
            }
        }
    };
    let (mut encoder, mut decoder) = (session.encoder, session.decoder);
    let mut parser = V1Stream::default();
    let mut pending = rest;
    loop {
        if pending.is_empty() {
            let space = decoder.input_space();
            let n = stream.read(space).await?;
            if n == 0 {
                return Ok(());
            }
            decoder
                .commit_input(n, &mut |_| {})
                .map_err(std::io::Error::other)?;
        } else {
            let taken = decoder
                .push(&pending, &mut |_| {})
                .map_err(std::io::Error::other)?;
            pending.drain(..taken);
        }
        parser.feed(decoder.output());
        let len = decoder.output().len();
        decoder.consume_output(len);
        for (command, payload) in parser.messages.drain(..).collect::<Vec<_>>() {
            let answers: Vec<Vec<u8>> = match command.as_str() {
                "version" => vec![
                    Message::new("version", vec![0u8; 100]).to_wire(REGTEST_MAGIC),
                    Message::new("verack", []).to_wire(REGTEST_MAGIC),
                ],
                "ping" => vec![Message::new("pong", payload).to_wire(REGTEST_MAGIC)],
                "getdata" => {
                    let count = u32::from_le_bytes(payload[..4].try_into().unwrap());
                    for _ in 0..count {
                        send(&mut stream, &mut encoder, &BLOCK_MESSAGE).await?;
                    }
                    Vec::new()
                }
                _ => Vec::new(),
            };
            for answer in answers {
                send(&mut stream, &mut encoder, &answer).await?;
            }
        }
    }
}

async fn send(
    stream: &mut TcpStream,
    encoder: &mut impl Pipe,
    frame: &[u8],
) -> std::io::Result<()> {
    let mut fed = 0;
    while fed < frame.len() {
        fed += encoder
            .push(&frame[fed..], &mut |_| {})
            .map_err(std::io::Error::other)?;
        stream.write_all(encoder.output()).await?;
        let len = encoder.output().len();
        encoder.consume_output(len);
    }
    Ok(())
}

/// Splits v1 bytes into messages, keeping payloads of everything but blocks.
#[derive(Default)]
struct V1Stream {
    header: Vec<u8>,
    command: String,
    left: usize,
    payload: Vec<u8>,
    in_payload: bool,
    messages: Vec<(String, Vec<u8>)>,
}

impl V1Stream {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() || (self.in_payload && self.left == 0) {
            if !self.in_payload {
                let n = (24 - self.header.len()).min(bytes.len());
                self.header.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if self.header.len() < 24 {
                    return;
                }
                let name_len = self.header[4..16]
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(12);
                self.command = String::from_utf8_lossy(&self.header[4..4 + name_len]).into_owned();
                self.left = u32::from_le_bytes(self.header[16..20].try_into().unwrap()) as usize;
                self.header.clear();
                self.in_payload = true;
                continue;
            }
            let n = self.left.min(bytes.len());
            if self.command != "block" {
                self.payload.extend_from_slice(&bytes[..n]);
            }
            bytes = &bytes[n..];
            self.left -= n;
            if self.left == 0 {
                self.messages.push((
                    std::mem::take(&mut self.command),
                    std::mem::take(&mut self.payload),
                ));
                self.in_payload = false;
            }
        }
    }
}

/// `e2e-bench relay`: forwards RELAY_PORT to the v1 node and does nothing else, the way
/// the proxy's relay does (one task per connection, large reads): the cost of any
/// user-space hop, in CPU and latency.
fn plain_relay() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = TcpListener::bind(("127.0.0.1", RELAY_PORT)).await.unwrap();
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut node = TcpStream::connect(("127.0.0.1", DIRECT_PORT)).await?;
                client.set_nodelay(true)?;
                node.set_nodelay(true)?;
                tokio::io::copy_bidirectional_with_sizes(&mut client, &mut node, 1 << 18, 1 << 18)
                    .await
            });
        }
    });
}

/// The direct baseline: a plain v1 node (pong, sink, getdata), no proxy, no encryption.
async fn v1_node(listener: TcpListener) {
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

struct Row {
    figure: String,
    measured: String,
    reference: String,
    ratio: f64,
    target: String,
    met: bool,
}

impl Row {
    fn new(
        figure: &str,
        measured: String,
        reference: String,
        ratio: f64,
        target: &str,
        met: bool,
    ) -> Row {
        Row {
            figure: figure.into(),
            measured,
            reference,
            ratio,
            target: target.into(),
            met,
        }
    }
}

fn render(rows: &[Row]) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("")
            .trim()
    };
    let flags: Vec<&str> = field("flags").split_whitespace().collect();
    let features: Vec<&str> = ["avx2", "avx512f", "sha_ni"]
        .into_iter()
        .filter(|f| flags.contains(f))
        .collect();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut out = format!(
        "machine: {}, {cores} cores ({}), Linux {}; proxy: release build, --log-level warn\n\n",
        field("model name"),
        features.join(" "),
        kernel.trim()
    );
    out.push_str(&format!(
        "| {:<42} | {:<66} | {:<34} | {:>6} | {:<34} | {} |\n|{}|{}|{}|{}|{}|{}|\n",
        "figure",
        "measured",
        "bound / baseline (same run)",
        "ratio",
        "target",
        "met",
        "-".repeat(44),
        "-".repeat(68),
        "-".repeat(36),
        "-".repeat(8),
        "-".repeat(36),
        "-----"
    ));
    for row in rows {
        out.push_str(&format!(
            "| {:<42} | {:<66} | {:<34} | {:>5.0}% | {:<34} | {} |\n",
            row.figure,
            row.measured,
            row.reference,
            row.ratio * 100.0,
            row.target,
            if row.met { "yes" } else { "NO" }
        ));
    }
    out
}
