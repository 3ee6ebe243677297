//! Live connections through `systemctl restart` and a package upgrade: the proxy leaves them
//! in systemd's file descriptor store, and the next one carries them on.

use super::container::Container;
use super::remote::{RemoteNode, Transport};
use super::{expect, in_group};
use crate::Result;

/// A client of the group that sends 400 small messages over ten seconds goes on, every echo
/// in order, while the proxy is restarted and then its package installed again (the
/// maintainer script restarts it): the remote saw one v2 session only, never a new
/// handshake, and the journal shows the connection carried on twice.
pub(super) fn live_connection_survives_restart_and_upgrade(
    c: &Container,
    node: &mut RemoteNode,
    remote: &str,
) -> Result {
    let seen = node.count();
    let carried = "carrying on 1 live connections from systemd's file descriptor store";
    let count = || -> Result<usize> {
        let n = c.ok(&format!(
            "journalctl -u bip324-proxy.service --no-pager -o cat | grep -cF -- \"{carried}\" || true"
        ))?;
        Ok(n.trim().parse().unwrap_or(0))
    };
    let before = count()?;
    c.ok(&format!(
        "rm -f /tmp/live.out; setsid -f sh -c \"{} > /tmp/live.out 2>&1; echo exit=\\$? >> \
         /tmp/live.out\" < /dev/null > /dev/null 2>&1",
        in_group(remote, "--large 0 --small 400 --pace-ms 25")
    ))?;
    // While the client is in the middle of its messages.
    let timed = |command: &str| {
        c.ok(&format!(
            "sleep 2 && start=$(date +%s%N) && {command} && \
             echo took_ms=$(( ($(date +%s%N) - start) / 1000000 ))"
        ))
    };
    timed("systemctl restart bip324-proxy.service")?;
    timed("dpkg -i /root/bip324-redirect.deb")?;
    c.ok(
        "for i in $(seq 300); do grep -q '^exit=' /tmp/live.out && exit 0; sleep 0.1; done; exit 1",
    )?;
    let out = c.ok("cat /tmp/live.out")?;
    c.ok("journalctl -u bip324-proxy.service --no-pager -o cat | tail -12")?;
    expect(
        out.contains("echoed=400") && out.contains("exit=0"),
        "the client's connection lived through a restart and an upgrade, every echo in order",
    )?;
    expect(
        count()? == before + 2,
        "the journal shows the connection carried on by the restarted and the upgraded proxy",
    )?;
    let session = node.next()?;
    expect(
        session.transport == Transport::V2,
        "the remote saw a v2 session",
    )?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    expect(
        node.count() == seen + 1,
        "the remote saw that one session only: no new handshake",
    )
}
