//! The web listener (`--metrics ADDR`): Prometheus metrics at `/metrics`, and at `/` a
//! dashboard page that reads `/status.json`, the control socket's own document, once a second.
//! Read-only: only GET is served and nothing here changes the proxy. Deliberately small: one
//! bounded, time-limited request per connection, at most eight at once, so a browser or a
//! scraper can neither hold the proxy nor slow the connections it relays.

mod request;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::status::StatusSource;
use request::Route;

const MAX_HEAD: usize = 8192;
const MAX_CLIENTS: usize = 8;

/// The page may load only its own script and style, and fetch only from here: nothing from
/// elsewhere, even if a peer's word ever slipped into it.
const SECURITY_HEADERS: &str = "Content-Security-Policy: default-src 'none'; script-src 'self'; \
style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
Cache-Control: no-store\r\n";

/// Serves until shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    status: Arc<StatusSource>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let own_names: Arc<[String]> = request::own_names().into();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            debug!("web: {MAX_CLIENTS} requests at once already, closing {peer}");
            continue;
        };
        let (status, own_names) = (Arc::clone(&status), Arc::clone(&own_names));
        tokio::spawn(async move {
            let answer = respond(stream, &status, &own_names);
            let _ = tokio::time::timeout(Duration::from_secs(5), answer).await;
            drop(permit);
        });
    }
}

async fn respond(
    mut stream: TcpStream,
    status: &StatusSource,
    own_names: &[String],
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let end = loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    };
    let (code, content_type, body) = match request::route(&head[..end], own_names) {
        Route::Asset(asset) => ("200 OK", asset.content_type(), asset.body().into()),
        Route::Status => (
            "200 OK",
            "application/json",
            serde_json::to_string(&status.document()).unwrap_or_default(),
        ),
        Route::Metrics => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            status.metrics.render(&status.registry),
        ),
        Route::NotFound => plain(
            "404 Not Found",
            "the dashboard is at /, metrics at /metrics",
        ),
        Route::MethodNotAllowed => plain(
            "405 Method Not Allowed",
            "only GET: nothing here changes anything",
        ),
        Route::ForeignHost => plain(
            "421 Misdirected Request",
            "open this page by the host's address or name, not through another name",
        ),
        Route::BadRequest => plain("400 Bad Request", "not an HTTP/1 request"),
    };
    let response = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {SECURITY_HEADERS}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn plain(code: &'static str, text: &str) -> (&'static str, &'static str, String) {
    (code, "text/plain; charset=utf-8", format!("{text}\n"))
}
