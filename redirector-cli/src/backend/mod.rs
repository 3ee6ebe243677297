//! The backends that implement a policy in the kernel: policy -> backend -> nftables | ebpf.
//! Each has its own kernel objects; `enable` with one removes the other's, so exactly one is
//! ever active. The backends know nothing of each other or of the command line.

pub(crate) mod ebpf;
pub(crate) mod nftables;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::policy::Policy;

pub(crate) use bip324_redirect_args::BackendKind;

/// A backend with what it needs to install a policy (Mullvad's `FirewallArguments`).
pub(crate) enum Backend {
    Nftables,
    Ebpf {
        /// The cgroup v2 directory the programs attach to.
        cgroup: PathBuf,
    },
}

impl Backend {
    /// `cgroup` only applies to eBPF, whose default is the root of the cgroup v2 hierarchy.
    pub(crate) fn new(kind: BackendKind, cgroup: Option<PathBuf>) -> Result<Backend, Error> {
        match (kind, cgroup) {
            (BackendKind::Nftables, Some(_)) => Err(Error::Config(
                "--cgroup only applies to --backend ebpf".into(),
            )),
            (BackendKind::Nftables, None) => Ok(Backend::Nftables),
            (BackendKind::Ebpf, Some(cgroup)) => Ok(Backend::Ebpf { cgroup }),
            (BackendKind::Ebpf, None) => Ok(Backend::Ebpf {
                cgroup: ebpf::mounts::cgroup2_root()?,
            }),
        }
    }

    pub(crate) fn cgroup(&self) -> Option<&Path> {
        match self {
            Backend::Nftables => None,
            Backend::Ebpf { cgroup } => Some(cgroup),
        }
    }

    /// Installs `policy`, replacing this backend's earlier policy without a gap.
    pub(crate) fn apply(&self, policy: &Policy) -> Result<(), Error> {
        match self {
            Backend::Nftables => nftables::apply(policy),
            Backend::Ebpf { cgroup } => ebpf::apply(policy, cgroup),
        }
    }
}

/// Removes `kind`'s objects; `Ok(false)` when there were none.
pub(crate) fn remove(kind: BackendKind) -> Result<bool, Error> {
    match kind {
        BackendKind::Nftables => nftables::remove(),
        BackendKind::Ebpf => ebpf::remove(),
    }
}

pub(crate) fn inspect(kind: BackendKind, expected: Option<&Policy>) -> Result<Inspection, Error> {
    match kind {
        BackendKind::Nftables => nftables::inspect(expected),
        BackendKind::Ebpf => ebpf::inspect(expected),
    }
}

/// What a backend found in the kernel.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Inspection {
    /// Its objects exist.
    pub present: bool,
    /// They implement the expected policy exactly (`None`: nothing to compare with).
    pub matches: Option<bool>,
    /// What differs, in words.
    pub details: Vec<String>,
    /// The objects found, in words.
    pub objects: Vec<String>,
    /// Trouble that is no difference from the policy (full eBPF maps), in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The policy as read back from the kernel, where the backend stores it whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// Kernel ids of the programs and maps found (eBPF), to check what is left behind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub program_ids: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub map_ids: Vec<u32>,
}

impl Inspection {
    pub(crate) fn absent() -> Inspection {
        Inspection::default()
    }
}
