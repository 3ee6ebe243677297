//! `bip324-redirect check NODE`: one real connection of the group, and the proxy's account
//! of it. The connection is made from a thread whose credentials alone carry the group (the
//! raw system calls change one thread, not the process), so the kernel redirects it exactly
//! as it redirects a light client.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bip324_control::{CloseKind, FailureReason, Outcome, StatusDocument, TransportKind};
use bip324_protocol::{Magic, Network, v1};

use crate::error::{Error, exit};
use crate::policy::Id;
use crate::proxy_control;
use crate::state::Enabled;
use crate::status::{self, Verdict};

/// What the check's own connection saw.
struct Probe {
    /// Its address, once connected: how the proxy's records name it.
    local: Option<SocketAddr>,
    answered_in: Duration,
    /// The node's first command, or why there was none.
    answer: Result<String, String>,
}

/// An example of what `check` takes, for the sentences that refuse what it does not.
const EXAMPLE: &str = "e.g. `bip324-redirect check 203.0.113.7:8333`, or `bip324-redirect check \
                       203.0.113.7` for the network's usual port";

pub(crate) fn run(
    args: &bip324_redirect_args::CheckArgs,
    enabled: &Enabled,
    group: &Id,
) -> Result<u8, Error> {
    let (node, network) = node_of(args)?;
    let control = args
        .control
        .clone()
        .unwrap_or_else(bip324_control::find_socket);
    // `status`'s judgement first: a broken redirect or a stopped proxy is said as such, with
    // its fix, instead of being blamed on the node.
    let report = status::report(&control)?;
    if let Some(code) = broken(&report, enabled, node) {
        return Ok(code);
    }
    for problem in &report.problems {
        println!("note:  {problem}");
    }
    let (timeout, gid, magic) = (args.timeout, group.id, network.magic());
    let probe = std::thread::spawn(move || connect_as(gid, node, magic, timeout))
        .join()
        .map_err(|_| Error::Config("the check's connection thread failed".into()))??;
    let pid = report.proxy_status.as_ref().map(|s| s.proxy.pid);
    let asked = ask(&control, &probe);
    let name = network.name();
    let record = match (&asked, probe.local) {
        (Ok(status), Some(local)) => find(status, local),
        _ => None,
    };
    match (&probe.answer, record) {
        (Ok(answer), Some(Record::Live { transport, session })) => {
            let encrypted = transport == Some(TransportKind::V2);
            println!(
                "check: {node} ({name}) through the proxy: {}{}, answered `{answer}` in {} ms",
                if encrypted {
                    "encrypted (v2)".to_string()
                } else {
                    format!("NOT encrypted ({})", shown(transport))
                },
                session
                    .map(|id| format!(", session id {id}"))
                    .unwrap_or_default(),
                probe.answered_in.as_millis()
            );
            Ok(if encrypted { exit::OK } else { exit::DEGRADED })
        }
        (_, Some(Record::Ended(outcome))) => {
            println!(
                "check: {node} ({name}) through the proxy: FAILED ({}): {} (the proxy's log: {})",
                outcome_label(outcome),
                advice(outcome),
                proxy_log(pid)
            );
            Ok(exit::DEGRADED)
        }
        (Err(why), Some(Record::Live { transport, .. })) => {
            println!(
                "check: {node} ({name}) through the proxy: no answer ({why}); the proxy is \
                 still at `{}` after {} s: the node is slow or silent; try a longer \
                 --timeout (the proxy's log: {})",
                shown(transport),
                timeout.as_secs(),
                proxy_log(pid)
            );
            Ok(exit::DEGRADED)
        }
        (result, None) => {
            let saw = match result {
                Ok(answer) => format!("{node} answered `{answer}`"),
                Err(why) => format!("the connection to {node} failed ({why})"),
            };
            println!(
                "check: {saw}, but the proxy has no record of this connection: it did NOT go \
                 through the proxy{}",
                match &asked {
                    Err(e) => format!(" (or the proxy cannot be asked: {e})"),
                    Ok(_) => String::new(),
                }
            );
            Ok(exit::DEGRADED)
        }
    }
}

/// Says what `status` found wrong when it stops the group's connections from being encrypted,
/// with its fix, and gives the exit code; `None` when the check can go on.
fn broken(report: &status::Report, enabled: &Enabled, node: SocketAddr) -> Option<u8> {
    let mut why = Vec::new();
    if matches!(
        report.state,
        Verdict::Vanished | Verdict::Modified | Verdict::Unrecorded | Verdict::Disabled
    ) {
        why.push("the redirect is not in place as enabled".to_string());
    }
    let proxy_down = report
        .proxy
        .iter()
        .filter(|p| p.address.is_ipv4() == node.is_ipv4())
        .any(|p| p.listeners.is_empty() || p.listeners.iter().any(|l| !l.trusted));
    if proxy_down {
        why.push("the proxy does not answer on its port (or someone else does)".to_string());
    }
    let policy = &enabled.policy;
    let mut fixes: Vec<String> = if why.is_empty() {
        Vec::new()
    } else {
        report.problems.iter().map(ToString::to_string).collect()
    };
    if !policy.ports.contains(&node.port()) {
        why.push(format!(
            "port {} is not one the policy redirects, so this connection would go direct, in \
             PLAINTEXT",
            node.port()
        ));
        let mut wider = policy.clone();
        wider.ports.push(node.port());
        fixes.push(format!(
            "to encrypt connections to port {}: `sudo {}` (the policy: {})",
            node.port(),
            wider.enable_command(enabled.backend.name()),
            policy.describe()
        ));
    }
    if why.is_empty() {
        return None;
    }
    println!("check: not tried: {}", why.join("; "));
    for fix in fixes {
        println!("fix:   {fix}");
    }
    Some(exit::DEGRADED)
}

/// The node as an address, and its network: a bare address takes the network's usual port;
/// names and this host's own addresses are refused with what to type instead.
fn node_of(args: &bip324_redirect_args::CheckArgs) -> Result<(SocketAddr, Network), Error> {
    let text = args.node.trim();
    let named = |name: &str| -> Result<Network, Error> {
        Network::from_name(name).ok_or_else(|| Error::Config(format!("unknown network {name}")))
    };
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let node = if let Ok(addr) = text.parse::<SocketAddr>() {
        addr
    } else if let Ok(ip) = bare.parse::<IpAddr>() {
        let network = match &args.network {
            Some(name) => named(name)?,
            None => Network::Mainnet,
        };
        SocketAddr::new(ip, network.default_port())
    } else {
        return Err(Error::Config(format!(
            "check takes a node's IP address, not a name ({:?}): the proxy connects to the \
             address a client asked for, and a name is resolved by the client; {EXAMPLE} \
             (`getent ahosts NAME` shows a name's addresses)",
            text.chars().take(80).collect::<String>()
        )));
    };
    if is_this_host(node.ip()) {
        return Err(Error::Config(format!(
            "{} is this host: the proxy refuses connections to this host (a node here needs no \
             encryption, and a loop must not form); give a remote node's address, {EXAMPLE}",
            node.ip()
        )));
    }
    let network = match &args.network {
        Some(name) => named(name)?,
        None => Network::from_port(node.port()).ok_or_else(|| {
            Error::Config(format!(
                "port {} is no network's usual one: say which with --network",
                node.port()
            ))
        })?,
    };
    Ok((node, network))
}

/// Loopback, unspecified, or an address of one of this host's interfaces (binding to it
/// works only then).
fn is_this_host(ip: IpAddr) -> bool {
    let mapped = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    mapped.is_loopback()
        || mapped.is_unspecified()
        || std::net::UdpSocket::bind(SocketAddr::new(mapped, 0)).is_ok()
}

/// What the proxy knows of the check's connection.
enum Record {
    Live {
        /// `None` while the proxy is still connecting.
        transport: Option<TransportKind>,
        session: Option<String>,
    },
    Ended(Outcome),
}

fn find(status: &StatusDocument, local: SocketAddr) -> Option<Record> {
    if let Some(ended) = status.recent.iter().rev().find(|c| c.client == local) {
        return Some(Record::Ended(ended.outcome));
    }
    status
        .connections
        .iter()
        .find(|c| c.client == local)
        .map(|c| Record::Live {
            transport: c.transport,
            session: c.session_id.clone(),
        })
}

/// The proxy's status after the probe. A failed probe's connection may still be ending in the
/// proxy when the reset arrives here: asked again for a moment, until it is listed as ended.
fn ask(
    control: &std::path::Path,
    probe: &Probe,
) -> Result<StatusDocument, proxy_control::ControlError> {
    let mut status = proxy_control::status(control);
    let Some(local) = probe.local else {
        return status;
    };
    for _ in 0..20 {
        let done = match &status {
            Ok(s) => probe.answer.is_ok() || s.recent.iter().any(|c| c.client == local),
            Err(_) => true,
        };
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        status = proxy_control::status(control);
    }
    status
}

/// A live connection's transport, as `status` shows it.
fn shown(transport: Option<TransportKind>) -> &'static str {
    transport.map_or("connecting", TransportKind::as_str)
}

/// The proxy's label, as its log has it.
fn outcome_label(outcome: Outcome) -> String {
    match outcome {
        Outcome::Failed(reason) => format!("failure={reason}"),
        Outcome::Closed(kind) => format!("close={kind}"),
        Outcome::Unknown => "unknown".to_string(),
    }
}

/// One sentence of advice per way a connection ends.
fn advice(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Failed(reason) => match reason {
            FailureReason::ConnectError => {
                "the proxy could not connect to the node: it is down, does not listen on that \
                 port, or a firewall rejects the connection; check the address, the port and \
                 any firewall on the way"
            }
            FailureReason::ConnectTimeout => {
                "the node did not accept the proxy's connection in time: the address is wrong, \
                 the host is down, or a firewall drops the connection; check the address, the \
                 port and any firewall"
            }
            FailureReason::HandshakeClosed
            | FailureReason::HandshakeError
            | FailureReason::HandshakeTimeout => {
                "the node accepted the connection but not the v2 handshake: it does not speak \
                 v2 (Bitcoin Core before 26 or with -v2transport=0, btcd, ...). Upgrade it or \
                 turn v2 on there, choose another node, or start the proxy with --v1-fallback \
                 to reach such nodes in PLAINTEXT"
            }
            FailureReason::HandshakeProtocol => {
                "the node broke the v2 protocol: it may be no Bitcoin node, or of another \
                 network (--network)"
            }
            FailureReason::ClientTimeout
            | FailureReason::ClientClosed
            | FailureReason::ClientError => {
                "the proxy did not get this check's first message: the check's own connection \
                 failed; run it again"
            }
            FailureReason::Shutdown => {
                "the proxy was stopping; start it again and re-run the check"
            }
            FailureReason::PeerTimeout | FailureReason::PeerClosed | FailureReason::PeerError => {
                "that ended an inbound peer's connection, not this check's; run the check again"
            }
            // A reason of a proxy newer than this command.
            FailureReason::Unknown => "see the proxy's log",
        },
        Outcome::Closed(kind) if kind.by_remote() => {
            "the node closed the encrypted connection before answering: it may be of another \
             network (--network), or refuses this client"
        }
        Outcome::Closed(CloseKind::Unknown) => "see the proxy's log",
        Outcome::Closed(_) => {
            "the connection was opened, then closed before the node answered; run the check \
             again"
        }
        Outcome::Unknown => "the proxy did not say how it ended",
    }
}

/// Where the proxy logs: its unit's journal under systemd, else its own output.
fn proxy_log(pid: Option<u32>) -> String {
    let unit = pid
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok())
        .and_then(|cgroup| unit_of(&cgroup));
    match unit {
        Some(unit) => format!("`journalctl -u {unit}`"),
        None => "the terminal or log file of the proxy started by hand".to_string(),
    }
}

/// The proxy's systemd service, from its `/proc/PID/cgroup`: systemd puts each service's
/// processes in a cgroup named after it.
fn unit_of(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let last = line.rsplit('/').next()?;
        (last.starts_with("bip324-proxy") && last.ends_with(".service")).then(|| last.to_string())
    })
}

/// Connects with `gid` as this thread's only group, says hello in v1 and waits for the
/// node's first message; the connection stays open until the proxy was asked about it.
fn connect_as(gid: u32, node: SocketAddr, magic: Magic, timeout: Duration) -> Result<Probe, Error> {
    set_thread_group(gid)?;
    let started = Instant::now();
    let mut stream = match TcpStream::connect_timeout(&node, timeout) {
        Ok(stream) => stream,
        Err(e) => {
            return Ok(Probe {
                local: None,
                answered_in: started.elapsed(),
                answer: Err(format!("cannot connect: {e}")),
            });
        }
    };
    let local = stream.local_addr().ok();
    let answer = stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.write_all(&version_message(magic, node)))
        .and_then(|()| {
            let mut header = [0u8; 24];
            stream.read_exact(&mut header)?;
            let name_len = header[4..16].iter().position(|&b| b == 0).unwrap_or(12);
            Ok(header[4..4 + name_len]
                .iter()
                .flat_map(|b| std::ascii::escape_default(*b))
                .map(char::from)
                .collect::<String>())
        })
        .map_err(|e| format!("no answer: {e}"));
    let probe = Probe {
        local,
        answered_in: started.elapsed(),
        answer,
    };
    // Kept open a moment so that the proxy still lists it when asked.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        drop(stream);
    });
    Ok(probe)
}

/// This thread's real, effective and filesystem group becomes `gid`, with no supplementary
/// group: what `sg` gives a client (nftables matches the filesystem gid, eBPF the real one).
fn set_thread_group(gid: u32) -> Result<(), Error> {
    use nix::unistd::{getegid, getgid};
    if getgid().as_raw() == gid && getegid().as_raw() == gid {
        return Ok(()); // started with the group already (`sg btc -c ...`)
    }
    // SAFETY: plain system calls on this thread's own credentials; glibc's wrappers would
    // change every thread of the process.
    let rc = unsafe {
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0 {
            -1
        } else {
            libc::syscall(libc::SYS_setresgid, gid, gid, gid)
        }
    };
    if rc == 0 {
        return Ok(());
    }
    Err(Error::Privileges {
        action: format!(
            "check (connecting with group {gid}; or run it with the group: `sg GROUP -c \\
             'bip324-redirect check NODE'`)"
        ),
        missing: vec!["CAP_SETGID".into()],
    })
}

/// A v1 `version` message a node answers: protocol 70016, no services, no relay.
fn version_message(magic: Magic, node: SocketAddr) -> Vec<u8> {
    let mut payload = Vec::with_capacity(110);
    payload.extend_from_slice(&70016i32.to_le_bytes());
    payload.extend_from_slice(&0u64.to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    payload.extend_from_slice(&now.to_le_bytes());
    let ip = match node.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    };
    payload.extend_from_slice(&0u64.to_le_bytes());
    payload.extend_from_slice(&ip.octets());
    payload.extend_from_slice(&node.port().to_be_bytes());
    payload.extend_from_slice(&[0u8; 26]); // addr_from: unknown
    payload.extend_from_slice(&rand_nonce().to_le_bytes());
    let agent = format!("/bip324-redirect-check:{}/", env!("CARGO_PKG_VERSION"));
    payload.push(agent.len() as u8);
    payload.extend_from_slice(agent.as_bytes());
    payload.extend_from_slice(&0i32.to_le_bytes()); // start height
    payload.push(0); // relay: no transactions
    let command = v1::Command::from_name("version").expect("a valid command");
    let mut header = [0u8; v1::HEADER_LEN];
    v1::Header::write(&mut header, magic, &command, &payload);
    [&header[..], &payload].concat()
}

/// A nonce that tells our own connection apart if it loops back (not a secret).
fn rand_nonce() -> u64 {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    time ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(node: &str, network: Option<&str>) -> bip324_redirect_args::CheckArgs {
        bip324_redirect_args::CheckArgs {
            node: node.into(),
            network: network.map(String::from),
            timeout: Duration::from_secs(1),
            control: None,
        }
    }

    /// Every failure reason the proxy has gets its own sentence, labelled as in its log.
    #[test]
    fn each_failure_reason_has_its_advice() {
        for &reason in FailureReason::ALL {
            let outcome = Outcome::Failed(reason);
            assert_ne!(advice(outcome), "see the proxy's log", "{reason}");
            assert_eq!(outcome_label(outcome), format!("failure={reason}"));
        }
        let failed = |reason| advice(Outcome::Failed(reason));
        assert!(failed(FailureReason::HandshakeClosed).contains("--v1-fallback"));
        assert!(failed(FailureReason::ConnectError).contains("firewall"));
        let closed = |kind| advice(Outcome::Closed(kind));
        assert!(closed(CloseKind::RemoteClosed).contains("the node closed"));
        assert!(closed(CloseKind::ClientClosed).contains("opened, then closed"));
        assert_eq!(
            outcome_label(Outcome::Closed(CloseKind::Unknown)),
            "close=unknown"
        );
    }

    #[test]
    fn the_journal_is_named_only_for_a_proxy_under_systemd() {
        let unit = "0::/system.slice/bip324-proxy-inbound.service\n";
        assert_eq!(
            unit_of(unit).as_deref(),
            Some("bip324-proxy-inbound.service")
        );
        assert_eq!(
            unit_of("0::/system.slice/bip324-proxy.service").as_deref(),
            Some("bip324-proxy.service")
        );
        let by_hand = "0::/user.slice/user-1000.slice/session-3.scope\n";
        assert_eq!(unit_of(by_hand), None);
        assert!(proxy_log(None).contains("started by hand"));
    }

    #[test]
    fn a_bare_address_takes_the_networks_port_and_names_are_refused_with_an_example() {
        let (node, network) = node_of(&args("203.0.113.7", None)).unwrap();
        assert_eq!(node, "203.0.113.7:8333".parse().unwrap());
        assert_eq!(network, Network::Mainnet);
        let (node, _) = node_of(&args("2001:db8::7", Some("regtest"))).unwrap();
        assert_eq!(node.port(), Network::Regtest.default_port());
        let (node, _) = node_of(&args("[2001:db8::7]", None)).unwrap();
        assert_eq!(node.port(), 8333);
        for refused in [
            "localhost:8333",
            "node.example",
            "127.0.0.1:8333",
            "[::1]:8333",
        ] {
            let e = node_of(&args(refused, None)).unwrap_err().to_string();
            assert!(e.contains("check 203.0.113.7:8333"), "{refused}: {e}");
        }
    }

    #[test]
    fn the_version_message_is_well_framed() {
        let node: SocketAddr = "10.0.0.2:8333".parse().unwrap();
        let message = version_message(Network::Mainnet.magic(), node);
        assert_eq!(&message[..4], &Network::Mainnet.magic().0);
        assert_eq!(&message[4..11], b"version");
        let len = u32::from_le_bytes(message[16..20].try_into().unwrap()) as usize;
        assert_eq!(message.len(), 24 + len);
        assert_eq!(message[20..24], v1::checksum(&message[24..]));
    }
}
