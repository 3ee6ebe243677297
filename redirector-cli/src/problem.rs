//! What `status` (and `enable`, `check`) find wrong, as values: callers decide by variant,
//! and `Display` gives the one sentence that says what is wrong and what to do. In
//! `status --json` each is that sentence.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Serialize, Serializer};

use crate::backend::BackendKind;
use crate::policy::Id;
use crate::proxy_listener::PROXY_USER;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The kernel could not be read: the error, in words.
    KernelUnreadable(String),
    /// A backend's own warning about what it found (full eBPF maps, ...).
    Backend(String),
    /// Redirect objects without a record of enabling them.
    Unrecorded {
        backends: Vec<BackendKind>,
        again: Reenable,
    },
    /// Enabled, but the backend's objects are gone: clients connect in plaintext.
    Vanished {
        backend: BackendKind,
        again: Reenable,
    },
    /// Enabled, but the objects differ from the policy.
    Modified {
        backend: BackendKind,
        details: Vec<String>,
        again: Reenable,
    },
    /// Another backend's objects beside the enabled one's.
    SecondBackend {
        other: BackendKind,
        enabled: BackendKind,
        again: Reenable,
    },
    /// Something that is not known to be the proxy answers on the control socket.
    UntrustedControl(String),
    /// The policy applied is not the configuration file's, which its unit re-applies.
    NotTheFilesPolicy {
        inbound: bool,
        applied: String,
        path: PathBuf,
        file: String,
    },
    /// The configuration file cannot be read or parsed.
    ConfigUnreadable { inbound: bool, why: String },
    /// Nothing listens on some of the proxy's addresses.
    ProxySilent {
        addresses: Vec<SocketAddr>,
        why: String,
    },
    /// A listener on the proxy's address made by neither root nor the proxy's user.
    UntrustedListener {
        address: SocketAddr,
        listener: String,
    },
    /// A trusted listener held by another process than the proxy on the control socket.
    AnotherProxyListens {
        address: SocketAddr,
        listener: String,
        pid: u32,
    },
    /// The proxy on the control socket does not listen where the redirect sends.
    ProxyNotListening {
        pid: u32,
        address: SocketAddr,
        listen: Vec<SocketAddr>,
    },
    /// The proxy runs with the redirected group: its own connections loop back to it.
    ProxyInGroup { pid: u32, group: Id },
    /// The proxy runs outside the cgroup the eBPF programs are attached to.
    ProxyOutsideCgroup {
        pid: u32,
        cgroup: PathBuf,
        attached: PathBuf,
    },
    /// Any local user may bind the proxy port.
    UnprivilegedPort { port: u16, start: u32 },
    /// Inbound redirect objects without a record of enabling them.
    InboundUnrecorded,
    /// Inbound mode enabled, its redirect gone.
    InboundVanished { enable: String },
    /// Inbound mode differs from its policy.
    InboundModified {
        differences: Vec<String>,
        enable: String,
    },
    /// No proxy serves the inbound port.
    NoInboundProxy { port: u16, socket: &'static str },
}

/// How to put the redirect back: the command that enabled it, when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reenable(pub Option<String>);

impl fmt::Display for Reenable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(command) => write!(
                f,
                "run `{command}` again (or `systemctl restart bip324-redirect`)"
            ),
            None => f.write_str("run `bip324-redirect enable` again"),
        }
    }
}

fn joined<T: fmt::Display>(items: &[T], separator: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::KernelUnreadable(why) => {
                write!(f, "cannot read the kernel's redirect: {why}")
            }
            Problem::Backend(warning) => f.write_str(warning),
            Problem::Unrecorded { backends, again } => write!(
                f,
                "{} redirect objects exist but no record of enabling them (made by another \
                 tool, or the record under /run was lost): {again} to own them, or \
                 `bip324-redirect disable` to remove them",
                joined(backends, " and ")
            ),
            Problem::Vanished { backend, again } => write!(
                f,
                "the {backend} redirect was removed from the kernel (for example by `nft flush \
                 ruleset` or a reload of nftables.service): its clients now connect directly, \
                 in PLAINTEXT; {again}"
            ),
            Problem::Modified {
                backend,
                details,
                again,
            } => {
                const SHOWN: usize = 3;
                let mut what = joined(&details[..details.len().min(SHOWN)], "; ");
                if details.len() > SHOWN {
                    what.push_str(&format!("; and {} more", details.len() - SHOWN));
                }
                write!(
                    f,
                    "the {backend} redirect in the kernel differs from the policy ({what}); \
                     {again}"
                )
            }
            Problem::SecondBackend {
                other,
                enabled,
                again,
            } => write!(
                f,
                "the {other} backend's objects are also present: {again} to keep only {enabled}"
            ),
            Problem::UntrustedControl(why) => f.write_str(why),
            Problem::NotTheFilesPolicy {
                inbound: false,
                applied,
                path,
                file,
            } => write!(
                f,
                "the policy applied (`{applied}`) is not the one in {} (`{file}`), which \
                 bip324-redirect.service applies after a reload of nftables.service or a \
                 reboot: run `{applied}` again to save it there, or `bip324-redirect restore` \
                 to apply the file's",
                path.display()
            ),
            Problem::NotTheFilesPolicy {
                inbound: true,
                applied,
                path,
                file,
            } => write!(
                f,
                "the inbound policy applied (`{applied}`) is not the one in {} (`{file}`), \
                 which bip324-redirect-inbound.service applies after a reload of \
                 nftables.service or a reboot: run `{applied}` again to save it there, or \
                 `bip324-redirect inbound restore`",
                path.display()
            ),
            Problem::ConfigUnreadable {
                inbound: false,
                why,
            } => write!(
                f,
                "cannot tell whether the policy applied is the configured one: {why}"
            ),
            Problem::ConfigUnreadable { inbound: true, why } => write!(
                f,
                "cannot tell whether the inbound policy is the configured one: {why}"
            ),
            Problem::ProxySilent { addresses, why } => write!(
                f,
                "the proxy does not answer on {} ({why}): tagged connections are refused until \
                 it runs (`systemctl start bip324-proxy.socket`, or `sudo bip324-proxy`)",
                joined(addresses, " and ")
            ),
            Problem::UntrustedListener { address, listener } => write!(
                f,
                "{address} is held by {listener}, which is neither root nor {PROXY_USER}: it \
                 receives the group's connections in PLAINTEXT. Stop that process now \
                 (`bip324-redirect disable` sends the group direct meanwhile), then start the \
                 proxy"
            ),
            Problem::AnotherProxyListens {
                address,
                listener,
                pid,
            } => write!(
                f,
                "{address} is held by {listener}, not by the proxy that answers on the control \
                 socket (pid {pid}): two proxies, or a stale one; stop the one you do not want"
            ),
            Problem::ProxyNotListening {
                pid,
                address,
                listen,
            } => write!(
                f,
                "the proxy (pid {pid}) does not listen on {address}, where the redirect sends \
                 connections (it listens on {}): start it with the policy's port, or enable \
                 with --proxy-port matching its --listen",
                joined(listen, ", ")
            ),
            Problem::ProxyInGroup { pid, group } => write!(
                f,
                "the proxy (pid {pid}) runs with group {group} as its primary group: its own \
                 connections are redirected back to it and every tagged connection fails; run \
                 it as its own user (User=/Group= bip324-proxy, or --user)"
            ),
            Problem::ProxyOutsideCgroup {
                pid,
                cgroup,
                attached,
            } => write!(
                f,
                "the proxy (pid {pid}) runs in cgroup {}, outside {} where the eBPF programs \
                 are attached: they cannot tell it the original destinations, so every tagged \
                 connection would be refused as not redirected; use a --cgroup that contains \
                 the proxy (the default, the root, does)",
                cgroup.display(),
                attached.display()
            ),
            Problem::UnprivilegedPort { port, start } => write!(
                f,
                "proxy port {port} can be bound by any local user \
                 (net.ipv4.ip_unprivileged_port_start={start}): whenever the proxy is not \
                 listening, whoever binds it receives the group's connections in PLAINTEXT; \
                 use a port below {start}, such as the default {}",
                bip324_redirect_args::DEFAULT_PROXY_PORT
            ),
            Problem::InboundUnrecorded => f.write_str(
                "inbound redirect objects exist without a record of enabling them: \
                 `bip324-redirect inbound disable` removes them, `inbound enable` owns them",
            ),
            Problem::InboundVanished { enable } => write!(
                f,
                "the inbound redirect was removed from the kernel (`nft flush ruleset`, a \
                 reload of nftables.service): peers reach the node directly, in v1 only; run \
                 `{enable}` again"
            ),
            Problem::InboundModified {
                differences,
                enable,
            } => write!(
                f,
                "inbound mode differs from its policy ({}): peers' connections may fail; run \
                 `{enable}` again",
                joined(differences, "; ")
            ),
            Problem::NoInboundProxy { port, socket } => write!(
                f,
                "no proxy serves inbound port {port} (neither the one on the control socket \
                 nor {socket}): peers' connections to the node are refused; `systemctl start \
                 bip324-proxy-inbound.socket`, or run `bip324-proxy --inbound [::]:{port}`"
            ),
        }
    }
}

/// In `status --json`, a problem is its sentence.
impl Serialize for Problem {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_its_sentence_in_json() {
        let problem = Problem::ProxySilent {
            addresses: vec![
                "127.0.0.1:324".parse().unwrap(),
                "[::1]:324".parse().unwrap(),
            ],
            why: "nothing listens there".into(),
        };
        let json = serde_json::to_value([&problem]).unwrap();
        assert_eq!(json[0], problem.to_string());
        assert!(
            problem
                .to_string()
                .starts_with("the proxy does not answer on 127.0.0.1:324 and [::1]:324 ("),
            "{problem}"
        );
    }

    #[test]
    fn at_most_three_differences_are_shown() {
        let problem = Problem::Modified {
            backend: BackendKind::Nftables,
            details: (1..=5).map(|n| format!("rule {n} differs")).collect(),
            again: Reenable(None),
        };
        let text = problem.to_string();
        assert!(
            text.contains("(rule 1 differs; rule 2 differs; rule 3 differs; and 2 more)"),
            "{text}"
        );
        assert!(
            text.ends_with("run `bip324-redirect enable` again"),
            "{text}"
        );
    }
}
