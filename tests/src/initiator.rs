//! A BIP-324 initiator on rust-bitcoin's `bip324` crate: an independent v2 peer that connects
//! to a node (through inbound mode) and exchanges whole messages with it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bip324::{PacketType, Role};

use crate::responder::{decode_contents, encode_contents, handshake};
use crate::v1::Message;

pub struct V2Peer {
    stream: TcpStream,
    cipher: bip324::CipherSession,
    /// Read past the version packet, not decrypted yet.
    pending: io::Cursor<Vec<u8>>,
    /// Decoy packets skipped so far.
    pub decoys: usize,
    /// The responder's 64-byte key, as it arrived.
    pub their_key: [u8; 64],
}

impl V2Peer {
    /// Connects (from the calling thread's network namespace) and completes the handshake
    /// with `garbage_len` bytes of garbage and `decoys` decoys before the version packet.
    pub fn connect(
        to: SocketAddr,
        magic: [u8; 4],
        (garbage_len, decoys): (usize, usize),
    ) -> io::Result<V2Peer> {
        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let (reader, mut writer) = (stream.try_clone()?, stream.try_clone()?);
        let mut reader = FirstBytes {
            inner: reader,
            first: Vec::new(),
        };
        let (cipher, leftover) = handshake(
            &mut reader,
            &mut writer,
            (magic, Role::Initiator, None),
            (garbage_len, decoys),
        )?;
        let mut their_key = [0u8; 64];
        their_key.copy_from_slice(&reader.first);
        Ok(V2Peer {
            stream,
            cipher,
            pending: io::Cursor::new(leftover),
            decoys: 0,
            their_key,
        })
    }

    pub fn session_id(&self) -> [u8; 32] {
        *self.cipher.id()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("connected")
    }

    pub fn send(&mut self, message: &Message) -> io::Result<()> {
        let packet = self.cipher.outbound().encrypt_to_vec(
            &encode_contents(message),
            PacketType::Genuine,
            None,
        );
        self.stream.write_all(&packet)
    }

    /// `message` in a packet whose tag does not authenticate: breaks v2 on purpose.
    pub fn send_tampered(&mut self, message: &Message) -> io::Result<()> {
        let mut packet = self.cipher.outbound().encrypt_to_vec(
            &encode_contents(message),
            PacketType::Genuine,
            None,
        );
        if let Some(last) = packet.last_mut() {
            *last ^= 1;
        }
        self.stream.write_all(&packet)
    }

    /// The next message, skipping decoys; `None` when the other side closed.
    pub fn receive(&mut self) -> io::Result<Option<Message>> {
        loop {
            let mut length = [0u8; 3];
            let mut from = (&mut self.pending).chain(&self.stream);
            if !crate::v1::read_exact_or_eof(&mut from, &mut length)? {
                return Ok(None);
            }
            let len = self.cipher.inbound().decrypt_packet_len(length);
            let mut packet = vec![0u8; len];
            from.read_exact(&mut packet)?;
            let (kind, plaintext) = self
                .cipher
                .inbound()
                .decrypt_in_place(&mut packet, None)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if kind == PacketType::Decoy {
                self.decoys += 1;
                continue;
            }
            return decode_contents(&plaintext[1..]).map(Some);
        }
    }
}

/// A reader that keeps a copy of the first 64 bytes read through it: the other side's key.
struct FirstBytes<R> {
    inner: R,
    first: Vec<u8>,
}

impl<R: Read> Read for FirstBytes<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let keep = (64 - self.first.len()).min(n);
        self.first.extend_from_slice(&buf[..keep]);
        Ok(n)
    }
}
