//! A v1 node that answers the handshake and echoes every other message back unchanged.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use crate::server::Server;
use crate::v1::{Message, read_message, version_payload, write_message};

/// Answers `version` with `version` + `verack`, `ping` with `pong`, ignores `verack`, and
/// echoes everything else, in order.
pub fn spawn_echo_node(listener: TcpListener, magic: [u8; 4]) -> io::Result<Server> {
    Server::spawn(listener, move |stream| {
        let _ = serve(stream, magic);
    })
}

fn serve(stream: TcpStream, magic: [u8; 4]) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = io::BufReader::new(stream.try_clone()?);
    let mut writer = io::BufWriter::new(stream.try_clone()?);
    while let Some(message) = read_message(&mut reader, magic)? {
        match message.command.as_str() {
            "version" => {
                let peer = stream.peer_addr()?;
                let reply = version_payload(peer, 0x0ec0, "/e2e-echo-node:0.1/");
                write_message(&mut writer, magic, &Message::new("version", reply))?;
                write_message(&mut writer, magic, &Message::new("verack", []))?;
            }
            "verack" => {}
            "ping" => write_message(&mut writer, magic, &Message::new("pong", message.payload))?,
            _ => write_message(&mut writer, magic, &message)?,
        }
        // Flush when nothing else is waiting, so small messages batch but never stall.
        if reader.buffer().is_empty() {
            io::Write::flush(&mut writer)?;
        }
    }
    io::Write::flush(&mut writer)?;
    stream.shutdown(Shutdown::Write)
}
