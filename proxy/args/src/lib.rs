//! The command line of `bip324-proxy`: one clap definition for its parser, `--help`, man
//! page and shell completions. It lives apart from the daemon so that `cargo xtask` can render
//! them without building tokio or the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bip324_protocol::{KeyPrefix, MAX_GARBAGE_LEN, MAX_KEY_PREFIX_LEN};
use clap::Parser;

/// Port 324, below 1024: no unprivileged process can bind it, so none can receive the
/// redirected traffic while the proxy is not running (docs/security.md).
pub const DEFAULT_LISTEN: [&str; 2] = ["127.0.0.1:324", "[::1]:324"];

/// The identity a proxy started as root switches to once its sockets are open.
pub const DEFAULT_USER: &str = "bip324-proxy";

/// Printed as written (after the options, and as the man page's EXAMPLES): every line fits in
/// 100 columns, clap's wrapping width, so none wraps into what looks like another example.
pub const EXAMPLES: &str = "\
Examples:
  sudo bip324-proxy                          # on 127.0.0.1:324 and [::1]:324, as user bip324-proxy
  bip324-proxy --socks5 127.0.0.1:1080       # as any user; clients use -proxy=127.0.0.1:1080
  sudo bip324-proxy --inbound '[::]:325'     # inbound mode, with bip324-redirect inbound enable
  sudo bip324-proxy --v1-fallback            # nodes without v2 get plaintext v1, not a refusal
  sudo bip324-proxy --key-prefix 474554202f20485454502f312e310d0a  # keys begin: GET / HTTP/1.1 CRLF
  sudo bip324-proxy --log-level debug        # one log line per message
  sudo bip324-proxy --take-over              # a new version takes over a running proxy, live";

#[derive(Parser, Debug, Clone)]
#[command(
    name = "bip324-proxy",
    version,
    about = "Transparent BIP-324 proxy: gives unmodified v1 Bitcoin P2P clients encrypted v2 transport",
    long_about = "Transparent BIP-324 proxy: gives unmodified v1 Bitcoin P2P clients encrypted v2 transport.

The proxy does not pick destinations. `bip324-redirect enable --group btc` makes the kernel send \
outbound Bitcoin P2P connections of processes whose primary group is `btc` to this proxy; for each \
one the proxy asks the kernel for the original destination (SO_ORIGINAL_DST), connects there, \
performs the BIP-324 handshake, and translates v1 <-> v2 in both directions. A connection that \
was not redirected (someone connecting to the proxy's port directly) is refused: the proxy is not \
an open relay. A client that already speaks v2 is passed through untouched.

It listens on port 324 of 127.0.0.1 and [::1]: a privileged port, so that no other local user \
can take it and receive the redirected plaintext while the proxy is down. Started as root it \
opens its sockets, then switches to its own user (--user) before it accepts anything; under \
systemd the socket unit opens them and the proxy never has any privilege. Never run it with the \
redirected group, or its own connections would be redirected back to it (it refuses such loops).

Besides redirected connections it can serve clients that have a SOCKS5 proxy option \
(--socks5, no privilege needed), the inbound peers of a local node that speaks only v1 \
(--inbound), and send every upstream connection through another SOCKS5 proxy such as Tor \
(--upstream-socks5).

Under systemd, sockets passed by socket activation (LISTEN_FDS) are used instead of the default \
addresses: TCP ones for redirected connections, a Unix one for the control socket.",
    after_help = EXAMPLES
)]
pub struct Config {
    /// Address to accept redirected connections on (repeatable). Default: 127.0.0.1:324 and
    /// [::1]:324, unless systemd passes listening sockets. A port that any user may bind
    /// (1024 and above) is accepted with a warning: while the proxy is down, whoever binds it
    /// receives the redirected plaintext.
    #[arg(short, long = "listen", value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,

    /// Accept peers' connections to a local v1-only node here (repeatable; e.g. [::]:325):
    /// where `bip324-redirect inbound enable` sends them. Each peer is answered as Bitcoin Core
    /// answers (v2, or v1 when it speaks v1) and relayed to the node on loopback under its own
    /// address and port (IP_TRANSPARENT: a small helper process keeps CAP_NET_RAW for this,
    /// and only this; the proxy itself keeps no capability).
    /// With --inbound and no --listen, the proxy serves inbound connections only.
    #[arg(long = "inbound", value_name = "ADDR")]
    pub inbound: Vec<SocketAddr>,

    /// The inbound node's network (mainnet, testnet3, testnet4, signet, regtest). Default:
    /// the network whose port the peer connected to.
    #[arg(long, value_name = "NETWORK", value_parser = parse_network)]
    pub inbound_network: Option<bip324_protocol::Network>,

    /// The node's public address and port, as peers dial them (repeatable), when that is not
    /// an address of this host (behind a port-forwarding router): its self-advertisements
    /// naming it gain NODE_P2P_V2 too. The address a peer reached is always counted.
    #[arg(long, value_name = "ADDR")]
    pub inbound_advertise: Vec<SocketAddr>,

    /// The node's listening ports (comma-separated), as given to `bip324-redirect inbound
    /// enable --ports`: the only destinations, on loopback, that the process holding
    /// CAP_NET_RAW will connect to. Default: the networks' standard P2P ports.
    #[arg(
        long,
        value_name = "PORTS",
        value_delimiter = ',',
        default_value = "8333,18333,48333,38333,18444"
    )]
    pub inbound_ports: Vec<u16>,

    /// SOCKS5 front end (repeatable; off by default), for clients with a proxy option and no
    /// redirect: Bitcoin Core `-proxy=127.0.0.1:1080`, btcd `--proxy`, bcoin `proxy`. No
    /// authentication or any username/password (asked for whenever offered with
    /// --upstream-socks5, which then isolates streams by it); CONNECT to IPv4, IPv6 and
    /// hostnames (letters, digits, hyphens, dots), never to this host, and Tor's RESOLVE
    /// (asked of --upstream-socks5 when set). After
    /// CONNECT a connection is treated as a redirected one; the reply comes only once the
    /// destination is reached in v2, so a failure is a SOCKS reply code. Keep it on loopback.
    /// systemd sockets named `socks5` (bip324-proxy-socks5.socket) also work.
    #[arg(long = "socks5", value_name = "ADDR")]
    pub socks5: Vec<SocketAddr>,

    /// The only destination ports SOCKS5 clients may CONNECT to (comma-separated): the proxy
    /// is not an open relay.
    #[arg(
        long,
        value_name = "PORTS",
        value_delimiter = ',',
        default_value = "8333,18333,48333,38333,18444"
    )]
    pub socks5_ports: Vec<u16>,

    /// The network of SOCKS5 destinations (the v2 handshake needs it before the client
    /// speaks). Default: the network whose port the client asked for.
    #[arg(long, value_name = "NETWORK", value_parser = parse_network)]
    pub socks5_network: Option<bip324_protocol::Network>,

    /// Send every upstream connection (redirected or SOCKS5) through this SOCKS5 proxy, e.g.
    /// Tor's 127.0.0.1:9050: names (`.onion` too) go to it unresolved, the proxy resolves
    /// none itself, and a SOCKS5 client's credentials are passed on (Tor's stream isolation).
    #[arg(long, value_name = "ADDR")]
    pub upstream_socks5: Option<SocketAddr>,

    /// Started as root: the user to switch to once the sockets are open. Default:
    /// bip324-proxy (the package creates it), or nobody when that user does not exist.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Time allowed to connect to the destination and complete the v2 handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// Time allowed for a client to send its first 16 bytes, which tell v1 from v2.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub first_bytes_timeout: Duration,

    /// When a destination does not speak v2, retry that connection once in plaintext v1
    /// (Bitcoin Core's rule: it sent nothing and closed, reset or stayed silent during the key
    /// exchange). Each connection tries v2 first: nothing is remembered, so an attacker who
    /// resets one attempt downgrades that connection only. Off by default: without it, such a
    /// connection is closed and nothing is ever sent in plaintext.
    #[arg(long)]
    pub v1_fallback: bool,

    /// No longer used (v1-only destinations are not remembered); accepted so that old
    /// configurations still start.
    #[arg(long, value_name = "DURATION", hide = true, value_parser = humantime::parse_duration)]
    pub v1_fallback_ttl: Option<Duration>,

    /// Traffic shaping of what the proxy sends in v2. `buckets`: each flight is padded with a
    /// decoy packet to a bucket size (powers of two from 512 B to 64 KiB, then multiples of
    /// 64 KiB), which hides small messages' sizes within their bucket but not their timing or
    /// number (docs/security.md); costs bandwidth. Off by default.
    #[arg(long, value_enum, value_name = "STRATEGY", default_value_t = Shaping::None)]
    pub shaping: Shaping,

    /// With --shaping cover: the mean idle time before a cover decoy (randomized ±50%).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub cover_interval: Duration,

    /// With --shaping cover: most cover bytes a second, per connection and for the whole
    /// proxy (each a token bucket of one second; when one is empty, no cover is sent).
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub cover_budget: u64,

    /// See --cover-budget.
    #[arg(long, value_name = "BYTES", default_value_t = 16_384)]
    pub cover_budget_total: u64,

    /// The length of the garbage the proxy sends after its key in each v2 handshake, drawn
    /// uniformly from RANGE (`MIN-MAX` or `N`, at most 4095 bytes). The default is the whole
    /// range the BIP allows, as Bitcoin Core draws it, so a handshake's size says little; `0`
    /// saves up to 4 KiB per connection on a metered link, and any narrow range is a
    /// fingerprint of this proxy.
    #[arg(long, value_name = "RANGE", default_value = "0-4095")]
    pub garbage_len: GarbageLen,

    /// Start the 64-byte key of every v2 handshake the proxy sends (redirected, SOCKS5 and
    /// inbound connections alike) with these bytes: 1 to 32, in hex. A filter that judges a
    /// connection by its first bytes then sees what they look like, e.g. an HTTP request
    /// line: `--key-prefix 474554202f20485454502f312e310d0a` is `GET / HTTP/1.1\r\n`. The
    /// rest of the key and the garbage stay random, and packet sizes and timing do not
    /// change, so a closer look still sees BIP-324; and one fixed prefix is a fingerprint of
    /// this proxy in itself (docs/security.md). Refused: a prefix that starts with a
    /// network's magic, or whose bytes 4 to 16 are a v1 `version` command: a v2 node would
    /// take it for v1 and hang up. Costs a few inverse-map evaluations per handshake. Off by
    /// default.
    #[arg(long, value_name = "HEX", value_parser = parse_key_prefix)]
    pub key_prefix: Option<KeyPrefix>,

    /// Append `/bip324-proxy:VERSION/` to each v1 client's user agent (BIP-14 style, within
    /// Bitcoin Core's 256 bytes; nothing else in its `version` changes). Off by default: it
    /// tells the remote that a proxy is in use, a fingerprint.
    #[arg(long)]
    pub user_agent_suffix: bool,

    /// Most connections handled at once by each front (redirected, SOCKS5, inbound: each has
    /// a pool of its own, so none can use up another's); further clients wait in the listen
    /// backlog.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_connections: usize,

    /// Unix socket answering status requests (live connections, totals), read by
    /// `bip324-redirect status`. Under systemd, a Unix socket passed by socket activation is
    /// used instead.
    /// Default: /run/bip324-proxy/control.sock when started as root, else
    /// $XDG_RUNTIME_DIR/bip324-proxy/control.sock (where `bip324-redirect status` also looks;
    /// none without XDG_RUNTIME_DIR). Its directory must be writable by no one else.
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::FilePath)]
    pub control: Option<PathBuf>,

    /// Do not open the control socket.
    #[arg(long, conflicts_with = "control")]
    pub no_control: bool,

    /// Take over from the proxy that answers on the control socket (--control, or the
    /// default): receive its listening sockets (redirected, inbound, SOCKS5, --metrics and the
    /// control socket itself) and its live connections with their v2 sessions, carry those on
    /// where they stood and serve every new connection. The old proxy finishes the few that
    /// cannot move (still opening, or half closed; within --drain-timeout), then exits. No
    /// port closes, no connection is dropped and no peer sees a new handshake, so an upgrade
    /// needs no restart. Start it as that proxy was started, with the same options: it runs as
    /// the same user, which alone the running proxy accepts. (Under systemd, `systemctl
    /// restart` does the same through the file descriptor store.)
    #[arg(long, conflicts_with = "no_control")]
    pub take_over: bool,

    /// With --take-over: how long the proxy taken over may keep the connections that could
    /// not move; those still open then are closed and it exits.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Serve a dashboard at http://ADDR/ (every open connection with its session id, totals,
    /// the last hour of traffic; read-only) and Prometheus metrics at http://ADDR/metrics. Off
    /// by default. Keep it on loopback, e.g. 127.0.0.1:9324: the page shows every client's
    /// address and destination to whoever can reach it.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Log level: error, warn, info (one line per connection opened and closed), debug (one
    /// line per message) or trace. RUST_LOG, when set, takes precedence.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
}

/// What `--shaping` does to the proxy's v2 output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shaping {
    /// Packets as the messages make them.
    None,
    /// Every flight padded to a bucket size with a decoy.
    Buckets,
    /// Buckets, and a 512-byte decoy at random moments while a direction is idle.
    Cover,
}

fn parse_network(name: &str) -> Result<bip324_protocol::Network, String> {
    bip324_protocol::Network::from_name(name)
        .ok_or_else(|| "one of mainnet, testnet3, testnet4, signet, regtest".to_string())
}

/// `--key-prefix`: 1 to 32 bytes in hex that the protocol crate accepts as a prefix.
fn parse_key_prefix(hex_prefix: &str) -> Result<KeyPrefix, String> {
    let bytes = hex::decode(hex_prefix.trim()).map_err(|e| {
        format!("not hex ({e}): write each byte as two hex digits, e.g. 474554 for `GET`")
    })?;
    if bytes.is_empty() {
        return Err(format!("give 1 to {MAX_KEY_PREFIX_LEN} bytes"));
    }
    KeyPrefix::new(&bytes).map_err(|e| e.to_string())
}

/// How long the garbage after the proxy's key is (`--garbage-len`): drawn uniformly from
/// `min..=max` for each handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GarbageLen {
    min: u16,
    max: u16,
}

impl GarbageLen {
    /// Uniform but for a bias below 2^-20 (a span of at most 4096 over 2^32 draws).
    pub fn draw(self, random: u32) -> usize {
        let span = u32::from(self.max - self.min) + 1;
        usize::from(self.min) + (random % span) as usize
    }
}

impl std::str::FromStr for GarbageLen {
    type Err = String;

    /// `N` or `MIN-MAX`, in bytes, at most 4095.
    fn from_str(s: &str) -> Result<Self, String> {
        let bound = |part: &str| -> Result<u16, String> {
            match part.trim().parse::<u16>() {
                Ok(n) if usize::from(n) <= MAX_GARBAGE_LEN => Ok(n),
                _ => Err(format!(
                    "`{part}` is not a length from 0 to {MAX_GARBAGE_LEN} (e.g. 0, 512 or 0-4095)"
                )),
            }
        };
        let (min, max) = match s.split_once('-') {
            Some((min, max)) => (bound(min)?, bound(max)?),
            None => (bound(s)?, bound(s)?),
        };
        if min > max {
            return Err(format!("{min} is above {max}: write MIN-MAX"));
        }
        Ok(GarbageLen { min, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_lengths_parse_and_stay_in_range() {
        let full: GarbageLen = "0-4095".parse().unwrap();
        assert_eq!(full.draw(0), 0);
        assert_eq!(full.draw(4095), 4095);
        assert_eq!(full.draw(4096), 0);
        assert_eq!(full.draw(u32::MAX), 4095);
        let fixed: GarbageLen = "512".parse().unwrap();
        assert!([0, 1, 777, u32::MAX].iter().all(|&r| fixed.draw(r) == 512));
        let narrow: GarbageLen = "100-103".parse().unwrap();
        assert!((0..1000).all(|r| (100..=103).contains(&narrow.draw(r))));
        for bad in ["4096", "-1", "5-4", "0-4096", "x", ""] {
            assert!(bad.parse::<GarbageLen>().is_err(), "{bad}");
        }
    }

    #[test]
    fn key_prefixes_are_hex_of_1_to_32_bytes_and_never_a_magic() {
        let http = parse_key_prefix("474554202f20485454502f312e310d0a").expect("GET / HTTP/1.1");
        assert_eq!(http.as_bytes(), b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse_key_prefix(&"ab".repeat(32)).map(|p| p.as_bytes().len()),
            Ok(32)
        );
        for (bad, says) in [
            ("", "1 to 32 bytes"),
            ("4", "not hex"),
            ("zz", "not hex"),
            (&"ab".repeat(33), "at most 32 bytes"),
            // mainnet's magic followed by `version`: Bitcoin Core would take it for v1.
            ("f9beb4d976657273696f6e", "mainnet network's magic"),
            ("fabfb5da", "regtest network's magic"),
        ] {
            let error = parse_key_prefix(bad).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
