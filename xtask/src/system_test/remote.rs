//! The remote host's node, `e2e-remote-node` (an independent v2 responder relaying to a v1
//! echo node), run in its namespace; and what it reports of each connection, in order.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::netns::Netns;
use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transport {
    V1,
    V2,
}

/// What the remote node saw of one connection.
#[derive(Clone, Debug)]
pub(super) struct Report {
    pub(super) transport: Transport,
    /// Hex; empty for a v1 connection.
    pub(super) session_id: String,
}

impl Report {
    /// `transport=v2 session=HEX peer=ADDR`.
    fn parse(line: &str) -> Option<Report> {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        };
        let transport = match field("transport")? {
            "v1" => Transport::V1,
            "v2" => Transport::V2,
            _ => return None,
        };
        let session_id = field("session")?;
        Some(Report {
            transport,
            session_id: if session_id == "-" { "" } else { session_id }.to_string(),
        })
    }
}

/// The node process; killed on drop. Reports are numbered from 1 in the order they came.
pub(super) struct RemoteNode {
    process: Child,
    reports: Arc<Mutex<Vec<Report>>>,
    /// How many reports the test has taken with `next`.
    seen: usize,
}

impl RemoteNode {
    pub(super) fn start(binary: &str, host: &Netns) -> Result<RemoteNode> {
        let mut process = host
            .command(binary)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {binary}: {e}"))?;
        let mut lines = BufReader::new(process.stdout.take().expect("piped")).lines();
        match lines.next() {
            Some(Ok(line)) if line.starts_with("listening=") => {}
            other => {
                let _ = process.kill();
                let _ = process.wait();
                return Err(format!("the remote node did not start: {other:?}"));
            }
        }
        let reports = Arc::new(Mutex::new(Vec::new()));
        let filled = Arc::clone(&reports);
        std::thread::spawn(move || {
            for line in lines.map_while(std::io::Result::ok) {
                if let Some(report) = Report::parse(&line) {
                    filled.lock().expect("not poisoned").push(report);
                }
            }
        });
        Ok(RemoteNode {
            process,
            reports,
            seen: 0,
        })
    }

    /// The report of the next connection, within 10 s.
    pub(super) fn next(&mut self) -> Result<Report> {
        let reports = self.wait_for(self.seen + 1, Duration::from_secs(10));
        let report = reports.get(self.seen).cloned().ok_or_else(|| {
            format!(
                "the remote saw {} connections, expected {}",
                reports.len(),
                self.seen + 1
            )
        })?;
        self.seen += 1;
        Ok(report)
    }

    /// How many connections the remote has seen so far.
    pub(super) fn count(&self) -> usize {
        self.reports.lock().expect("not poisoned").len()
    }

    fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Report> {
        let deadline = Instant::now() + timeout;
        loop {
            let reports = self.reports.lock().expect("not poisoned").clone();
            if reports.len() >= n || Instant::now() > deadline {
                return reports;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RemoteNode {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse() {
        let v2 = Report::parse("transport=v2 session=00ff peer=10.32.4.1:40000").expect("v2");
        assert_eq!(
            (v2.transport, v2.session_id.as_str()),
            (Transport::V2, "00ff")
        );
        let v1 = Report::parse("transport=v1 session=- peer=10.32.4.1:40001").expect("v1");
        assert_eq!((v1.transport, v1.session_id.as_str()), (Transport::V1, ""));
        assert!(Report::parse("listening=[::]:8333").is_none());
    }
}
