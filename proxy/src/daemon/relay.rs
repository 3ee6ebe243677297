//! Drives two pipes between a connection's two sockets until it ends.
//!
//! Each direction alternates: write out everything the pipe has ready, then read more. A
//! slow reader therefore stops the reading of the other side (backpressure) and buffers stay
//! bounded by what the pipes allow.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

use super::cover::Cover;
use super::handover::Ticket;
use bip324_protocol::{Encoder, Event, Pipe, ProtocolError};

/// After one side closes, how long the other may take to finish.
pub(crate) const HALF_CLOSE_GRACE: Duration = Duration::from_secs(10);
/// A direction idle this long gives its empty buffers back.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// The two sockets of every connection, whatever its front: the one the proxy accepted (a
/// local client, a SOCKS5 client, an inbound peer) and the one it dialled (the remote node,
/// or the local node for an inbound peer). Logs and labels name them per direction
/// (`connection::Party`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Accepted,
    Dialled,
}

impl Side {
    pub(crate) fn other(self) -> Side {
        match self {
            Side::Accepted => Side::Dialled,
            Side::Dialled => Side::Accepted,
        }
    }
}

/// Bytes moved on each side of one connection, readable while it runs.
#[derive(Default, Debug)]
pub(crate) struct Traffic {
    pub(crate) accepted_in: AtomicU64,
    pub(crate) accepted_out: AtomicU64,
    pub(crate) dialled_in: AtomicU64,
    pub(crate) dialled_out: AtomicU64,
}

impl Traffic {
    fn counters(&self, from: Side) -> (&AtomicU64, &AtomicU64) {
        match from {
            Side::Accepted => (&self.accepted_in, &self.dialled_out),
            Side::Dialled => (&self.dialled_in, &self.accepted_out),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Why a relayed connection ended.
#[derive(Debug)]
pub(crate) enum CloseReason {
    /// `side` closed; `discarded` bytes of an unfinished message from it were dropped.
    Closed {
        side: Side,
        discarded: usize,
    },
    /// Reading from or writing to `side` failed.
    Io {
        side: Side,
        error: io::Error,
    },
    /// `side` sent bytes that break the protocol.
    Protocol {
        side: Side,
        error: ProtocolError,
    },
    /// One side closed and the other did not follow within the grace period.
    HalfCloseTimeout {
        closed: Side,
    },
    Shutdown,
    /// A successor called: the relay stopped where it stood, its pipes ready to pause.
    HandedOver,
}

impl CloseReason {
    pub(crate) fn protocol_error(&self) -> Option<&ProtocolError> {
        match self {
            CloseReason::Protocol { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Bytes read from each side before the relay began (first bytes that told a transport, what
/// came behind a version packet): they go through the pipes first. What is left of them
/// when a relay is handed over goes with it.
#[derive(Default)]
pub(crate) struct Unread<'a> {
    pub(crate) accepted: &'a [u8],
    pub(crate) dialled: &'a [u8],
}

/// What a relay reports to and listens for.
pub(crate) struct RelayContext<'a, E> {
    pub(crate) traffic: &'a Traffic,
    /// Every message, decoy and dropped message, by the side it came from.
    pub(crate) events: &'a E,
    pub(crate) shutdown: &'a CancellationToken,
    /// Cover traffic, sent in the direction that reads from this side while it is idle.
    pub(crate) cover: Option<(Side, &'a Cover)>,
    /// Held while the relay may leave for a successor (`--take-over`).
    pub(crate) ticket: Option<&'a Ticket>,
}

/// Relays until both directions end, one fails, shutdown is requested, or the ticket is
/// called. `up` carries the accepted socket's bytes to the dialled one, `down` the other way.
///
/// Stopping at any await leaves the pipes whole (`Pipe::pause`): a write that did not
/// complete wrote nothing, a read that did not complete read nothing, and `unread` shows what
/// no pipe has taken yet.
pub(crate) async fn relay<E: Fn(Side, Event) + Sync>(
    accepted: &mut TcpStream,
    dialled: &mut TcpStream,
    up: &mut impl Pipe,
    down: &mut impl Pipe,
    unread: &mut Unread<'_>,
    cx: &RelayContext<'_, E>,
) -> CloseReason {
    let RelayContext {
        traffic,
        events,
        shutdown,
        cover,
        ticket,
    } = *cx;
    let called = async {
        match ticket {
            Some(ticket) => ticket.called().await,
            None => std::future::pending().await,
        }
    };
    let cover_from = |side: Side| cover.filter(|(s, _)| *s == side).map(|(_, c)| c);
    let (accepted_read, mut accepted_write) = accepted.split();
    let (dialled_read, mut dialled_write) = dialled.split();
    let up_fut = pump(
        Side::Accepted,
        &accepted_read,
        &mut dialled_write,
        (up, &mut unread.accepted),
        traffic,
        events,
        cover_from(Side::Accepted),
    );
    let down_fut = pump(
        Side::Dialled,
        &dialled_read,
        &mut accepted_write,
        (down, &mut unread.dialled),
        traffic,
        events,
        cover_from(Side::Dialled),
    );
    tokio::pin!(up_fut, down_fut);

    let first = tokio::select! {
        end = &mut up_fut => end,
        end = &mut down_fut => end,
        _ = shutdown.cancelled() => return CloseReason::Shutdown,
        () = called => return CloseReason::HandedOver,
    };
    let CloseReason::Closed { side: closed, .. } = first else {
        return first;
    };
    // Half closed, it finishes here.
    if let Some(ticket) = ticket {
        ticket.give_back();
    }
    // One direction ended cleanly and its close was passed on: let the other finish.
    let rest = async {
        match closed {
            Side::Accepted => down_fut.await,
            Side::Dialled => up_fut.await,
        }
    };
    tokio::select! {
        end = tokio::time::timeout(HALF_CLOSE_GRACE, rest) => match end {
            Ok(CloseReason::Closed { .. }) => first,
            Ok(failure) => failure,
            Err(_) => CloseReason::HalfCloseTimeout { closed },
        },
        _ = shutdown.cancelled() => CloseReason::Shutdown,
    }
}

/// Moves one direction, starting with its unread bytes, until its source closes (then closes
/// the sink's write side) or fails.
async fn pump(
    from: Side,
    src: &ReadHalf<'_>,
    dst: &mut WriteHalf<'_>,
    (pipe, unread): (&mut impl Pipe, &mut &[u8]),
    traffic: &Traffic,
    events: &(impl Fn(Side, Event) + Sync),
    cover: Option<&Cover>,
) -> CloseReason {
    let to = from.other();
    let (read_counter, write_counter) = traffic.counters(from);
    loop {
        while !pipe.output().is_empty() {
            match dst.write(pipe.output()).await {
                Ok(0) => {
                    let error = io::Error::from(io::ErrorKind::WriteZero);
                    return CloseReason::Io { side: to, error };
                }
                Ok(n) => {
                    pipe.consume_output(n);
                    Traffic::add(write_counter, n);
                }
                Err(error) => return CloseReason::Io { side: to, error },
            }
        }
        // A chain of pipes moves what its first stage holds once the output has drained.
        if let Err(error) = pipe.flush(&mut |event| events(from, event)) {
            return CloseReason::Protocol { side: from, error };
        }
        if !pipe.output().is_empty() {
            continue;
        }
        if !unread.is_empty() {
            // The pipe takes what fits before its output must drain again.
            match pipe.push(unread, &mut |event| events(from, event)) {
                Ok(taken) => *unread = &unread[taken..],
                Err(error) => return CloseReason::Protocol { side: from, error },
            }
            continue;
        }
        let wait = cover.map_or(IDLE_RELEASE, Cover::next_wait);
        let ready = match tokio::time::timeout(wait, src.readable()).await {
            Ok(ready) => ready,
            Err(_) => {
                pipe.release_idle_buffers();
                match cover {
                    // Idle: a decoy at a random moment, as the budgets allow.
                    Some(cover) => {
                        if cover.take(Encoder::COVER_LEN) {
                            pipe.emit_cover();
                        }
                        continue;
                    }
                    None => src.readable().await,
                }
            }
        };
        if let Err(error) = ready {
            return CloseReason::Io { side: from, error };
        }
        let space = pipe.input_space();
        if space.is_empty() {
            // Pipes always offer space once their output is drained; a read into an empty
            // buffer would look like end of stream.
            debug_assert!(false, "pipe offered no input space with its output drained");
            let error = io::Error::other("internal error: no buffer space");
            return CloseReason::Io { side: from, error };
        }
        match src.try_read(space) {
            Ok(0) => {
                // Pass the close on; the peer may still be sending the other way.
                let _ = dst.shutdown().await;
                return CloseReason::Closed {
                    side: from,
                    discarded: pipe.partial_input(),
                };
            }
            Ok(n) => {
                Traffic::add(read_counter, n);
                if let Err(error) = pipe.commit_input(n, &mut |event| events(from, event)) {
                    return CloseReason::Protocol { side: from, error };
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return CloseReason::Io { side: from, error },
        }
    }
}
