//! The record of what `enable` was asked, so `status` can tell "never enabled" from
//! "enabled, then removed behind our back" (`nft flush ruleset`, say).
//!
//! It lives under /run (gone at reboot, like the kernel objects) and is kept per network
//! namespace: each namespace has its own nftables and its own record.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
use crate::error::Error;
use crate::policy::Policy;

const DEFAULT_DIR: &str = "/run/bip324-redirect";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Enabled {
    pub backend: BackendKind,
    pub policy: Policy,
    /// Where the eBPF backend attached its programs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup: Option<PathBuf>,
}

fn path() -> Result<PathBuf, Error> {
    let dir = std::env::var_os("BIP324_REDIRECT_STATE_DIR")
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from);
    let netns = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| Error::io("cannot identify the network namespace", e))?
        .ino();
    Ok(dir.join(format!("netns-{netns}.json")))
}

pub(crate) fn load() -> Result<Option<Enabled>, Error> {
    let path = path()?;
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::io(
                format!("{} is damaged: run enable or disable again", path.display()),
                e.into(),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Writes the record atomically (temporary file, then rename).
pub(crate) fn save(enabled: &Enabled) -> Result<(), Error> {
    let path = path()?;
    let io = |e: std::io::Error| Error::io(format!("cannot write {}", path.display()), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec_pretty(enabled).expect("policy serialises");
    std::fs::write(&tmp, json).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

pub(crate) fn clear() -> Result<(), Error> {
    let path = path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {}", path.display()), e)),
    }
}
