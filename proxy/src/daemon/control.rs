//! The control socket: a Unix socket answering one small, versioned JSON request with the
//! live connections and totals. `bip324-redirect status` uses it.
//!
//! Request (one line): `{"version":1,"request":"status"}`. Answer: one JSON document, then
//! the socket closes. A client is served within fixed limits (4 KiB of request, 2 s to send
//! it, 5 s to read the answer, 4 clients at once), so it can neither hold the proxy nor slow
//! the connections it relays.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bip324_control::{Failure, Request, STATUS, TAKE_OVER, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::handover::{Handed, Offer};
use super::status::StatusSource;

const MAX_REQUEST: usize = 4096;
const MAX_CLIENTS: usize = 4;

/// The path of a control socket this proxy made itself: removed when dropped, as the proxy
/// stops.
pub(crate) struct Made {
    path: std::path::PathBuf,
}

impl Made {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The control socket a predecessor made, now this proxy's to remove.
    pub(crate) fn adopt(path: std::path::PathBuf) -> Made {
        Made { path }
    }

    /// Leaves the socket in place: a successor answers on it now.
    pub(crate) fn hand_over(self) {
        std::mem::forget(self);
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why the control socket cannot be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BindError {
    #[error(
        "another proxy answers on the control socket {0}: stop it, or give this one \
         --control PATH (or --no-control)"
    )]
    InUse(std::path::PathBuf),
    #[error(
        "refusing the control socket {path}: {why}, so another user could take its place \
         first. Give --control a path in a directory only root or the proxy's user may \
         write (the default, /run/bip324-proxy/, or $XDG_RUNTIME_DIR/bip324-proxy/)"
    )]
    UnsafeDirectory {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("cannot make the control socket {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Makes the control socket's directory when it is missing, owned by `account` (the user a
/// root-started proxy becomes), so that the proxy can make and remove its socket there.
pub(crate) fn prepare_dir(path: &Path, account: &nix::unistd::User) -> std::io::Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.exists()) else {
        return Ok(());
    };
    std::fs::create_dir_all(dir)?;
    nix::unistd::chown(dir, Some(account.uid), Some(account.gid)).map_err(std::io::Error::from)
}

/// Binds the control socket at `path`: the directory is created if missing and must be
/// writable by nobody but root, this process and `owner`; a socket that still answers belongs
/// to another live proxy and is left alone, a stale one is replaced. Bound before the proxy
/// gives up its privileges (clients check who answers: root or the proxy's user), then handed
/// to `owner`, whose group may read and write it.
pub(crate) fn bind(
    path: &Path,
    owner: Option<&nix::unistd::User>,
) -> Result<(std::os::unix::net::UnixListener, Made), BindError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
        check_dir(dir, owner).map_err(|why| BindError::UnsafeDirectory {
            path: path.to_path_buf(),
            why,
        })?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(BindError::InUse(path.to_path_buf()));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    let made = Made {
        path: path.to_path_buf(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    if let Some(owner) = owner {
        nix::unistd::chown(path, Some(owner.uid), Some(owner.gid)).map_err(|e| io(e.into()))?;
    }
    Ok((listener, made))
}

/// Why a directory is no safe place for the control socket: others may write it, or it
/// belongs to someone who is neither root, this process's user nor `owner`.
fn check_dir(dir: &Path, owner: Option<&nix::unistd::User>) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut trusted_uids = [0, nix::unistd::geteuid().as_raw()]
        .into_iter()
        .chain(owner.map(|o| o.uid.as_raw()));
    let mut trusted_gids = [0, nix::unistd::getegid().as_raw()]
        .into_iter()
        .chain(owner.map(|o| o.gid.as_raw()));
    if meta.mode() & 0o002 != 0 {
        return Err(format!(
            "any user may write its directory {}",
            dir.display()
        ));
    }
    if meta.mode() & 0o020 != 0 && !trusted_gids.any(|gid| gid == meta.gid()) {
        return Err(format!(
            "group {} may write its directory {}",
            meta.gid(),
            dir.display()
        ));
    }
    if !trusted_uids.any(|uid| uid == meta.uid()) {
        return Err(format!(
            "its directory {} belongs to uid {}",
            dir.display(),
            meta.uid()
        ));
    }
    Ok(())
}

pub(crate) async fn serve(
    listener: UnixListener,
    status: Arc<StatusSource>,
    offer: Arc<Offer>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!("control socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            debug!("control socket: {MAX_CLIENTS} clients already, refusing another");
            continue;
        };
        let (status, offer) = (Arc::clone(&status), Arc::clone(&offer));
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &status, offer).await {
                debug!("control socket client: {e}");
            }
            drop(permit);
        });
    }
}

async fn answer(
    mut stream: UnixStream,
    status: &StatusSource,
    offer: Arc<Offer>,
) -> std::io::Result<()> {
    let request = tokio::time::timeout(Duration::from_secs(2), read_request(&mut stream)).await;
    let body = match request {
        Err(_) => failure("no request within 2 seconds"),
        Ok(Err(e)) => failure(&e),
        Ok(Ok(request)) if request.version != VERSION => failure(&format!(
            "unsupported version {} (this proxy speaks {VERSION})",
            request.version
        )),
        Ok(Ok(request)) if request.request == STATUS => {
            serde_json::to_string(&status.document()).expect("serialisable")
        }
        Ok(Ok(request)) if request.request == TAKE_OVER => {
            let drain = request.drain_seconds.unwrap_or(3600);
            return hand_over(stream.into_std()?, offer, (drain, request.connections)).await;
        }
        Ok(Ok(request)) => failure(&format!(
            "unknown request {:?} (try \"status\")",
            request.request
        )),
    };
    let write = async {
        stream.write_all(body.as_bytes()).await?;
        stream.write_all(b"\n").await?;
        stream.shutdown().await
    };
    tokio::time::timeout(Duration::from_secs(5), write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Hands the sockets, and the live connections if it reads them, over to the successor that
/// asks on `stream`, or tells it why not.
async fn hand_over(
    stream: std::os::unix::net::UnixStream,
    offer: Arc<Offer>,
    (drain_seconds, connections): (u64, Option<u32>),
) -> std::io::Result<()> {
    let handed = tokio::task::spawn_blocking(move || {
        let result = offer.hand_over(&stream, (drain_seconds, connections));
        if let Err(why) = &result {
            use std::io::Write as _;
            let _ = (&stream).write_all(format!("{}\n", failure(why)).as_bytes());
        }
        result
    })
    .await
    .map_err(std::io::Error::other)?;
    match handed {
        Ok(Handed {
            successor,
            connections: Some(n),
        }) => info!(
            successor,
            connections = n,
            "handed the listening sockets and {n} live connections over to pid {successor}: \
             it carries them on and serves every new connection; this proxy finishes the \
             connections that could not leave (still opening, or half closed; at most \
             {drain_seconds} s), then exits"
        ),
        Ok(Handed { successor, .. }) => info!(
            successor,
            "handed the listening sockets over to pid {successor}, which reads no live \
             connections of this version: it serves every new connection; this proxy finishes \
             its open ones (at most {drain_seconds} s), then exits"
        ),
        Err(why) => warn!("take-over {why}"),
    }
    Ok(())
}

/// One line of at most MAX_REQUEST bytes; anything longer is refused unread.
async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut line = Vec::with_capacity(128);
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 && line.is_empty() {
            return Err("empty request".into());
        }
        let end = buf[..n].iter().position(|&b| b == b'\n');
        line.extend_from_slice(&buf[..end.unwrap_or(n)]);
        if line.len() > MAX_REQUEST {
            return Err(format!("request longer than {MAX_REQUEST} bytes"));
        }
        if end.is_some() || n == 0 {
            break;
        }
    }
    serde_json::from_slice(&line).map_err(|e| format!("not a request: {e}"))
}

fn failure(error: &str) -> String {
    let failure = Failure {
        version: VERSION,
        error: error.to_string(),
    };
    serde_json::to_string(&failure).expect("serialisable")
}
