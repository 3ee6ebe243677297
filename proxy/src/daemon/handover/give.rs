//! The running proxy's side: what it offers a successor, and the hand-over itself.

use std::io::{IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bip324_control::{HandOver, SocketRole, VERSION};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio_util::sync::CancellationToken;

use tracing::warn;

use super::{Departure, Leaving, record};

/// The sockets this proxy would hand over (copies of its listeners' descriptors), and whether
/// it has.
pub(crate) struct Offer {
    sockets: Mutex<Vec<(SocketRole, OwnedFd)>>,
    control_path: Option<PathBuf>,
    /// Where the live connections board.
    departure: Arc<Departure>,
    /// Cancelled once handed over: the proxy stops accepting and drains.
    taken: CancellationToken,
    /// Cancelled once the live connections are sent too (or could not be).
    delivered: CancellationToken,
    drain: Mutex<Duration>,
}

/// What a hand-over passed on.
pub(crate) struct Handed {
    pub(crate) successor: u32,
    /// Live connections sent; `None` when the successor reads no format of ours.
    pub(crate) connections: Option<usize>,
}

impl Offer {
    /// `sockets`: each listener's role and descriptor, copied here (`dup`) so that handing
    /// them over does not depend on the listeners' own lifetimes. `control_path`: the control
    /// socket's path when this proxy made it.
    pub(crate) fn new(
        sockets: &[(SocketRole, BorrowedFd<'_>)],
        control_path: Option<PathBuf>,
        departure: Arc<Departure>,
    ) -> std::io::Result<Offer> {
        let sockets = sockets
            .iter()
            .map(|(role, fd)| Ok((*role, fd.try_clone_to_owned()?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Offer {
            sockets: Mutex::new(sockets),
            control_path,
            departure,
            taken: CancellationToken::new(),
            delivered: CancellationToken::new(),
            drain: Mutex::new(Duration::ZERO),
        })
    }

    /// Cancelled once a successor holds the sockets.
    pub(crate) fn taken(&self) -> CancellationToken {
        self.taken.clone()
    }

    /// Cancelled once everything that goes to the successor went.
    pub(crate) fn delivered(&self) -> CancellationToken {
        self.delivered.clone()
    }

    /// How long the successor lets this proxy finish its connections.
    pub(crate) fn drain(&self) -> Duration {
        *self.drain.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers a `take-over` request on `stream`: checks who asks, sends the document and the
    /// sockets in one message, and marks the proxy taken over. Then, when the successor
    /// reads our format (`connections`), calls the live connections out of their departure and
    /// sends each as it arrives. Blocking: run it off the runtime.
    pub(crate) fn hand_over(
        &self,
        stream: &std::os::unix::net::UnixStream,
        (drain_seconds, connections): (u64, Option<u32>),
    ) -> Result<Handed, String> {
        let result = self.give(stream, (drain_seconds, connections));
        // Refused, nothing went: the proxy goes on as before.
        if result.is_ok() {
            self.delivered.cancel();
        }
        result
    }

    fn give(
        &self,
        stream: &std::os::unix::net::UnixStream,
        (drain_seconds, connections): (u64, Option<u32>),
    ) -> Result<Handed, String> {
        let successor = super::peer_of_own_user(stream)?;
        let mut sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        if sockets.is_empty() {
            return Err("refused: this proxy was taken over already".into());
        }
        let live = connections == Some(record::FORMAT);
        let document = HandOver {
            version: VERSION,
            pid: std::process::id(),
            sockets: sockets.iter().map(|(role, _)| *role).collect(),
            control_path: self.control_path.clone(),
            connections: live.then_some(record::FORMAT),
        };
        let mut text = serde_json::to_vec(&document).map_err(|e| e.to_string())?;
        text.push(b'\n');
        let fds: Vec<RawFd> = sockets.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(5))))
            .map_err(|e| e.to_string())?;
        send_with(stream, &text, &fds).map_err(|e| format!("cannot send the sockets: {e}"))?;
        *self.drain.lock().unwrap_or_else(PoisonError::into_inner) =
            Duration::from_secs(drain_seconds);
        // The successor holds them now; this proxy keeps no copy beyond its listeners, which
        // close as its accept loops end.
        sockets.clear();
        self.taken.cancel();
        drop(sockets);
        let connections = match live.then(|| self.departure.call()).flatten() {
            Some(mut arrivals) => {
                let (mut sent, mut lost, mut failure) = (0, 0, None);
                while let Some(leaving) = arrivals.blocking_recv() {
                    // Once the successor stops reading, the rest close with this proxy.
                    match failure {
                        None => match send_connection(stream, &leaving) {
                            Ok(()) => sent += 1,
                            Err(e) => failure = Some(e),
                        },
                        Some(_) => lost += 1,
                    }
                }
                match failure {
                    None => send_with(stream, &0u32.to_le_bytes(), &[])
                        .unwrap_or_else(|e| warn!("cannot end the hand-over: {e}")),
                    Some(e) => warn!(
                        "the successor stopped reading ({e}): {} live connections it did not \
                         receive are closed",
                        lost + 1
                    ),
                }
                Some(sent)
            }
            None => None,
        };
        Ok(Handed {
            successor,
            connections,
        })
    }
}

/// Sends `bytes`, the descriptors `fds` with their first byte.
fn send_with(
    stream: &std::os::unix::net::UnixStream,
    bytes: &[u8],
    fds: &[RawFd],
) -> std::io::Result<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    let rights: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(bytes)],
        rights,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    // The descriptors went with the first byte; the rest follows.
    let mut writer = stream;
    writer.write_all(&bytes[sent..])
}

/// One connection: its record's length with its two sockets, then the record.
fn send_connection(
    stream: &std::os::unix::net::UnixStream,
    leaving: &Leaving,
) -> std::io::Result<()> {
    let fds = leaving.sockets.each_ref().map(AsRawFd::as_raw_fd);
    let len = u32::try_from(leaving.record.len()).map_err(std::io::Error::other)?;
    send_with(stream, &len.to_le_bytes(), &fds)?;
    let mut writer = stream;
    writer.write_all(&leaving.record)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn offer(departure: &Arc<Departure>) -> (Offer, std::net::TcpListener) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sockets = [(SocketRole::Redirect, listener.as_fd())];
        let offer = Offer::new(&sockets, None, Arc::clone(departure)).unwrap();
        (offer, listener)
    }

    /// What the successor reads: the document, then what follows its line.
    fn read(theirs: &mut UnixStream) -> (HandOver, Vec<u8>) {
        let mut bytes = Vec::new();
        theirs.read_to_end(&mut bytes).unwrap();
        let end = bytes.iter().position(|&b| b == b'\n').unwrap();
        (
            serde_json::from_slice(&bytes[..end]).unwrap(),
            bytes[end + 1..].to_vec(),
        )
    }

    /// Version skew: a successor that reads another format gets the sockets, no connection
    /// is called, and they drain here.
    #[test]
    fn a_successor_of_another_format_gets_the_sockets_but_no_connection() {
        let departure = Arc::new(Departure::default());
        let ticket = departure.ticket().expect("not called yet");
        let (offer, _listener) = offer(&departure);
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let handed = offer
            .hand_over(&ours, (60, Some(record::FORMAT + 1)))
            .unwrap();
        drop(ours);
        assert_eq!(handed.connections, None);
        let (document, rest) = read(&mut theirs);
        assert_eq!((document.connections, document.sockets.len()), (None, 1));
        assert!(rest.is_empty(), "nothing follows");
        assert!(offer.delivered().is_cancelled() && offer.taken().is_cancelled());
        assert!(
            departure.ticket().is_some() && departure.call().is_some(),
            "never called"
        );
        drop(ticket);
    }

    /// Our format: the connections are called, and an empty record ends them.
    #[test]
    fn a_successor_of_our_format_gets_the_connections_then_an_end() {
        let departure = Arc::new(Departure::default());
        let (offer, _listener) = offer(&departure);
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let handed = offer.hand_over(&ours, (60, Some(record::FORMAT))).unwrap();
        drop(ours);
        assert_eq!(handed.connections, Some(0));
        let (document, rest) = read(&mut theirs);
        assert_eq!(document.connections, Some(record::FORMAT));
        assert_eq!(rest, 0u32.to_le_bytes());
        assert!(
            departure.ticket().is_none(),
            "called: no connection boards any more"
        );
        // Only once.
        let (again, _) = UnixStream::pair().unwrap();
        assert!(offer.hand_over(&again, (60, Some(record::FORMAT))).is_err());
    }
}
