//! systemd's file descriptor store: how live connections outlive `systemctl restart` and a
//! package upgrade (whose maintainer script restarts the service). Stopping, the proxy pauses
//! every relaying connection as for `--take-over` and gives systemd, per connection, its two
//! sockets and a memfd holding its record, each under a name of its own; systemd passes them
//! to the next process with its listening sockets. That one reads each record, wipes its
//! memfd and removes the three from the store, then carries the connection on.
//!
//! The store is used when the unit allows it: `$FDSTORE` (set by systemd 254 and later from
//! `FileDescriptorStoreMax=`, and by the unit for older ones) and `$NOTIFY_SOCKET`
//! (`NotifyAccess=main`). A stop, unlike a restart, empties the store: the connections close
//! then, as they did before. Nothing reaches a disk: a memfd is memory.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::memfd::{MFdFlags, memfd_create};
use sd_notify::NotifyState;
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::record::{self, Arrived};
use super::{Departure, Leaving};

/// Names of stored connection parts: `bip324-conn` FORMAT `-` id `-` part.
const PREFIX: &str = "bip324-conn";
const PARTS: [&str; 3] = ["state", "accepted", "dialled"];

/// Most descriptors the store may hand back: `FileDescriptorStoreMax=` of the units.
const MAX_STORED: u32 = 65_536;

/// How many descriptors this proxy's unit keeps across a restart (`$FDSTORE`), at most
/// `MAX_STORED`; 0 without a store.
pub(crate) fn capacity() -> u32 {
    let set = std::env::var("FDSTORE")
        .ok()
        .and_then(|n| n.parse::<u32>().ok());
    set.unwrap_or(0).min(MAX_STORED)
}

/// Whether stopping leaves the live connections in the store.
pub(crate) fn enabled() -> bool {
    capacity() > 0 && std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Whether a descriptor systemd passed is a stored connection part (only a unit with a store
/// passes any).
pub(crate) fn is_stored(name: &str) -> bool {
    capacity() > 0 && name.starts_with(PREFIX)
}

fn name(id: u64, part: &str) -> String {
    format!("{PREFIX}{}-{id}-{part}", record::FORMAT)
}

/// Calls every relaying connection out of `departure` and stores it; how many were stored.
pub(crate) async fn store(departure: &Departure) -> usize {
    let Some(mut arrivals) = departure.call() else {
        return 0;
    };
    let (mut stored, mut failed) = (0, None);
    while let Some(leaving) = arrivals.recv().await {
        match put(&leaving) {
            Ok(()) => stored += 1,
            Err(e) => failed = Some(e),
        }
    }
    if let Some(e) = failed {
        warn!(
            "could not store every live connection in systemd's file descriptor store ({e}): \
             those close (raise FileDescriptorStoreMax= and FDSTORE= in the unit)"
        );
    }
    stored
}

/// One connection: its record in a memfd, then its two sockets, each under its name.
fn put(leaving: &Leaving) -> std::io::Result<()> {
    let memfd = memfd_create(c"bip324-connection", MFdFlags::MFD_CLOEXEC)?;
    std::fs::File::from(memfd.try_clone()?).write_all(&leaving.record)?;
    let [accepted, dialled] = &leaving.sockets;
    for (part, fd) in PARTS
        .iter()
        .zip([memfd.as_fd(), accepted.as_fd(), dialled.as_fd()])
    {
        let name = name(leaving.id, part);
        sd_notify::notify_with_fds(&[NotifyState::FdStore, NotifyState::FdName(&name)], &[fd])?;
    }
    Ok(())
}

/// The connections a previous process stored (descriptors systemd passed, by name): each is
/// read, wiped and removed from the store, then carried on.
pub(crate) fn restore(stored: Vec<(OwnedFd, String)>) -> Vec<Arrived> {
    let mut by_id: BTreeMap<u64, [Option<OwnedFd>; 3]> = BTreeMap::new();
    let mut other_format = 0;
    for (fd, name) in stored {
        let _ = sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(&name)]);
        match parse(&name) {
            Some((id, part)) => by_id.entry(id).or_default()[part] = Some(fd),
            None => other_format += 1,
        }
    }
    if other_format > 0 {
        warn!(
            "{other_format} descriptors of live connections stored by a proxy of another \
             version cannot be carried on: closed"
        );
    }
    let mut arrived = Vec::new();
    for (id, parts) in by_id {
        let [Some(state), Some(accepted), Some(dialled)] = parts else {
            // A socket whose peer hung up is dropped by systemd; the rest go with it.
            warn!(conn = id, "a stored live connection is incomplete: closed");
            continue;
        };
        match read_and_wipe(state).map_err(|e| e.to_string()) {
            Ok(bytes) => match record::arrive(&bytes, [accepted, dialled]) {
                Ok(connection) => arrived.push(connection),
                Err(why) => warn!(conn = id, "a stored live connection is closed: {why}"),
            },
            Err(why) => warn!(conn = id, "a stored live connection is closed: {why}"),
        }
    }
    if !arrived.is_empty() {
        info!(
            connections = arrived.len(),
            "carrying on {} live connections from systemd's file descriptor store",
            arrived.len()
        );
    }
    arrived
}

/// This format's id and part of a stored name.
fn parse(name: &str) -> Option<(u64, usize)> {
    let rest = name.strip_prefix(&format!("{PREFIX}{}-", record::FORMAT))?;
    let (id, part) = rest.split_once('-')?;
    Some((id.parse().ok()?, PARTS.iter().position(|p| *p == part)?))
}

/// A record from its memfd, which is then overwritten and emptied: the keys it held go.
fn read_and_wipe(memfd: OwnedFd) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut file = std::fs::File::from(memfd);
    let len = file.seek(std::io::SeekFrom::End(0))?;
    if len > record::MAX_LEN as u64 {
        return Err(std::io::Error::other(format!("a record of {len} bytes")));
    }
    let mut bytes = Zeroizing::new(vec![0u8; len as usize]);
    file.rewind()?;
    file.read_exact(&mut bytes)?;
    file.rewind()?;
    file.write_all(&vec![0u8; bytes.len()])?;
    file.set_len(0)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_other_formats_are_not_ours() {
        for (i, part) in PARTS.iter().enumerate() {
            assert_eq!(parse(&name(42, part)), Some((42, i)));
        }
        assert_eq!(
            parse(&format!("{PREFIX}{}-42-state", record::FORMAT + 1)),
            None
        );
        assert_eq!(parse(&name(42, "other")), None);
        // Only a unit with a store passes stored parts: $FDSTORE is not set here.
        assert!(!is_stored(&name(42, "state")));
    }

    #[test]
    fn a_record_is_wiped_once_read() {
        let memfd = memfd_create(c"test", MFdFlags::MFD_CLOEXEC).unwrap();
        std::fs::File::from(memfd.try_clone().unwrap())
            .write_all(b"secret state")
            .unwrap();
        let copy = memfd.try_clone().unwrap();
        assert_eq!(&read_and_wipe(memfd).unwrap()[..], b"secret state");
        let mut left = Vec::new();
        std::fs::File::from(copy).read_to_end(&mut left).unwrap();
        assert!(left.is_empty());
    }
}
