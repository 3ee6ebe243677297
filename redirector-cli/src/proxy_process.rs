//! How the running proxy is set up, checked against the policy: where it listens (its own
//! word, over the control socket), its groups, and for eBPF its cgroup. Each mismatch makes
//! every tagged connection fail, while the redirect itself looks fine.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use crate::backend::BackendKind;
use crate::policy::Policy;
use crate::problem::Problem;

/// What is wrong with the proxy whose pid and listen list are given.
pub(crate) fn problems(
    pid: u32,
    listen: &[SocketAddr],
    policy: &Policy,
    backend: BackendKind,
    cgroup: Option<&Path>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let port = policy.proxy_port;
    let serves = |ip: IpAddr| {
        listen
            .iter()
            .any(|a| a.port() == port && (a.ip().is_unspecified() || a.ip() == ip))
    };
    for ip in [
        IpAddr::from(Ipv4Addr::LOCALHOST),
        IpAddr::from(Ipv6Addr::LOCALHOST),
    ] {
        if !serves(ip) {
            problems.push(Problem::ProxyNotListening {
                pid,
                address: SocketAddr::new(ip, port),
                listen: listen.to_vec(),
            });
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    if let (Some(gids), Some(group)) = (primary_gids(&status), &policy.group)
        && gids.contains(&group.id)
    {
        problems.push(Problem::ProxyInGroup {
            pid,
            group: group.clone(),
        });
    }
    if let (BackendKind::Ebpf, Some(attached)) = (backend, cgroup) {
        problems.extend(outside_cgroup(pid, attached));
    }
    problems
}

/// The eBPF programs only tell the original destination to sockets in the cgroup they are
/// attached to: a proxy outside it refuses every tagged connection as not redirected.
pub(crate) fn outside_cgroup(pid: u32, attached: &Path) -> Option<Problem> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let root = mount_root(attached)?;
    let proxy_cgroup = root.join(cgroup_v2_path(&own)?.trim_start_matches('/'));
    (!proxy_cgroup.starts_with(attached)).then(|| Problem::ProxyOutsideCgroup {
        pid,
        cgroup: proxy_cgroup,
        attached: attached.to_path_buf(),
    })
}

/// The pids of the running `bip324-proxy` processes among the holders of the probed
/// listeners, as far as this process may see.
pub(crate) fn proxies_in(probes: &[crate::proxy_listener::Probe]) -> Vec<u32> {
    let mut pids: Vec<u32> = probes
        .iter()
        .flat_map(|p| &p.listeners)
        .flat_map(|l| &l.holders)
        .filter(|h| h.name == "bip324-proxy")
        .map(|h| h.pid)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The real and filesystem gids from a `/proc/PID/status` text: the ids the eBPF and the
/// nftables backends match.
fn primary_gids(status: &str) -> Option<[u32; 2]> {
    let line = status.lines().find_map(|l| l.strip_prefix("Gid:"))?;
    let ids: Vec<u32> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    Some([*ids.first()?, *ids.get(3)?])
}

/// The cgroup v2 path from a `/proc/PID/cgroup` text (`0::/system.slice/x.service`).
fn cgroup_v2_path(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The cgroup v2 mount point that holds `dir`.
fn mount_root(dir: &Path) -> Option<std::path::PathBuf> {
    let root = crate::backend::ebpf::mounts::cgroup2_root().ok()?;
    dir.starts_with(&root).then_some(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Id;

    fn policy() -> Policy {
        Policy::new(
            Id {
                id: 997,
                name: Some("btc".into()),
            },
            &[8333],
            324,
            vec![],
        )
        .unwrap()
    }

    #[test]
    fn reads_the_real_and_filesystem_gids() {
        let status = "Name:\tbip324-proxy\nUid:\t996\t996\t996\t996\nGid:\t995\t995\t995\t997\n";
        assert_eq!(primary_gids(status), Some([995, 997]));
        assert_eq!(
            cgroup_v2_path("0::/system.slice/bip324-proxy.service\n"),
            Some("/system.slice/bip324-proxy.service")
        );
    }

    #[test]
    fn a_proxy_elsewhere_than_the_policys_port_is_a_problem() {
        let ours = [
            "127.0.0.1:324".parse().unwrap(),
            "[::1]:324".parse().unwrap(),
        ];
        let pid = std::process::id();
        assert!(problems(pid, &ours, &policy(), BackendKind::Nftables, None).is_empty());
        let dual_stack = ["[::]:324".parse().unwrap()];
        assert!(problems(pid, &dual_stack, &policy(), BackendKind::Nftables, None).is_empty());
        let elsewhere = ["127.0.0.1:1324".parse().unwrap()];
        let found = problems(pid, &elsewhere, &policy(), BackendKind::Nftables, None);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            matches!(&found[0], Problem::ProxyNotListening { address, .. }
                if *address == "127.0.0.1:324".parse().unwrap()),
            "{found:?}"
        );
        assert!(
            found[1]
                .to_string()
                .contains("does not listen on [::1]:324"),
            "{found:?}"
        );
    }

    /// This test process runs somewhere below the cgroup v2 root: inside the root, outside a
    /// sibling directory that does not contain it.
    #[test]
    fn a_process_outside_the_attached_cgroup_is_found() {
        let Ok(root) = crate::backend::ebpf::mounts::cgroup2_root() else {
            panic!("the tests need a cgroup v2 hierarchy");
        };
        let pid = std::process::id();
        assert_eq!(outside_cgroup(pid, &root), None);
        let elsewhere = root.join("bip324-no-such-cgroup");
        let problem = outside_cgroup(pid, &elsewhere).expect("outside");
        assert!(
            matches!(&problem, Problem::ProxyOutsideCgroup { attached, .. } if *attached == elsewhere),
            "{problem}"
        );
    }
}
