//! The command line of `bip324-redirect`: one clap definition for its parser, `--help`, man
//! pages and shell completions. It lives apart from the redirector so that `cargo xtask` can
//! render man pages and completions without linking libnftnl and libmnl.

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

/// Where `bip324-proxy` accepts redirected connections, on 127.0.0.1 and [::1]: a privileged
/// port, so that no unprivileged process can take it while the proxy is down.
pub const DEFAULT_PROXY_PORT: u16 = 324;

/// Where `bip324-proxy --inbound` accepts peers' connections to the local node: privileged
/// too, so that no local user can take the node's inbound peers while the proxy is down.
pub const DEFAULT_INBOUND_PORT: u16 = 325;

/// The public networks' P2P ports: mainnet, testnet3, testnet4, signet.
const DEFAULT_PORTS_ARG: &str = "8333,18333,48333,38333";

/// How the kernel redirects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// One `inet` table with a NAT chain on the output hook (nf_tables, over netlink).
    Nftables,
    /// cgroup eBPF programs that redirect at connect() (no NAT, no conntrack).
    Ebpf,
}

impl BackendKind {
    pub const ALL: [BackendKind; 2] = [BackendKind::Nftables, BackendKind::Ebpf];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Nftables => "nftables",
            BackendKind::Ebpf => "ebpf",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub const MODEL: &str = "\
Redirects the outbound Bitcoin P2P connections of one group to the local bip324-proxy, which \
encrypts them with BIP-324 (v2 transport). The clients need no change and no configuration.

Who is redirected: TCP connections to the P2P ports (default 8333, 18333, 48333, 38333: \
mainnet, testnet3, testnet4, signet; add 18444 for regtest) made by processes whose PRIMARY \
group is the given group. Supplementary group membership does not count. Everything else is \
left alone.

Start a client in the group (sg as a member of btc; sudo -g as root or through sudoers;
setpriv as root):
  sg btc -c 'lnd --bitcoin.mainnet --bitcoin.node=neutrino --neutrino.connect=203.0.113.7'
  sudo -u alice -g btc bitcoind -connect=203.0.113.7
  setpriv --reuid=alice --regid=btc --clear-groups client ...
  Group=btc                                            (in a systemd unit)

The proxy must be running (`systemctl start bip324-proxy.socket`) and must not run with the \
group. When it is not running, tagged connections are refused: nothing is sent in plaintext.

Gateway mode, on a router: --from-interface br-lan (or --from 192.168.1.0/24) also redirects \
the connections it forwards from its LAN, with or without --group. The proxy must then listen \
on the router's LAN address (bip324-proxy --listen 192.168.1.1:324). nftables backend only.";

pub const EXIT_CODES: &str = "\
Environment:
  BIP324_REDIRECT_STATE_DIR  where enable records the policy (default /run/bip324-redirect)
  BIP324_REDIRECT_CONFIG_DIR where enable saves it and restore reads it
                             (redirect.conf, inbound.conf; default /etc/bip324)
  BIP324_REDIRECT_BPF_DIR    where the eBPF backend pins its objects
                             (default /sys/fs/bpf/bip324-redirect)

Exit codes:
  0  success (status: redirect active as asked, proxy answering)
  1  the kernel refused a change, or another failure
  2  usage error
  3  missing privileges (CAP_NET_ADMIN): run with sudo
  4  bad configuration: unknown group or user, invalid ports
  5  status, check: the redirect is not enabled
  6  status: enabled, but something is wrong (see the problem lines);
     check: the connection was not encrypted (or did not go through the proxy)";

/// Every subcommand's help ends with this instead of repeating the top level's exit codes and
/// environment ([`EXIT_CODES`]); the man pages render it as a pointer to bip324-redirect(8).
pub const SEE_TOP_LEVEL: &str =
    "Exit codes and environment variables: see `bip324-redirect --help` (man bip324-redirect).";

#[derive(Parser, Debug)]
#[command(name = "bip324-redirect", version, about = "Send a group's Bitcoin P2P connections through the BIP-324 proxy", long_about = MODEL, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Redirect the group's P2P connections to the proxy (replaces an earlier policy).
    #[command(long_about = format!("Redirect the group's P2P connections to the proxy.\n\n{MODEL}\n\n\
        Running enable again replaces the earlier policy atomically: there is always exactly one \
        set of rules, and no moment without one.\n\n\
        The policy is also written to /etc/bip324/redirect.conf (unless --no-save), which \
        bip324-redirect.service re-applies after a reload of nftables.service and at boot: a \
        reload or a reboot never brings back an older policy."), after_help = SEE_TOP_LEVEL)]
    Enable(EnableArgs),

    /// Remove everything enable installed (not an error when nothing is installed).
    #[command(after_help = SEE_TOP_LEVEL)]
    Disable,

    /// Show whether the redirect is in place and as asked, and whether the proxy answers.
    #[command(long_about = "Show whether the redirect is in place and matches what enable was \
        asked, whether the proxy answers on its port, its live connections (client, \
        destination, transport, v2 session id, traffic), and what to do when something is \
        wrong (for example when `nft flush ruleset` removed the rules: clients then connect \
        directly, in plaintext). Compare a connection's session id with the one the remote \
        node's operator sees (Bitcoin Core: getpeerinfo) to rule out a man in the middle. \
        Reading the kernel's rules needs CAP_NET_ADMIN.", after_help = SEE_TOP_LEVEL)]
    Status(StatusArgs),

    /// Prove that a connection of the group is encrypted: connect to a node as the group and
    /// report what the proxy did with it.
    #[command(long_about = "Prove that a connection of the group is encrypted: the one command \
        to run after installing. It first runs status's checks: when the redirect is missing \
        or modified, the proxy does not answer, or NODE's port is outside the policy, it does \
        not connect, and says so with the command that fixes it. Otherwise, as root, it opens \
        a connection to NODE (an address, with or without its port) with the redirected group \
        as its primary group (as a light client would), says hello in v1, waits for the \
        node's answer, and asks the proxy what it did with that connection: whether it went \
        through the proxy, its transport (v2 or not), the v2 session id (compare it with the \
        node's, `bitcoin-cli getpeerinfo`), how long the answer took, or why it failed, with \
        the one thing to do next. Exit code 0 only for v2. Without root, run it with the \
        group: `sg btc -c 'bip324-redirect check NODE'`.", after_help = SEE_TOP_LEVEL)]
    Check(CheckArgs),

    /// Inbound mode: v2 for the inbound connections of a local node that speaks only v1.
    #[command(subcommand, long_about = INBOUND, after_help = SEE_TOP_LEVEL)]
    Inbound(InboundCommand),

    /// Apply exactly the policy of /etc/bip324/redirect.conf (what bip324-redirect.service
    /// runs at boot and after each nftables reload).
    #[command(long_about = RESTORE, after_help = SEE_TOP_LEVEL)]
    Restore,
}

const RESTORE: &str = "\
Apply exactly the policy of /etc/bip324/redirect.conf (its BIP324_REDIRECT_OPTIONS, the options \
of enable), as bip324-redirect.service does at boot and after each reload of nftables.service. \
`enable` by hand writes its options there (unless --no-save), so that a reload or a reboot \
re-applies the policy last enabled, never another one; `status` reports a policy in the kernel \
that differs from the file's.";

pub const INBOUND: &str = "\
Inbound mode: v2 for the inbound connections of a local node that speaks only v1 (btcd, bcoin, \
Bitcoin Core before 26, ...), without touching the node.

Peers' TCP connections to the node's ports, arriving from other hosts for an address of this \
host, go to `bip324-proxy --inbound [::]:325`. The proxy answers each as Bitcoin Core would (v2, \
or v1 when the peer speaks v1) and connects to the node on loopback as the peer itself, so the \
node sees its real peers. It adds NODE_P2P_V2 to the node's version message and \
self-advertisements, so that v2 peers know to use v2. The node must listen on loopback too \
(0.0.0.0 and :: do). Connections from this host to its node, and forwarded traffic, are left \
alone.

  sudo bip324-proxy --inbound '[::]:325'              (or bip324-proxy-inbound.socket)
  sudo bip324-redirect inbound enable --ports 8333
  sudo bip324-redirect status                         (both directions, each verified)
  sudo bip324-redirect inbound disable";

#[derive(Subcommand, Debug)]
pub enum InboundCommand {
    /// Send peers' connections to the node's ports to the proxy (replaces an earlier inbound
    /// policy).
    #[command(after_help = SEE_TOP_LEVEL)]
    Enable(InboundEnableArgs),

    /// Remove the inbound redirect and its policy route (not an error when there is none).
    #[command(after_help = SEE_TOP_LEVEL)]
    Disable,

    /// Apply exactly the policy of /etc/bip324/inbound.conf (what
    /// bip324-redirect-inbound.service runs at boot and after each nftables reload).
    #[command(after_help = SEE_TOP_LEVEL)]
    Restore,
}

#[derive(Args, Debug)]
pub struct InboundEnableArgs {
    /// The node's listening ports, comma-separated.
    #[arg(long, alias = "port", value_name = "PORTS", value_delimiter = ',', default_value = "8333",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,

    /// The proxy's inbound port (`bip324-proxy --inbound [::]:PORT`); keep it below 1024.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_INBOUND_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub proxy_port: u16,

    /// Do not write these options to /etc/bip324/inbound.conf. The unit re-applies that
    /// file's policy after an nftables reload or a reboot, replacing this one.
    #[arg(long)]
    pub no_save: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A node to connect to, by IP address: 203.0.113.7:8333, [2001:db8::7]:8333, or a bare
    /// address for the network's usual port (its port must be one the policy redirects).
    #[arg(value_name = "NODE")]
    pub node: String,

    /// The node's network, when its port is not the network's usual one (mainnet, testnet3,
    /// testnet4, signet, regtest).
    #[arg(long, value_name = "NETWORK")]
    pub network: Option<String>,

    /// How long to wait for the node's answer.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_interval)]
    pub timeout: std::time::Duration,

    /// The proxy's control socket, to ask what it did with the connection.
    /// Default: /run/bip324-proxy/control.sock, or when there is none,
    /// $XDG_RUNTIME_DIR/bip324-proxy/control.sock (where a proxy run by hand makes it).
    /// Believed only when root, bip324-proxy, or you (in your own private $XDG_RUNTIME_DIR)
    /// made it, in a directory no other user may write.
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::FilePath)]
    pub control: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print the report as JSON (with every connection's counters).
    #[arg(long)]
    pub json: bool,

    /// Refresh the report in place until interrupted.
    #[arg(long, conflicts_with = "json")]
    pub watch: bool,

    /// Time between refreshes with --watch: a duration (`500ms`, `2s`, `1m`) or seconds (`2`).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_interval)]
    pub interval: std::time::Duration,

    /// The proxy's control socket, for its live connections.
    /// Default: /run/bip324-proxy/control.sock, or when there is none,
    /// $XDG_RUNTIME_DIR/bip324-proxy/control.sock (where a proxy run by hand makes it).
    /// Believed only when root, bip324-proxy, or you (in your own private $XDG_RUNTIME_DIR)
    /// made it, in a directory no other user may write.
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::FilePath)]
    pub control: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct EnableArgs {
    /// Group (name or number) whose connections are redirected; create it with
    /// `groupadd --system btc`. Needed unless --from-interface or --from is given.
    #[arg(long, value_name = "GROUP", required_unless_present_any = ["from_interface", "from"])]
    pub group: Option<String>,

    /// Gateway mode, on a router: also redirect connections forwarded from this interface,
    /// e.g. br-lan (repeatable). The LAN's clients need no group and no change.
    #[arg(long = "from-interface", value_name = "IFACE")]
    pub from_interface: Vec<String>,

    /// Gateway mode: also redirect connections forwarded from this source prefix, e.g.
    /// 192.168.1.0/24 or fd00:1::/64 (repeatable).
    #[arg(long = "from", value_name = "PREFIX")]
    pub from: Vec<String>,

    /// Destination ports to redirect, comma-separated.
    #[arg(long, value_name = "PORTS", value_delimiter = ',', default_value = DEFAULT_PORTS_ARG,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,

    /// Port the proxy listens on, on 127.0.0.1 and [::1]. Keep it below 1024 (more exactly,
    /// below net.ipv4.ip_unprivileged_port_start): whoever holds this port while the proxy is
    /// down receives the group's connections, and only privileged processes can bind those.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PROXY_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub proxy_port: u16,

    /// User (name or number) never redirected, even with the group: the proxy's own user, as
    /// a second guard against loops (repeatable).
    #[arg(long = "exempt-user", value_name = "USER")]
    pub exempt_users: Vec<String>,

    /// How the kernel redirects. nftables: a NAT rule, matching the socket's group (fsgid);
    /// connections to this host's own addresses are left alone. ebpf: cgroup programs at
    /// connect(), matching the process's real group; for hosts without nftables NAT, or whose
    /// firewall manager flushes foreign tables; connections to loopback are left alone (this
    /// host's other addresses are not), and its records of 65,536 open connections are
    /// shared by the group (`status` shows evictions).
    #[arg(long, value_enum, default_value_t = BackendKind::Nftables)]
    pub backend: BackendKind,

    /// With --backend ebpf: redirect only processes below this cgroup v2 directory. Default:
    /// the root of the cgroup v2 hierarchy, i.e. every process.
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::DirPath)]
    pub cgroup: Option<std::path::PathBuf>,

    /// Do not write this policy to /etc/bip324/redirect.conf, where bip324-redirect.service
    /// reads the one it re-applies after an nftables reload or a reboot: that file's policy
    /// then replaces this one at the next reload or boot.
    #[arg(long)]
    pub no_save: bool,
}

/// `2s`, `500ms` (as the proxy's durations), or plain seconds; at least 0.2 s.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let duration = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            std::time::Duration::from_secs_f64(seconds)
        }
        Ok(_) => return Err("a number of seconds, 0 or more".into()),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string())?,
    };
    Ok(duration.max(std::time::Duration::from_millis(200)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_public_networks_ports() {
        let cli = Cli::parse_from(["bip324-redirect", "enable", "--group", "btc"]);
        let Command::Enable(args) = cli.command else {
            panic!("enable parses as enable")
        };
        assert_eq!(args.ports, [8333, 18333, 48333, 38333]);
        assert_eq!(args.proxy_port, 324);
        assert_eq!(args.backend, BackendKind::Nftables);
    }

    /// Ports are checked by clap, zero as well as too large: both are usage errors (exit 2).
    #[test]
    fn port_zero_and_port_70000_are_both_usage_errors() {
        for ports in ["0", "70000", "8333,0"] {
            let parsed = Cli::try_parse_from([
                "bip324-redirect",
                "enable",
                "--group",
                "btc",
                "--ports",
                ports,
            ]);
            assert_eq!(parsed.unwrap_err().exit_code(), 2, "--ports {ports}");
        }
    }

    #[test]
    fn intervals_take_units_like_the_proxys_durations() {
        let interval = |text: &str| {
            let cli = Cli::try_parse_from(["bip324-redirect", "status", "--interval", text]);
            match cli.map(|c| c.command) {
                Ok(Command::Status(args)) => Some(args.interval),
                _ => None,
            }
        };
        assert_eq!(interval("1s"), Some(std::time::Duration::from_secs(1)));
        assert_eq!(
            interval("1.5"),
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(
            interval("10ms"),
            Some(std::time::Duration::from_millis(200))
        );
        assert_eq!(interval("soon"), None);
    }
}
