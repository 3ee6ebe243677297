//! Who listens where the redirect sends connections. Whoever holds the proxy port receives the
//! group's plaintext, so "something answers" is not enough: the listener must have been made
//! by root (the socket unit, or a proxy started as root) or by the proxy's own user, and be
//! held by the proxy. Read over sock_diag, without connecting: checking never shows up in the
//! proxy's logs or metrics.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use bip324_sock_diag::Listener;
use nix::unistd::{Uid, User};
use serde::Serialize;

use crate::problem::Problem;

/// The proxy's own user, as the package creates it.
pub(crate) const PROXY_USER: &str = "bip324-proxy";

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Probe {
    pub address: SocketAddr,
    /// A trusted listener is there: tagged connections reach the proxy.
    pub answering: bool,
    pub listeners: Vec<ListenerView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct ListenerView {
    pub local: SocketAddr,
    pub uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub holders: Vec<Holder>,
    /// Made by root or the proxy's user.
    pub trusted: bool,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Holder {
    pub pid: u32,
    pub name: String,
}

impl ListenerView {
    fn new(listener: Listener, trusted_uids: &[u32]) -> ListenerView {
        ListenerView {
            local: listener.local,
            uid: listener.uid,
            user: User::from_uid(Uid::from_raw(listener.uid))
                .ok()
                .flatten()
                .map(|u| u.name),
            trusted: trusted_uids.contains(&listener.uid),
            holders: listener
                .holders
                .into_iter()
                .map(|p| Holder {
                    pid: p.pid,
                    name: p.name,
                })
                .collect(),
        }
    }

    /// "user nobody (uid 65534), held by python3 (pid 4242)".
    pub(crate) fn describe(&self) -> String {
        let mut text = match &self.user {
            Some(user) => format!("user {user} (uid {})", self.uid),
            None => format!("uid {}", self.uid),
        };
        if !self.holders.is_empty() {
            let holders: Vec<String> = self
                .holders
                .iter()
                .map(|h| format!("{} (pid {})", h.name, h.pid))
                .collect();
            text.push_str(&format!(", held by {}", holders.join(", ")));
        }
        text
    }
}

/// Looks at the proxy's port on both loopback addresses (the redirect targets both).
pub(crate) fn probe(port: u16) -> Vec<Probe> {
    let mut trusted_uids = vec![0];
    if let Ok(Some(proxy)) = User::from_name(PROXY_USER) {
        trusted_uids.push(proxy.uid.as_raw());
    }
    [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ]
    .into_iter()
    .map(|address| match bip324_sock_diag::listeners_for(address) {
        Ok(found) => {
            let listeners: Vec<ListenerView> = found
                .into_iter()
                .map(|l| ListenerView::new(l, &trusted_uids))
                .collect();
            Probe {
                address,
                answering: !listeners.is_empty() && listeners.iter().all(|l| l.trusted),
                listeners,
                error: None,
            }
        }
        Err(e) => Probe {
            address,
            answering: false,
            listeners: Vec::new(),
            error: Some(format!("cannot list listening sockets: {e}")),
        },
    })
    .collect()
}

/// What is wrong with the listeners; `proxy_pid` is the pid the proxy's control socket
/// reported, when it answered.
pub(crate) fn problems(probes: &[Probe], proxy_pid: Option<u32>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let silent: Vec<&Probe> = probes.iter().filter(|p| p.listeners.is_empty()).collect();
    if let Some(first) = silent.first() {
        problems.push(Problem::ProxySilent {
            addresses: silent.iter().map(|p| p.address).collect(),
            why: first
                .error
                .clone()
                .unwrap_or_else(|| "nothing listens there".into()),
        });
    }
    for probe in probes {
        for listener in &probe.listeners {
            if !listener.trusted {
                problems.push(Problem::UntrustedListener {
                    address: probe.address,
                    listener: listener.describe(),
                });
            } else if let Some(pid) = proxy_pid
                && !listener.holders.is_empty()
                && !listener.holders.iter().any(|h| h.pid == pid)
            {
                problems.push(Problem::AnotherProxyListens {
                    address: probe.address,
                    listener: listener.describe(),
                    pid,
                });
            }
        }
    }
    problems
}

/// "127.0.0.1:324 and [::1]:324", for sentences.
pub(crate) fn addresses(probes: &[Probe]) -> String {
    let list: Vec<String> = probes.iter().map(|p| p.address.to_string()).collect();
    list.join(" and ")
}

/// A problem when any local user may bind `port`.
pub(crate) fn port_warning(port: u16) -> Option<Problem> {
    let start = bip324_sock_diag::unprivileged_port_start();
    (u32::from(port) >= start).then_some(Problem::UnprivilegedPort { port, start })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(uid: u32, trusted: bool, holder_pid: u32) -> Probe {
        Probe {
            address: "127.0.0.1:324".parse().unwrap(),
            answering: trusted,
            listeners: vec![ListenerView {
                local: "127.0.0.1:324".parse().unwrap(),
                uid,
                user: Some("nobody".into()),
                holders: vec![Holder {
                    pid: holder_pid,
                    name: "python3".into(),
                }],
                trusted,
            }],
            error: None,
        }
    }

    #[test]
    fn an_untrusted_listener_is_named() {
        let problems = problems(&[probe(65534, false, 4242)], None);
        assert_eq!(
            problems,
            [Problem::UntrustedListener {
                address: "127.0.0.1:324".parse().unwrap(),
                listener: "user nobody (uid 65534), held by python3 (pid 4242)".into(),
            }]
        );
    }

    /// A root listener held by another process than the proxy on the control socket: two
    /// proxies, or a stale one.
    #[test]
    fn a_listener_of_another_process_than_the_proxy_is_a_problem() {
        assert!(problems(&[probe(0, true, 10)], Some(10)).is_empty());
        let problems = problems(&[probe(0, true, 11)], Some(10));
        assert!(
            matches!(problems[..], [Problem::AnotherProxyListens { pid: 10, .. }]),
            "{problems:?}"
        );
    }

    #[test]
    fn ports_from_the_unprivileged_start_are_warned_about() {
        let start = bip324_sock_diag::unprivileged_port_start();
        assert!(port_warning(u16::try_from(start).unwrap_or(u16::MAX)).is_some());
        if start > 1 {
            assert!(port_warning(1).is_none());
        }
    }
}
