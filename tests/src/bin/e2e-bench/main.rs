//! The end-to-end benchmark (`cargo xtask bench`, as root): in a network namespace of its own,
//! the release `bip324-proxy` behind the product's nftables redirect, between v1 clients and a
//! v2 node that decrypts everything, over loopback. Prints one table; each figure stands
//! beside its bound or baseline, measured in the same run.
//!
//! The same traffic also goes straight to a v1 node (the baseline) and through a plain TCP
//! relay that only copies (what any user-space hop costs the kernel and the scheduler). Each
//! target is read against the physical limit of a user-space relay, measured in the same run:
//! the crypto (or secp256k1) work plus the plain relay's cost. The ratio to the crypto work
//! alone, which no relay can reach, is reported beside it.
//!
//! * `bulk`: 4,000,000-byte messages each way; payload per second of the proxy's CPU time
//!   (user + system, from /proc), beside crypto + relay for that direction's work;
//! * `rtt`: ping/pong round trips, median and p99, with every process on one core (the work
//!   on the path) and unpinned (plus the scheduler's cross-CPU wakeups), beside the relay's;
//! * `handshakes`: per second of the proxy's CPU time, beside secp256k1 + relay;
//! * `idle`: resident memory per idle v2 session, 10,000 of them (or as many as the hard
//!   `RLIMIT_NOFILE` allows), each past a `version`/`verack` exchange, with the proxy logging at
//!   its default level as a service does.
//! * `handover`: 1,000 live v2 sessions pinging every 100 ms while a successor takes the
//!   proxy over (`--take-over`): each session's worst round trip then (the pause it saw)
//!   beside before, the time and bytes the move took, when the old proxy was gone.
//!
//! `e2e-bench [bulk] [rtt] [handshakes] [idle] [handover] [--key-prefix HEX]` measures only
//! the figures named, with the proxy started with that `--key-prefix` when given.

mod bounds;
mod handover;
mod measure;
mod nodes;
mod report;
mod rows;

use std::time::Duration;

use bip324_e2e::netns::Netns;
use bip324_e2e::v1::{Message, REGTEST_MAGIC};
use bip324_protocol::{HandshakeEntropy, KeyPrefix, Magic, Pipe, Role};
use tokio::net::TcpListener;

pub(crate) const PROXIED_PORT: u16 = 28333;
pub(crate) const DIRECT_PORT: u16 = 28334;
/// The nodes' host, a namespace of its own behind a veth pair: the proxy relays to remote
/// hosts only (never to this host's addresses, and the redirect leaves them alone).
pub(crate) const NODES_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 32, 5, 2);
const BENCH_IP: &str = "10.32.5.1/24";
/// A plain TCP relay (no crypto) to the v1 node: what any user-space hop costs.
pub(crate) const RELAY_PORT: u16 = 28335;
pub(crate) const BLOCK: usize = 4_000_000;
pub(crate) const BULK_BLOCKS: u32 = 250;
pub(crate) const PINGS: usize = 10_000;
pub(crate) const HANDSHAKES: usize = 2_000;
pub(crate) const IDLE_CONNECTIONS: usize = 10_000;
/// The block the nodes send, built once: one copy per connection would not fit 10,000 of them.
pub(crate) static BLOCK_MESSAGE: std::sync::LazyLock<Vec<u8>> =
    std::sync::LazyLock::new(|| Message::new("block", vec![0xa5u8; BLOCK]).to_wire(REGTEST_MAGIC));

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => return serve(),
        Some("relay") => return plain_relay(),
        _ => {}
    }
    let (phases, proxy_args) = Phases::from_args(&args);
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark needs root: run `cargo xtask bench`"
    );
    // The proxy holds two sockets per connection, and a few of its own.
    let idle = IDLE_CONNECTIONS.min((raise_fd_limit() as usize).saturating_sub(100) / 2);
    let ns = Netns::create("bench");
    let nodes = Netns::create("bench-nodes");
    bip324_e2e::netns::link(&ns, &nodes);
    bip324_e2e::netns::address(&ns, BENCH_IP);
    bip324_e2e::netns::address(&nodes, &format!("{NODES_IP}/24"));
    let serve = nodes.command(std::env::current_exe().unwrap(), None);
    let report = ns.run(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(phases, idle, serve, &proxy_args))
    });
    print!("{report}");
}

/// Raises the soft fd limit to the hard one (raising the hard one needs CAP_SYS_RESOURCE,
/// which containers often lack) and returns it; children inherit it.
pub(crate) fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise RLIMIT_NOFILE");
    hard
}

/// The nodes, in a process of their own so that their sockets do not count against the
/// client side's fd limit: `e2e-bench serve`, killed by the benchmark when it is done.
pub(crate) fn serve() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let v2 = TcpListener::bind((NODES_IP, PROXIED_PORT)).await.unwrap();
        let v1 = TcpListener::bind((NODES_IP, DIRECT_PORT)).await.unwrap();
        tokio::spawn(v1_node(v1));
        node(v2).await;
    });
}

/// A release binary of the workspace, next to this one (`cargo xtask bench` builds them).
pub(crate) fn sibling(name: &str) -> std::path::PathBuf {
    let path = std::env::current_exe().unwrap().with_file_name(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo xtask bench`",
        path.display()
    );
    path
}

/// A child process, killed on drop, or when this process dies.
pub(crate) struct Child(std::process::Child);

impl Child {
    pub(crate) fn spawn(mut command: std::process::Command) -> Child {
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

    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    pub(crate) fn exited(&mut self) -> bool {
        !matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User plus system CPU seconds of a process so far.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
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

pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Which figures to measure: all by default, or those named on the command line.
#[derive(Clone, Copy)]
pub(crate) struct Phases {
    pub(crate) bulk: bool,
    pub(crate) rtt: bool,
    pub(crate) handshakes: bool,
    pub(crate) idle: bool,
    pub(crate) handover: bool,
}

impl Phases {
    /// The phases named (all when none is) and the proxy's extra options (`--key-prefix HEX`).
    pub(crate) fn from_args(args: &[String]) -> (Phases, Vec<String>) {
        let (mut names, mut proxy_args) = (Vec::new(), Vec::new());
        let mut words = args.iter();
        while let Some(arg) = words.next() {
            if arg == "--key-prefix" {
                let hex = words.next().expect("--key-prefix needs HEX");
                proxy_args.extend([arg.clone(), hex.clone()]);
                continue;
            }
            assert!(
                ["bulk", "rtt", "handshakes", "idle", "handover"].contains(&arg.as_str()),
                "unknown phase {arg}: choose among bulk, rtt, handshakes, idle, handover"
            );
            names.push(arg.as_str());
        }
        let all = names.is_empty();
        let has = |name: &str| all || names.contains(&name);
        let phases = Phases {
            bulk: has("bulk"),
            rtt: has("rtt"),
            handshakes: has("handshakes"),
            idle: has("idle"),
            handover: has("handover"),
        };
        (phases, proxy_args)
    }
}

/// `serve` starts this binary in the nodes' namespace.
pub(crate) async fn run(
    phases: Phases,
    idle: usize,
    mut serve: std::process::Command,
    proxy_args: &[String],
) -> String {
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
    let control = dir.join("control.sock");
    let mut proxy = start_proxy(
        proxy_args,
        &control,
        &std::env::temp_dir().join("e2e-bench-proxy.log"),
    );
    let myself = |role: &str| {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.arg(role);
        command
    };
    serve.arg("serve");
    let nodes = Child::spawn(serve);
    let relay = Child::spawn(myself("relay"));
    let setup = Setup {
        proxied: (NODES_IP, PROXIED_PORT).into(),
        direct: (NODES_IP, DIRECT_PORT).into(),
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
    // Last: the proxy measured so far is replaced.
    let _successor = if phases.handover {
        let proxy_setup = (proxy_args, control.as_path());
        Some(handover::handover_rows(&setup, &mut proxy, proxy_setup, &mut rows).await)
    } else {
        None
    };
    let _ = std::fs::remove_dir_all(&dir);
    if proxy_args.is_empty() {
        render(&rows)
    } else {
        format!("proxy options: {}\n{}", proxy_args.join(" "), render(&rows))
    }
}

pub(crate) use bounds::*;
pub(crate) use measure::*;
pub(crate) use nodes::*;
pub(crate) use report::*;
pub(crate) use rows::*;
