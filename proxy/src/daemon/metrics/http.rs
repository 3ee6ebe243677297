//! The small HTTP responder that serves the metrics: one bounded, time-limited request per
//! connection, at most eight at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Metrics;
use crate::daemon::registry::Registry;

/// What a person who opens the address in a browser sees.
const LANDING_PAGE: &str = "<!doctype html><title>bip324-proxy</title>\
<h1>bip324-proxy</h1><p>BIP-324 proxy metrics, in the Prometheus text format: \
<a href=\"/metrics\">/metrics</a>.</p>\n";
/// Serves `GET /metrics` until shutdown. A scrape reads counters and takes the registry lock
/// briefly; requests are small, bounded and time-limited.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(8));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            debug!("metrics: too many scrapes at once, closing {peer}");
            continue;
        };
        let (metrics, registry) = (Arc::clone(&metrics), Arc::clone(&registry));
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), respond(stream, &metrics, &registry))
                    .await;
            drop(permit);
        });
    }
}

async fn respond(
    mut stream: TcpStream,
    metrics: &Metrics,
    registry: &Registry,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, content_type, body) = if request_line.starts_with(b"GET /metrics ") {
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(registry),
        )
    } else if request_line.starts_with(b"GET / ") {
        (
            "200 OK",
            "text/html; charset=utf-8",
            LANDING_PAGE.to_string(),
        )
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".to_string(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
