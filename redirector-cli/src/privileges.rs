//! Checks capabilities before touching the kernel, so a missing one is a clear sentence
//! rather than a netlink `EPERM`.

use caps::{CapSet, Capability};

use crate::error::Error;

/// Fails with what is missing and how to get it.
pub(crate) fn require(needed: &[Capability], action: &str) -> Result<(), Error> {
    let missing: Vec<String> = needed
        .iter()
        .filter(|cap| !caps::has_cap(None, CapSet::Effective, **cap).unwrap_or(false))
        .map(std::string::ToString::to_string)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Privileges {
        action: action.to_string(),
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_missing_capability() {
        // Capabilities are per thread: drop it from this test's thread only.
        caps::drop(None, CapSet::Effective, Capability::CAP_NET_ADMIN).unwrap();
        let error = require(&[Capability::CAP_NET_ADMIN], "enable")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("enable needs CAP_NET_ADMIN: run it with sudo"),
            "{error}"
        );
        assert!(
            error.contains("AmbientCapabilities=CAP_NET_ADMIN"),
            "{error}"
        );
    }
}
