//! Asks the proxy's control socket for its live connections (`bip324-proxy --control`), and
//! believes the answer only from the proxy: root or its user, checked with `SO_PEERCRED`.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use bip324_control::{Answer, Request, StatusDocument};
use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::User;

/// Why the proxy's answer cannot be had.
#[derive(Debug)]
pub(crate) enum ControlError {
    /// Whatever answers there is not known to be the proxy: its answers are not used.
    Untrusted(String),
    /// No answer (no socket, no permission, nonsense, a refusal).
    Unavailable(String),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::Untrusted(why) | ControlError::Unavailable(why) => f.write_str(why),
        }
    }
}

/// Who may answer on a control socket: root (systemd binds the unit's socket; a proxy
/// started as root binds its own before it gives up root), the proxy's user, and, for a
/// proxy the invoking user runs by hand in their own $XDG_RUNTIME_DIR, that user.
fn trusted_uids(socket: &Path) -> Vec<u32> {
    let mut uids = vec![0];
    if let Ok(Some(proxy)) = User::from_name(crate::proxy_listener::PROXY_USER) {
        uids.push(proxy.uid.as_raw());
    }
    let me = nix::unistd::getuid().as_raw();
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(std::path::PathBuf::from);
    let own_runtime = runtime.filter(|dir| {
        dir.is_absolute()
            && std::fs::metadata(dir).is_ok_and(|m| m.uid() == me && m.mode() & 0o077 == 0)
    });
    if own_runtime.is_some_and(|dir| socket.starts_with(dir)) {
        uids.push(me);
    }
    uids
}

/// A directory where others could replace the socket between our check and our connect:
/// writable by any user, or by a group other than root's and the proxy's. (Its owner may be
/// the proxy's fallback user, nobody: who answers is checked with `SO_PEERCRED`.)
fn unsafe_directory(socket: &Path) -> Option<String> {
    let dir = socket.parent().filter(|d| !d.as_os_str().is_empty())?;
    // No directory, no socket: the connection attempt says so.
    let meta = std::fs::metadata(dir).ok()?;
    let proxy_gid = User::from_name(crate::proxy_listener::PROXY_USER)
        .ok()
        .flatten()
        .map(|u| u.gid.as_raw());
    let why = if meta.mode() & 0o002 != 0 {
        "any user may write it"
    } else if meta.mode() & 0o020 != 0 && meta.gid() != 0 && Some(meta.gid()) != proxy_gid {
        "its group may write it"
    } else {
        return None;
    };
    Some(format!(
        "the control socket {} is not used: {why} (its directory {}), so anyone could have \
         put a socket there; use a private directory, such as the default \
         /run/bip324-proxy/control.sock, or $XDG_RUNTIME_DIR/bip324-proxy/control.sock for a \
         proxy run by hand",
        socket.display(),
        dir.display()
    ))
}

/// The proxy's answer to a status request, believed only from a trusted process (checked with
/// `SO_PEERCRED`) on a socket in a directory no one else may write.
pub(crate) fn status(socket: &Path) -> Result<StatusDocument, ControlError> {
    let trusted = trusted_uids(socket);
    if let Some(why) = unsafe_directory(socket) {
        return Err(ControlError::Untrusted(why));
    }
    let stream = connect(socket).map_err(ControlError::Unavailable)?;
    let peer = getsockopt(&stream, sockopt::PeerCredentials).map_err(|e| {
        ControlError::Unavailable(format!(
            "cannot tell who answers at {}: {e}",
            socket.display()
        ))
    })?;
    let uid = peer.uid();
    if !trusted.contains(&uid) {
        let user = User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(String::new, |u| format!("user {}, ", u.name));
        return Err(ControlError::Untrusted(format!(
            "an untrusted process ({user}uid {uid}, pid {}) answers at {}: its answers are not \
             used (the proxy's socket is made by root or {}); find it with `ss -xlp`",
            peer.pid(),
            socket.display(),
            crate::proxy_listener::PROXY_USER
        )));
    }
    ask(stream).map_err(ControlError::Unavailable)
}

fn connect(socket: &Path) -> Result<UnixStream, String> {
    UnixStream::connect(socket).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                " (is the proxy running? `systemctl status bip324-proxy.socket`; a proxy run \
                 by hand makes its socket where its --control says, by default \
                 $XDG_RUNTIME_DIR/bip324-proxy/control.sock of its user: pass --control PATH)"
            }
            std::io::ErrorKind::PermissionDenied => {
                " (run as root, or as a member of the proxy's group)"
            }
            _ => "",
        };
        format!(
            "cannot reach the proxy's control socket {}: {e}{hint}",
            socket.display()
        )
    })
}

fn ask(mut stream: UnixStream) -> Result<StatusDocument, String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(5))))
        .map_err(|e| e.to_string())?;
    let mut request = serde_json::to_vec(&Request::status()).expect("serialisable");
    request.push(b'\n');
    stream
        .write_all(&request)
        .map_err(|e| format!("control socket: {e}"))?;
    let mut answer = Vec::new();
    // Thousands of connections fit in a few megabytes; stop well beyond.
    stream
        .take(256 << 20)
        .read_to_end(&mut answer)
        .map_err(|e| format!("control socket: {e}"))?;
    match serde_json::from_slice(&answer)
        .map_err(|e| format!("control socket answered nonsense: {e}"))?
    {
        Answer::Failure(failure) => {
            Err(format!("the proxy refused the request: {}", failure.error))
        }
        Answer::Status(status) => Ok(*status),
    }
}
