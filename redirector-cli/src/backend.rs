//! The backends that implement a policy in the kernel. Each has its own kernel objects;
//! `enable` with one removes the other's, so exactly one is ever active.

use std::path::Path;

use serde::Serialize;

use crate::error::Error;
use crate::policy::Policy;
use crate::{ebpf, nftables};

pub(crate) use bip324_redirect_args::BackendKind;

/// Installs `policy` with `kind`; `cgroup` is where the eBPF backend attaches.
pub(crate) fn apply(kind: BackendKind, policy: &Policy, cgroup: &Path) -> Result<(), Error> {
    match kind {
        BackendKind::Nftables => nftables::apply(policy),
        BackendKind::Ebpf => ebpf::apply(policy, cgroup),
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
