//! A proxy started as root binds the privileged port, then becomes an unprivileged user
//! before it accepts anything: it never handles a peer's bytes with privileges.

use anyhow::{Context, bail};
use nix::unistd::{Uid, User, setgid, setgroups, setuid};
use tracing::{info, warn};

use super::config::DEFAULT_USER;

/// The user a proxy started as root becomes (`user`, or the default); `None` when it was
/// not started as root.
pub fn account(user: Option<&str>) -> anyhow::Result<Option<User>> {
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

/// Becomes `account`: no supplementary group, its group, its user, and no way back.
pub fn become_user(account: &User) -> anyhow::Result<()> {
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
        "sockets open; running as {} from now on",
        account.name
    );
    Ok(())
}

fn lookup(name: &str) -> anyhow::Result<Option<User>> {
    User::from_name(name).with_context(|| format!("cannot look up user {name}"))
}
