//! The hand-over phase: live v2 sessions, each pinging every 100 ms, while a successor takes
//! the proxy over (`--take-over`). Each session's worst round trip while it moved is the pause
//! it saw, beside its worst round trip before; with how long the hand-over took, how many
//! bytes of state moved, and when the old proxy was gone.

use std::path::Path;
use std::time::{Duration, Instant};

use bip324_e2e::v1::{Message, REGTEST_MAGIC};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::*;

pub(crate) const HANDOVER_CONNECTIONS: usize = 1_000;
const PING_EVERY: Duration = Duration::from_millis(100);
const BEFORE: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(4);

/// Takes `proxy` over with a successor started with `proxy_args`; returns the successor.
pub(crate) async fn handover_rows(
    setup: &Setup,
    proxy: &mut Child,
    (proxy_args, control): (&[String], &Path),
    rows: &mut Vec<Row>,
) -> Child {
    eprintln!("e2e-bench: hand-over of {HANDOVER_CONNECTIONS} live v2 sessions");
    let mut streams = Vec::with_capacity(HANDOVER_CONNECTIONS);
    while streams.len() < HANDOVER_CONNECTIONS {
        let batch: Vec<_> = (0..500.min(HANDOVER_CONNECTIONS - streams.len()))
            .map(|_| tokio::spawn(connect(setup.proxied)))
            .collect();
        for task in batch {
            streams.push(task.await.unwrap());
        }
    }
    let end = Instant::now() + BEFORE + AFTER;
    let pingers: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(pinger(stream, end)))
        .collect();
    tokio::time::sleep(BEFORE).await;

    let started = Instant::now();
    let log = std::env::temp_dir().join("e2e-bench-successor.log");
    let args = [proxy_args, &["--take-over".to_string()]].concat();
    let successor = start_proxy(&args, control, &log);
    let line = wait_for_line(&log, "took over the sockets").await;
    let ready = started.elapsed();
    while !proxy.exited() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let gone = started.elapsed();
    let mut before = Vec::new();
    let mut during = Vec::new();
    for pinger in pingers {
        let samples = pinger.await.unwrap();
        let worst = |from: Instant, to: Instant| {
            let window = samples.iter().filter(|(at, _)| (from..to).contains(at));
            window.map(|(_, rtt)| *rtt).max().unwrap_or_default()
        };
        before.push(worst(started - BEFORE, started));
        during.push(worst(started, end));
    }
    let (before, during) = (Spread::of(before), Spread::of(during));
    let field = |key: &str| -> u64 {
        let at = line.find(&format!("{key}=")).expect(key) + key.len() + 1;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .expect(key)
    };
    let (moved, bytes) = (field("connections"), field("state_bytes"));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    rows.push(Row::new(
        "hand-over: worst round trip per session",
        format!(
            "median {:.1} ms, max {:.1} ms ({moved} of {HANDOVER_CONNECTIONS} live sessions \
             moved, pinging every 100 ms)",
            ms(during.median),
            ms(during.max)
        ),
        format!(
            "before: median {:.1} ms, max {:.1} ms",
            ms(before.median),
            ms(before.max)
        ),
        during.median.as_secs_f64() / before.median.as_secs_f64().max(1e-6),
        "every session moves",
        moved == HANDOVER_CONNECTIONS as u64,
    ));
    rows.push(Row::new(
        "hand-over: the move itself",
        format!(
            "{} ms to receive {:.0} B per session; successor serving {:.0} ms after its start, \
             old proxy gone after {:.0} ms",
            field("took_ms"),
            bytes as f64 / moved.max(1) as f64,
            ms(ready),
            ms(gone)
        ),
        format!("successor resident: {} KiB", rss_kib(successor.pid())),
        1.0,
        "(reported)",
        true,
    ));
    successor
}

/// Pings every `PING_EVERY` until `end`; each ping's send time and round trip.
async fn pinger(mut stream: TcpStream, end: Instant) -> Vec<(Instant, Duration)> {
    let mut samples = Vec::new();
    let mut nonce = 0u64;
    while Instant::now() < end {
        nonce += 1;
        let ping = Message::new("ping", nonce.to_le_bytes()).to_wire(REGTEST_MAGIC);
        let sent = Instant::now();
        stream.write_all(&ping).await.expect("the session goes on");
        let (command, payload, _) = read_v1(&mut stream, true).await.expect("its pong");
        assert_eq!(
            (command.as_str(), &payload[..]),
            ("pong", &nonce.to_le_bytes()[..])
        );
        samples.push((sent, sent.elapsed()));
        tokio::time::sleep(PING_EVERY).await;
    }
    samples
}

/// The line of `log` that contains `needle`, once written.
async fn wait_for_line(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}:\n{text}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Spread {
    median: Duration,
    max: Duration,
}

impl Spread {
    fn of(mut values: Vec<Duration>) -> Spread {
        values.sort();
        Spread {
            median: values[values.len() / 2],
            max: values[values.len() - 1],
        }
    }
}
