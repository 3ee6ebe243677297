//! The proxy takes its listening socket from systemd (`LISTEN_FDS`), here passed by
//! `systemd-socket-activate`, the tool systemd ships to test exactly this.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn uses_the_socket_systemd_passes() {
    let tool = "/usr/bin/systemd-socket-activate";
    assert!(
        std::path::Path::new(tool).exists(),
        "{tool} is missing: apt-get install systemd"
    );
    // A free port for the tool to listen on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = KillOnDrop(
        Command::new(tool)
            // No control socket: the default path is the system proxy's, not this test's.
            .args([
                "--listen",
                &addr,
                env!("CARGO_BIN_EXE_bip324-proxy"),
                "--no-control",
            ])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The tool starts the proxy on the first connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        match TcpStream::connect(&addr) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("nothing listens on {addr}: {e}"),
        }
    };
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Not redirected: the proxy closes it without reading. The client sends nothing, so the
    // close is a FIN (unread bytes would make it a reset): end of stream, and only that. A
    // timeout means the proxy kept the connection; an error, that it did something else.
    let mut buf = [0u8; 16];
    match client.read(&mut buf) {
        Ok(0) => {}
        other => panic!("not redirected: the proxy must close it, got {other:?}"),
    }

    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        seen.push(line.clone());
        if line.contains("refused connection") {
            break;
        }
    }
    drop(child);
    let ready = seen
        .iter()
        .find(|l| l.contains("ready"))
        .expect("ready line");
    assert!(
        ready.contains(&format!("listen=[{addr}]")),
        "only the passed socket: {ready}"
    );
    assert!(
        seen.iter().any(|l| l.contains("refused connection")),
        "{seen:?}"
    );
}

/// The tool execs the proxy in its own process: killing it, even when an assertion failed,
/// leaves no proxy behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
