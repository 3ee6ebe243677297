//! Hostile peers against the real proxy, behind a real redirect: remotes that break BIP-324 in
//! every way the proxy must survive, and v1 clients that break v1. For each, only that
//! connection closes, the proxy's log says why, and a healthy connection running alongside
//! the whole time is unaffected; at the end no connection, descriptor or memory is left over.
//!
//! Long because each hostile peer's misbehaviour is written out here, one test per case.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bip324_e2e::responder::ResponderOptions;
use bip324_e2e::server::Server;
use bip324_e2e::testbed::{
    NODE_PORT, Proxy, REMOTE_V4, RedirectCli, RemoteNode, TAGGED_GID, TwoHosts, noisy_responder,
    run_client,
};
use bip324_e2e::v1::{self, Message, REGTEST_MAGIC};
use bip324_protocol::cipher::{LENGTH_LEN, PacketOpener, PacketSealer, TAG_LEN};
use bip324_protocol::keys::{EphemeralKey, SessionKeys};
use bip324_protocol::test_util::seal;
use bip324_protocol::{Magic, Role, message_type, v1::Command};

const CLIENT: &str = env!("CARGO_BIN_EXE_e2e-v1-client");

/// How a hostile remote misbehaves; each listens on its own port.
#[derive(Clone, Copy, Debug)]
enum Remote {
    /// Garbage after its key, forever: no terminator ever comes.
    EndlessGarbage,
    /// Right terminator, packets under the wrong key.
    WrongKey,
    /// A valid session, then a packet whose tag is damaged.
    BadTagMidStream,
    /// A length field above the maximum.
    LengthAboveMaximum,
    /// Tens of megabytes of decoys, then a real message: legal, and it must arrive.
    DecoyFlood,
    /// Half a packet, then the connection closes.
    TruncatedPacket,
    /// Accepts and never answers.
    SilentHandshake,
    /// Part of a key, then closes.
    CloseMidHandshake,
    /// A valid session, then a reset.
    ResetMidStream,
}

/// Where each hostile remote listens (the healthy node is on `NODE_PORT`).
fn port_of(remote: Remote) -> u16 {
    20001 + remote as u16
}

/// The responder's half of a BIP-324 handshake (the test only needs it to misbehave after).
struct Session {
    sealer: PacketSealer,
    opener: PacketOpener,
    /// The initiator's garbage: AAD of its first packet.
    their_garbage: Vec<u8>,
}

fn magic() -> Magic {
    Magic(REGTEST_MAGIC)
}

/// Reads the initiator's key; sends ours, garbage and terminator; finds the initiator's
/// terminator. With `wrong_key`, the packets are sealed under a wrong contents key.
fn handshake(stream: &mut TcpStream, wrong_key: bool) -> std::io::Result<Session> {
    let mut their_key = [0u8; 64];
    stream.read_exact(&mut their_key)?;
    let key = EphemeralKey::new([0x5a; 32], [0x33; 32]).unwrap();
    let keys = SessionKeys::derive(&key.shared_secret(&their_key, Role::Responder), magic());
    let garbage = vec![0x47u8; 100];
    // The right length key, so the failure is the authentication itself.
    let mut sealer = if wrong_key {
        PacketSealer::new(keys.responder_l, [0xbb; 32])
    } else {
        keys.sealer(Role::Responder)
    };
    let mut out = key.encoding().to_vec();
    out.extend_from_slice(&garbage);
    out.extend_from_slice(&keys.send_terminator(Role::Responder));
    out.extend(seal(&mut sealer, b"", &garbage, false));
    stream.write_all(&out)?;
    // The initiator's garbage, up to its terminator.
    let terminator = keys.recv_terminator(Role::Responder);
    let mut seen = Vec::new();
    while !seen.ends_with(&terminator) {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte)?;
        seen.push(byte[0]);
    }
    seen.truncate(seen.len() - terminator.len());
    Ok(Session {
        sealer,
        opener: keys.opener(Role::Responder),
        their_garbage: seen,
    })
}

/// A v2 message as contents: its type, then its payload.
fn contents(command: &str, payload: &[u8]) -> Vec<u8> {
    let command = Command::from_name(command).unwrap();
    let mut out = vec![0u8; message_type::encoded_len(&command)];
    message_type::encode(&command, &mut out);
    out.extend_from_slice(payload);
    out
}

/// Reads (and checks) what the initiator sends, so its writes never block.
fn drain(mut stream: TcpStream, mut session_opener: PacketOpener, their_garbage: Vec<u8>) {
    std::thread::spawn(move || {
        let mut aad = their_garbage;
        loop {
            let mut length = [0u8; LENGTH_LEN];
            if stream.read_exact(&mut length).is_err() {
                return;
            }
            let len = session_opener.open_length(length);
            let mut body = vec![0u8; 1 + len + TAG_LEN];
            if stream.read_exact(&mut body).is_err()
                || session_opener.open(&aad, &mut body).is_err()
            {
                return;
            }
            aad.clear();
        }
    });
}

fn misbehave(remote: Remote, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    match remote {
        Remote::EndlessGarbage => {
            let mut their_key = [0u8; 64];
            stream.read_exact(&mut their_key)?;
            let noise = bip324_e2e::responder::pseudo_random(1024);
            loop {
                stream.write_all(&noise)?; // until the proxy gives up and closes
            }
        }
        Remote::SilentHandshake => {
            let mut sink = [0u8; 8192];
            while stream.read(&mut sink)? > 0 {}
            Ok(())
        }
        Remote::CloseMidHandshake => {
            let mut their_key = [0u8; 64];
            stream.read_exact(&mut their_key)?;
            stream.write_all(&[0x11; 30])?;
            Ok(())
        }
        Remote::WrongKey => {
            handshake(&mut stream, true)?;
            std::thread::sleep(Duration::from_secs(5));
            Ok(())
        }
        _ => {
            let mut session = handshake(&mut stream, false)?;
            // Those that stay connected read what the proxy sends; the others must hold no
            // second handle, or their close would not close.
            if matches!(
                remote,
                Remote::BadTagMidStream | Remote::LengthAboveMaximum | Remote::DecoyFlood
            ) {
                drain(
                    stream.try_clone()?,
                    session.opener,
                    std::mem::take(&mut session.their_garbage),
                );
            }
            // Packets are sealed in the order they go on the wire: the ciphers count them.
            let version = |sealer: &mut PacketSealer| {
                seal(sealer, &contents("version", b"hostile node"), b"", false)
            };
            match remote {
                Remote::BadTagMidStream => {
                    stream.write_all(&version(&mut session.sealer))?;
                    let mut verack =
                        seal(&mut session.sealer, &contents("verack", b""), b"", false);
                    let last = verack.len() - 1;
                    verack[last] ^= 1;
                    stream.write_all(&verack)?;
                }
                Remote::LengthAboveMaximum => {
                    let huge = seal(&mut session.sealer, &vec![0u8; 4_000_014], b"", false);
                    stream.write_all(&huge[..LENGTH_LEN])?;
                }
                Remote::DecoyFlood => {
                    for i in 0..2000usize {
                        stream.write_all(&seal(
                            &mut session.sealer,
                            &vec![i as u8; 32 * 1024],
                            b"",
                            true,
                        ))?;
                    }
                    stream.write_all(&version(&mut session.sealer))?;
                }
                Remote::TruncatedPacket => {
                    let version = version(&mut session.sealer);
                    stream.write_all(&version[..version.len() / 2])?;
                    // A clean close (FIN) in the middle of the packet.
                    stream.shutdown(std::net::Shutdown::Write)?;
                    let _ = std::io::copy(&mut stream, &mut std::io::sink());
                    return Ok(());
                }
                Remote::ResetMidStream => {
                    stream.write_all(&version(&mut session.sealer))?;
                    std::thread::sleep(Duration::from_millis(200));
                    // SO_LINGER 0 (and the proxy's unread bytes): close sends a reset.
                    nix::sys::socket::setsockopt(
                        &stream,
                        nix::sys::socket::sockopt::Linger,
                        &libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        },
                    )?;
                    return Ok(());
                }
                _ => unreachable!(),
            }
            std::thread::sleep(Duration::from_secs(5));
            Ok(())
        }
    }
}

/// A tagged raw connection through the proxy: sends a v1 version, returns what came back
/// before the connection closed (or the read timed out).
/// How the probe's connection ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// A clean end of stream (the proxy passed on a FIN).
    Eof,
    /// An error: the connection was reset, as a direct one to such a remote would be.
    Reset,
    /// Still open when the probe gave up.
    Open,
}

fn probe(hosts: &TwoHosts, port: u16, then: Vec<u8>) -> (Vec<Message>, Ended, SocketAddr) {
    hosts.client.run_as_group(TAGGED_GID, move || {
        let mut stream = TcpStream::connect((REMOTE_V4, port)).expect("connect");
        let local = stream.local_addr().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let version = v1::version_payload(
            SocketAddr::from(([10, 32, 4, 2], port)),
            1,
            "/hostile-test/",
        );
        stream
            .write_all(&Message::new("version", version).to_wire(REGTEST_MAGIC))
            .unwrap();
        let mut received = Vec::new();
        let mut sent_then = false;
        loop {
            match v1::read_message(&mut stream, REGTEST_MAGIC) {
                Ok(Some(message)) => {
                    received.push(message);
                    if !sent_then && !then.is_empty() && received.len() >= 2 {
                        let _ = stream.write_all(&then);
                        sent_then = true;
                    }
                }
                Ok(None) => return (received, Ended::Eof, local),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return (received, Ended::Open, local);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return (received, Ended::Reset, local);
                }
                Err(e) => panic!("the client's read failed otherwise: {e}"),
            }
        }
    })
}

/// A proxy behind the redirect, the healthy node, and optionally one hostile remote.
struct Bench {
    hosts: TwoHosts,
    proxy: Proxy,
    _node: RemoteNode,
    _hostile: Option<Server>,
    baseline_fds: usize,
}

impl Bench {
    fn start(hostile: Option<Remote>) -> Bench {
        let hosts = TwoHosts::create();
        let node = RemoteNode::start(&hosts.remote, |upstream| ResponderOptions {
            keep_received: false, // the healthy client runs many times
            ..noisy_responder(upstream)
        });
        let server = hostile.map(|remote| {
            hosts.remote.run(move || {
                let listener = TcpListener::bind((REMOTE_V4, port_of(remote))).unwrap();
                Server::spawn(listener, move |stream| {
                    let _ = misbehave(remote, stream);
                })
                .unwrap()
            })
        });
        let proxy = Proxy::start(
            &hosts.client,
            &["--handshake-timeout", "2s", "--first-bytes-timeout", "2s"],
        );
        let ports: Vec<String> = std::iter::once(NODE_PORT)
            .chain(hostile.map(port_of))
            .map(|p| p.to_string())
            .collect();
        // The rules stay in the client host's namespace; the CLI's record may go.
        RedirectCli::new(&hosts).enable_tagged("nftables", &ports.join(","));
        std::thread::sleep(Duration::from_millis(200));
        let baseline_fds = proxy.open_fds();
        Bench {
            hosts,
            proxy,
            _node: node,
            _hostile: server,
            baseline_fds,
        }
    }

    /// Runs `case` while a healthy client keeps working through the proxy, then checks that
    /// the healthy client never failed and that nothing was left behind.
    fn alongside_a_healthy_client(&self, case: impl FnOnce(&Bench)) {
        let stop = AtomicBool::new(false);
        // Set however `case` ends, or the scope would wait for the healthy client forever
        // after a failed assertion.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let healthy = std::thread::scope(|scope| {
            let _stop = StopOnDrop(&stop);
            let healthy = scope.spawn(|| {
                let remote = format!("{REMOTE_V4}:{NODE_PORT}");
                let mut runs = 0;
                while !stop.load(Ordering::SeqCst) || runs == 0 {
                    let run = run_client(
                        CLIENT,
                        &self.hosts.client,
                        Some(TAGGED_GID),
                        &[&remote, "--large", "1000000", "--small", "2000"],
                    );
                    assert!(run.success, "the healthy client failed: {}", run.stderr);
                    runs += 1;
                }
                runs
            });
            case(self);
            stop.store(true, Ordering::SeqCst);
            healthy.join().unwrap()
        });
        assert!(healthy >= 1);
        // Nothing is left behind: every connection closed, no descriptor kept.
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.proxy.open_fds() > self.baseline_fds && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            self.proxy.open_fds(),
            self.baseline_fds,
            "descriptors left open:\n{}",
            self.proxy.log()
        );
        let rss = self.proxy.memory_kib("VmRSS");
        assert!(
            rss < 64 * 1024,
            "memory comes back down: {rss} KiB resident"
        );
    }

    /// The line that ended the connection from `local`, checked for each typed label.
    fn assert_ended_with(&self, local: SocketAddr, mark: usize, labels: &[&str]) {
        let logged = self
            .proxy
            .wait_for_end_of(local, mark, Duration::from_secs(15))
            .unwrap_or_else(|| panic!("no closing log line for {local}\n{}", self.proxy.log()));
        for label in labels {
            assert!(
                logged.contains(label),
                "the log says why ({label}):\n{logged}"
            );
        }
    }
}

/// A hostile remote closes only its own connection, with the reason logged as typed labels;
/// the client sees it end as a direct connection would have (`ended`).
fn hostile_remote(remote: Remote, ended: Ended, labels: &[&str]) {
    let bench = Bench::start(Some(remote));
    bench.alongside_a_healthy_client(|bench| {
        let mark = bench.proxy.log_mark();
        let (received, how, local) = probe(&bench.hosts, port_of(remote), Vec::new());
        let closed = how != Ended::Open;
        if matches!(remote, Remote::DecoyFlood) {
            assert_eq!(
                received.first().map(|m| m.command.as_str()),
                Some("version"),
                "the message after the decoys arrives (closed: {closed}):\n{}",
                bench.proxy.log()
            );
        } else {
            assert!(
                closed && received.iter().all(|m| m.command == "version"),
                "{remote:?}: closed, nothing forged: {received:?}"
            );
            assert_eq!(how, ended, "{remote:?}: how the client saw it end");
        }
        bench.assert_ended_with(local, mark, labels);
    });
}

/// A v1 client that breaks v1 after the handshake (`then`) closes only its own connection.
fn hostile_client(then: Vec<u8>, labels: &[&str]) {
    let bench = Bench::start(None);
    bench.alongside_a_healthy_client(|bench| {
        let mark = bench.proxy.log_mark();
        let (received, how, local) = probe(&bench.hosts, NODE_PORT, then);
        assert_ne!(how, Ended::Open, "the connection closes");
        assert_eq!(received.len(), 2, "version and verack came first");
        bench.assert_ended_with(local, mark, labels);
    });
}

macro_rules! hostile_remotes {
    ($($test:ident: $remote:ident, $ended:ident => [$($label:literal),+],)+) => {
        $(#[test] fn $test() { hostile_remote(Remote::$remote, Ended::$ended, &[$($label),+]); })+
    };
}

// A failed or broken handshake, a protocol error and a reset reach the client as a reset; a
// clean close, even mid-message, as an end of stream.
hostile_remotes!(
    endless_garbage: EndlessGarbage, Reset => ["failure=handshake_protocol", "no_garbage_terminator"],
    wrong_key: WrongKey, Reset => ["failure=handshake_protocol", "v2_authentication_failed"],
    bad_tag_mid_stream: BadTagMidStream, Reset => ["close=remote_protocol", "v2_authentication_failed"],
    length_above_maximum: LengthAboveMaximum, Reset => ["close=remote_protocol", "v2_packet_too_large"],
    decoy_flood: DecoyFlood, Eof => ["close=client_closed"],
    truncated_packet: TruncatedPacket, Eof => ["close=remote_closed_mid_message"],
    silent_handshake: SilentHandshake, Reset => ["failure=handshake_timeout"],
    // It closes with our garbage unread, so the kernel resets the connection.
    close_mid_handshake: CloseMidHandshake, Reset => ["failure=handshake_error"],
    reset_mid_stream: ResetMidStream, Reset => ["close=remote_error"],
);

fn ping_with(magic: [u8; 4]) -> Vec<u8> {
    Message::new("ping", [1u8; 8]).to_wire(magic)
}

#[test]
fn client_with_another_networks_magic() {
    let then = ping_with([0xf9, 0xbe, 0xb4, 0xd9]);
    hostile_client(then, &["close=client_protocol", "v1_wrong_magic"]);
}

#[test]
fn client_with_an_oversized_message() {
    let mut oversized = Message::new("block", []).to_wire(REGTEST_MAGIC);
    oversized[16..20].copy_from_slice(&4_000_001u32.to_le_bytes());
    hostile_client(
        oversized,
        &["close=client_protocol", "v1_payload_too_large"],
    );
}

#[test]
fn client_with_a_bad_checksum() {
    let mut bad_checksum = ping_with(REGTEST_MAGIC);
    bad_checksum[20] ^= 0xff;
    hostile_client(bad_checksum, &["close=client_protocol", "v1_bad_checksum"]);
}

#[test]
fn client_that_sends_nothing() {
    let bench = Bench::start(None);
    bench.alongside_a_healthy_client(|bench| {
        let mark = bench.proxy.log_mark();
        let local = bench.hosts.client.run_as_group(TAGGED_GID, || {
            let mut stream = TcpStream::connect((REMOTE_V4, NODE_PORT)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let started = Instant::now();
            assert!(matches!(stream.read(&mut [0u8; 8]), Ok(0) | Err(_)));
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "closed after --first-bytes-timeout"
            );
            stream.local_addr().unwrap()
        });
        bench.assert_ended_with(local, mark, &["failure=client_timeout"]);
    });
}

/// A destination that refuses the connection is, to the client, a reset: an error, as a
/// direct connection would have shown, never a clean end of stream.
#[test]
fn a_refused_destination_is_a_reset_to_the_client() {
    let hosts = TwoHosts::create();
    let proxy = Proxy::start(&hosts.client, &[]);
    RedirectCli::new(&hosts).enable_tagged("nftables", &NODE_PORT.to_string());
    let (received, how, _) = probe(&hosts, NODE_PORT, Vec::new());
    assert!(received.is_empty());
    assert_eq!(how, Ended::Reset, "{}", proxy.log());
    assert!(
        proxy.log().contains("failure=connect_error"),
        "{}",
        proxy.log()
    );
}
