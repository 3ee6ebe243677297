//! The predecessor's connections leaving for a successor: each relaying connection holds a
//! [`Ticket`]; when the successor asks, every ticket is called, and each connection pauses
//! where its relay stood and boards with its sockets and state ([`Leaving`]).
//!
//! Only a connection in full relay can leave. One still opening (dialling, handshaking) or
//! half closed holds no ticket, or gives it back, and finishes here (the drain).

use std::os::fd::OwnedFd;
use std::sync::{Mutex, PoisonError};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

/// One connection on its way: its record and its two sockets (accepted, dialled).
pub(crate) struct Leaving {
    pub(crate) id: u64,
    pub(crate) record: Zeroizing<Vec<u8>>,
    pub(crate) sockets: [OwnedFd; 2],
}

/// Where connections board, until the successor has called them.
pub(crate) struct Departure {
    called: CancellationToken,
    boarding: Mutex<Option<UnboundedSender<Leaving>>>,
    arrivals: Mutex<Option<UnboundedReceiver<Leaving>>>,
}

impl Default for Departure {
    fn default() -> Departure {
        let (boarding, arrivals) = unbounded_channel();
        Departure {
            called: CancellationToken::new(),
            boarding: Mutex::new(Some(boarding)),
            arrivals: Mutex::new(Some(arrivals)),
        }
    }
}

impl Departure {
    /// A ticket for a connection that starts relaying; none once the successor has called.
    pub(crate) fn ticket(&self) -> Option<Ticket> {
        let boarding = self.boarding.lock().unwrap_or_else(PoisonError::into_inner);
        boarding.as_ref().map(|sender| Ticket {
            called: self.called.clone(),
            boarding: Mutex::new(Some(sender.clone())),
        })
    }

    /// Calls every ticket; the connections arrive on the returned channel, which closes
    /// once every ticket has boarded or been given back. Only once.
    pub(crate) fn call(&self) -> Option<UnboundedReceiver<Leaving>> {
        let arrivals = self
            .arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        self.boarding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.called.cancel();
        Some(arrivals)
    }
}

/// A relaying connection's right to leave.
pub(crate) struct Ticket {
    called: CancellationToken,
    boarding: Mutex<Option<UnboundedSender<Leaving>>>,
}

impl Ticket {
    /// Returns once the successor calls (never after the ticket was given back).
    pub(crate) async fn called(&self) {
        let holding = (self.boarding.lock())
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if holding {
            self.called.cancelled().await;
        } else {
            std::future::pending::<()>().await;
        }
    }

    /// The connection cannot leave any more (one side closed): the call will not wait for it.
    pub(crate) fn give_back(&self) {
        self.boarding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Hands the connection to the caller; `false` if it is gone (the successor failed).
    pub(crate) fn board(&self, leaving: Leaving) -> bool {
        let sender = self
            .boarding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        sender.is_some_and(|s| s.send(leaving).is_ok())
    }
}
