//! The destination policy, the same for every front: an outbound connection goes to one
//! remote host that is neither the proxy itself nor one of its own upstream connections. An
//! inbound peer's destination is the local node by design; its front checked that the kernel
//! redirected it there.

use std::net::SocketAddr;

use crate::daemon::context::Context;
use crate::daemon::destination;
use crate::daemon::front::{Accepted, Refusal, Route};
use crate::daemon::loop_guard::LoopGuard;
use crate::daemon::original_dst::canonical;
use crate::daemon::socks5::wire::Target;

pub(super) fn admit(accepted: &Accepted, ctx: &Context) -> Result<(), Refusal> {
    let Route::Out { dial, .. } = &accepted.route else {
        return Ok(());
    };
    // A name sent upstream unresolved is the upstream's to judge.
    let Target::Ip(destination) = dial.target else {
        return Ok(());
    };
    let local = accepted.stream.local_addr().map_err(Refusal::Unreadable)?;
    let own = (local, ctx.listening.as_slice(), &*ctx.loop_guard);
    not_the_proxy(accepted.client, destination, own)?;
    destination::check(destination.ip()).map_err(|why| Refusal::Forbidden {
        target: accepted.destination_shown(),
        why,
    })
}

/// Refuses a connection to the proxy's own addresses, or from or to its own upstream
/// connections (a loop).
fn not_the_proxy(
    client: SocketAddr,
    destination: SocketAddr,
    (local, listening, guard): (SocketAddr, &[SocketAddr], &LoopGuard),
) -> Result<(), Refusal> {
    // On a dual-stack listener an IPv4 peer's addresses arrive v4-mapped.
    let destination = canonical(destination);
    if destination == canonical(local) || listening.contains(&destination) {
        return Err(Refusal::DestinationIsProxy);
    }
    if guard.is_own(client, destination) {
        return Err(Refusal::OwnUpstream);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_proxys_own_addresses_are_refused() {
        let guard = LoopGuard::default();
        let local = addr("127.0.0.1:1324");
        let listening = [local, addr("[::1]:1324")];
        let own = (local, listening.as_slice(), &guard);
        let client = addr("127.0.0.1:40000");
        for destination in [local, addr("[::1]:1324"), addr("[::ffff:127.0.0.1]:1324")] {
            assert!(
                matches!(
                    not_the_proxy(client, destination, own),
                    Err(Refusal::DestinationIsProxy)
                ),
                "{destination}"
            );
        }
        assert!(not_the_proxy(client, addr("10.0.0.2:8333"), own).is_ok());
        // A LAN host dialling a `[::]` listener's own port over IPv4: local is v4-mapped.
        let mapped_local = addr("[::ffff:192.168.1.1]:324");
        let own = (mapped_local, &[][..], &guard);
        assert!(matches!(
            not_the_proxy(client, addr("192.168.1.1:324"), own),
            Err(Refusal::DestinationIsProxy)
        ));
    }
}
