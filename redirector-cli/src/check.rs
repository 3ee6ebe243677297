//! `bip324-redirect check NODE`: one real connection of the group, and the proxy's account
//! of it. The connection is made from a thread whose credentials alone carry the group (the
//! raw system calls change one thread, not the process), so the kernel redirects it exactly
//! as it redirects a light client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bip324_protocol::{Magic, Network, v1};

use crate::error::{Error, exit};
use crate::policy::Id;
use crate::proxy_control;

/// What the check saw.
pub(crate) struct Outcome {
    pub(crate) local: SocketAddr,
    pub(crate) answered_in: Duration,
    pub(crate) answer: String,
}

pub(crate) fn run(args: &bip324_redirect_args::CheckArgs, group: &Id) -> Result<u8, Error> {
    let network = network_of(args)?;
    let (node, timeout) = (args.node, args.timeout);
    let gid = group.id;
    let outcome = std::thread::spawn(move || connect_as(gid, node, network.magic(), timeout))
        .join()
        .map_err(|_| Error::Config("the check's connection thread failed".into()))??;
    let control = args
        .control
        .clone()
        .unwrap_or_else(bip324_control::find_socket);
    let status = proxy_control::status(&control);
    let connection = status
        .as_ref()
        .ok()
        .and_then(|s| s.connections.iter().find(|c| c.client == outcome.local));
    let Some(connection) = connection else {
        println!(
            "check: {node} ({}) answered `{}` in {} ms, but the proxy has no record of this \\
             connection: it did NOT go through the proxy{}",
            network.name(),
            outcome.answer,
            outcome.answered_in.as_millis(),
            match &status {
                Err(e) => format!(" (or the proxy cannot be asked: {e})"),
                Ok(_) => String::new(),
            }
        );
        return Ok(exit::DEGRADED);
    };
    let encrypted = connection.transport == "v2";
    println!(
        "check: {node} ({}) through the proxy: {}{}, answered `{}` in {} ms",
        network.name(),
        if encrypted {
            "encrypted (v2)".to_string()
        } else {
            format!("NOT encrypted ({})", connection.transport)
        },
        connection
            .session_id
            .as_ref()
            .map(|id| format!(", session id {id}"))
            .unwrap_or_default(),
        outcome.answer,
        outcome.answered_in.as_millis()
    );
    Ok(if encrypted { exit::OK } else { exit::DEGRADED })
}

fn network_of(args: &bip324_redirect_args::CheckArgs) -> Result<Network, Error> {
    match &args.network {
        Some(name) => Network::ALL
            .into_iter()
            .find(|n| n.name() == name.as_str())
            .ok_or_else(|| Error::Config(format!("unknown network {name}"))),
        None => Network::ALL
            .into_iter()
            .find(|n| n.default_port() == args.node.port())
            .ok_or_else(|| {
                Error::Config(format!(
                    "port {} is no network's usual one: say which with --network",
                    args.node.port()
                ))
            }),
    }
}

/// Connects with `gid` as this thread's only group, says hello in v1 and waits for the
/// node's first message; the connection stays open until the proxy was asked about it.
fn connect_as(
    gid: u32,
    node: SocketAddr,
    magic: Magic,
    timeout: Duration,
) -> Result<Outcome, Error> {
    set_thread_group(gid)?;
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&node, timeout)
        .map_err(|e| Error::io(format!("cannot connect to {node}"), e))?;
    let local = stream
        .local_addr()
        .map_err(|e| Error::io("the connection's address", e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.write_all(&version_message(magic, node)))
        .map_err(|e| Error::io(format!("cannot talk to {node}"), e))?;
    let mut header = [0u8; 24];
    stream.read_exact(&mut header).map_err(|e| {
        Error::io(
            format!(
                "{node} did not answer (the proxy refuses a node that does not speak v2 \\
                 unless --v1-fallback; see `journalctl -u bip324-proxy`)"
            ),
            e,
        )
    })?;
    let name_len = header[4..16].iter().position(|&b| b == 0).unwrap_or(12);
    let answer = String::from_utf8_lossy(&header[4..4 + name_len]).into_owned();
    let outcome = Outcome {
        local,
        answered_in: started.elapsed(),
        answer,
    };
    // Kept open a moment so that the proxy still lists it when asked.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        drop(stream);
    });
    Ok(outcome)
}

/// This thread's real, effective and filesystem group becomes `gid`, with no supplementary
/// group: what `sg` gives a client (nftables matches the filesystem gid, eBPF the real one).
fn set_thread_group(gid: u32) -> Result<(), Error> {
    use nix::unistd::{getegid, getgid};
    if getgid().as_raw() == gid && getegid().as_raw() == gid {
        return Ok(()); // started with the group already (`sg btc -c ...`)
    }
    // SAFETY: plain system calls on this thread's own credentials; glibc's wrappers would
    // change every thread of the process.
    let rc = unsafe {
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0 {
            -1
        } else {
            libc::syscall(libc::SYS_setresgid, gid, gid, gid)
        }
    };
    if rc == 0 {
        return Ok(());
    }
    Err(Error::Privileges {
        action: format!(
            "check (connecting with group {gid}; or run it with the group: `sg GROUP -c \\
             'bip324-redirect check NODE'`)"
        ),
        missing: vec!["CAP_SETGID".into()],
    })
}

/// A v1 `version` message a node answers: protocol 70016, no services, no relay.
fn version_message(magic: Magic, node: SocketAddr) -> Vec<u8> {
    let mut payload = Vec::with_capacity(110);
    payload.extend_from_slice(&70016i32.to_le_bytes());
    payload.extend_from_slice(&0u64.to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    payload.extend_from_slice(&now.to_le_bytes());
    let ip = match node.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    };
    payload.extend_from_slice(&0u64.to_le_bytes());
    payload.extend_from_slice(&ip.octets());
    payload.extend_from_slice(&node.port().to_be_bytes());
    payload.extend_from_slice(&[0u8; 26]); // addr_from: unknown
    payload.extend_from_slice(&rand_nonce().to_le_bytes());
    let agent = format!("/bip324-redirect-check:{}/", env!("CARGO_PKG_VERSION"));
    payload.push(agent.len() as u8);
    payload.extend_from_slice(agent.as_bytes());
    payload.extend_from_slice(&0i32.to_le_bytes()); // start height
    payload.push(0); // relay: no transactions
    let command = v1::Command::from_name("version").expect("a valid command");
    let mut header = [0u8; v1::HEADER_LEN];
    v1::Header::write(&mut header, magic, &command, &payload);
    [&header[..], &payload].concat()
}

/// A nonce that tells our own connection apart if it loops back (not a secret).
fn rand_nonce() -> u64 {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    time ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_message_is_well_framed() {
        let node: SocketAddr = "10.0.0.2:8333".parse().unwrap();
        let message = version_message(Network::Mainnet.magic(), node);
        assert_eq!(&message[..4], &Network::Mainnet.magic().0);
        assert_eq!(&message[4..11], b"version");
        let len = u32::from_le_bytes(message[16..20].try_into().unwrap()) as usize;
        assert_eq!(message.len(), 24 + len);
        assert_eq!(message[20..24], v1::checksum(&message[24..]));
    }
}
