//! A proxy started with privileges (root, or a user given ambient capabilities) opens its
//! sockets, then gives every privilege up before it accepts anything: it never handles a
//! peer's bytes with privileges.

use anyhow::{Context, bail};
use caps::CapSet;
use nix::unistd::{Uid, User, setgid, setgroups, setuid};
use tracing::{info, warn};

use super::config::DEFAULT_USER;

/// The user a proxy started as root becomes (`user`, or the default); `None` when it was
/// not started as root.
pub(super) fn account(user: Option<&str>) -> anyhow::Result<Option<User>> {
    if !Uid::effective().is_root() {
        if let Some(user) = user {
            warn!("--user {user} is ignored: the proxy was not started as root");
        }
        return Ok(None);
    }
    let account = match user {
        Some(name) => lookup(name)?.with_context(|| format!("--user {name}: no such user"))?,
        None => match lookup(DEFAULT_USER)? {
            Some(account) => account,
            None => {
                let nobody = lookup("nobody")?.context(
                    "neither bip324-proxy nor nobody exists: create the proxy's user \
                     (useradd --system bip324-proxy) or pass --user",
                )?;
                warn!(
                    "no user {DEFAULT_USER} (the package creates it): running as nobody; \
                     create it with `useradd --system --user-group --no-create-home \
                     {DEFAULT_USER}` to give the proxy an identity of its own"
                );
                nobody
            }
        },
    };
    if account.uid.is_root() {
        bail!("--user {}: the proxy must not run as root", account.name);
    }
    Ok(Some(account))
}

/// Gives up every privilege for good: no new ones through exec, an empty bounding set where
/// the kernel allows it (it takes CAP_SETPCAP, which root has), `account`'s identity when
/// started as root, and empty ambient, inheritable, effective and permitted sets. Must run
/// while this is the process's only thread: capabilities belong to threads, and threads made
/// afterwards inherit these empty sets.
pub(super) fn give_up(account: Option<&User>) -> anyhow::Result<()> {
    nix::sys::prctl::set_no_new_privs().context("cannot set no_new_privs")?;
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false) {
        caps::clear(None, CapSet::Bounding).context("cannot empty the bounding set")?;
    }
    if let Some(account) = account {
        become_user(account)?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        let empty = |set| caps::read(None, set).is_ok_and(|held| held.is_empty());
        // Under systemd the sets are empty already, and its filter forbids capset.
        if !empty(set) {
            caps::clear(None, set).with_context(|| format!("cannot empty the {set:?} set"))?;
        }
        if !empty(set) {
            bail!("the {set:?} capability set is still not empty");
        }
    }
    Ok(())
}

/// Becomes `account`: no supplementary group, its group, its user, and no way back.
fn become_user(account: &User) -> anyhow::Result<()> {
    setgroups(&[]).context("cannot drop supplementary groups")?;
    setgid(account.gid).context("cannot switch group")?;
    setuid(account.uid).context("cannot switch user")?;
    if setuid(Uid::from_raw(0)).is_ok() {
        bail!(
            "still able to become root after switching to {}",
            account.name
        );
    }
    info!(
        user = %account.name,
        uid = account.uid.as_raw(),
        gid = account.gid.as_raw(),
        "privileges given up: running as {} from now on",
        account.name
    );
    Ok(())
}

fn lookup(name: &str) -> anyhow::Result<Option<User>> {
    User::from_name(name).with_context(|| format!("cannot look up user {name}"))
}
