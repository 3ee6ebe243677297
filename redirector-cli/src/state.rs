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
use crate::policy::{InboundPolicy, Policy};

const DEFAULT_DIR: &str = "/run/bip324-redirect";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Enabled {
    pub backend: BackendKind,
    pub policy: Policy,
    /// Where the eBPF backend attached its programs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup: Option<PathBuf>,
}

/// What `inbound enable` was asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InboundEnabled {
    pub policy: InboundPolicy,
}

/// The outbound record (`netns-N.json`) and the inbound one (`netns-N.inbound.json`).
trait Record: Serialize + serde::de::DeserializeOwned {
    const SUFFIX: &'static str;
}

impl Record for Enabled {
    const SUFFIX: &'static str = "";
}

impl Record for InboundEnabled {
    const SUFFIX: &'static str = ".inbound";
}

fn path(suffix: &str) -> Result<PathBuf, Error> {
    let dir = std::env::var_os("BIP324_REDIRECT_STATE_DIR")
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from);
    let netns = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| Error::io("cannot identify the network namespace", e))?
        .ino();
    Ok(dir.join(format!("netns-{netns}{suffix}.json")))
}

pub(crate) fn load() -> Result<Option<Enabled>, Error> {
    load_record()
}

pub(crate) fn load_inbound() -> Result<Option<InboundEnabled>, Error> {
    load_record()
}

pub(crate) fn save(enabled: &Enabled) -> Result<(), Error> {
    save_record(enabled)
}

pub(crate) fn save_inbound(enabled: &InboundEnabled) -> Result<(), Error> {
    save_record(enabled)
}

pub(crate) fn clear() -> Result<(), Error> {
    clear_record(Enabled::SUFFIX)
}

pub(crate) fn clear_inbound() -> Result<(), Error> {
    clear_record(InboundEnabled::SUFFIX)
}

fn load_record<R: Record>() -> Result<Option<R>, Error> {
    let path = path(R::SUFFIX)?;
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
fn save_record<R: Record>(record: &R) -> Result<(), Error> {
    let path = path(R::SUFFIX)?;
    let io = |e: std::io::Error| Error::io(format!("cannot write {}", path.display()), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec_pretty(record).expect("policy serialises");
    std::fs::write(&tmp, json).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

fn clear_record(suffix: &str) -> Result<(), Error> {
    let path = path(suffix)?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {}", path.display()), e)),
    }
}
