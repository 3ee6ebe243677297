//! Asks the proxy's control socket for its live connections (`bip324-proxy --control`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use bip324_control::{Answer, Request, StatusDocument};

/// The proxy's answer to a status request; an error sentence when it cannot be had.
pub(crate) fn status(socket: &Path) -> Result<StatusDocument, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
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
    })?;
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
        Answer::Status(status) => Ok(status),
    }
}
