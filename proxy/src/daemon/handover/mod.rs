//! Live connections moving to another process, as HAProxy and nginx hand over listening
//! sockets on reload, but with the connections too. By hand (`bip324-proxy --take-over`):
//! the running proxy passes its listening sockets and then every relaying connection (its two
//! sockets and its paused pipes, `record.rs`) over its control socket (`SCM_RIGHTS`), and
//! finishes the connections that could not leave (within the successor's `--drain-timeout`)
//! before it exits. Under systemd (`store.rs`), the same records and sockets wait in the file
//! descriptor store across a restart. No port closes and no moved connection sees a new
//! handshake.
//!
//! Only a process of the proxy's own user may take over (`SO_PEERCRED`): a system account no
//! one logs in as. The records hold key material: they live in wiped buffers only.

mod depart;
mod give;
pub(crate) mod record;
pub(crate) mod store;
mod take;

pub(crate) use depart::{Departure, Leaving, Ticket};
pub(crate) use give::{Handed, Offer};
pub(crate) use record::Arrived;
pub(crate) use take::receive;

use std::os::fd::AsFd;

/// The pid of the process at the other end of `stream`, when it runs as this one's user.
fn peer_of_own_user(stream: &impl AsFd) -> Result<u32, String> {
    let peer = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("cannot tell who asks: {e}"))?;
    let own = nix::unistd::geteuid().as_raw();
    if peer.uid() == own {
        Ok(peer.pid() as u32)
    } else {
        Err(format!(
            "refused: only a process of this proxy's own user (uid {own}) may take over; pid {} \
             runs as uid {} (start the successor as this proxy was started, with the same \
             options)",
            peer.pid(),
            peer.uid()
        ))
    }
}
