//! BIP-324's forward-secure ciphers and the v2 packet built on them.
//!
//! * `FsChaCha20` encrypts the 3-byte length of each packet with one continuous ChaCha20
//!   keystream, rekeyed every 224 lengths.
//! * `FsChaCha20Poly1305` encrypts `header | contents` with RFC 8439 ChaCha20-Poly1305
//!   (`aead`), the nonce derived from the packet counter, rekeyed every 224 packets.
//!
//! Everything works in place on caller-owned buffers, so the hot path allocates nothing.

use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::{ChaCha20, Key, Nonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::resume::{Reader, ResumeError, Snapshot};
use super::{ProtocolError, aead};

/// The encrypted length field of a packet.
pub const LENGTH_LEN: usize = 3;
/// The header byte inside the contents (its ignore bit marks decoys).
pub const HEADER_LEN: usize = 1;
/// The Poly1305 tag of a packet.
pub const TAG_LEN: usize = 16;
/// Bytes a packet adds around its contents.
pub const PACKET_OVERHEAD: usize = LENGTH_LEN + HEADER_LEN + TAG_LEN;
/// Header bit that marks a decoy: authenticated, then ignored by the receiver.
pub const IGNORE_BIT: u8 = 0x80;
/// Largest contents Bitcoin Core accepts: a long-form type and a maximal v1 payload.
pub const MAX_CONTENTS_LEN: usize = 1 + 12 + 4_000_000;

const REKEY_INTERVAL: u64 = 224;

/// The length cipher: a ChaCha20 keystream that continues across packets.
struct FsChaCha20 {
    stream: ChaCha20,
    /// The current epoch's key: a paused cipher is rebuilt from it and its position.
    key: [u8; 32],
    chunk_counter: u64,
}

impl Drop for FsChaCha20 {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl FsChaCha20 {
    fn new(mut key: [u8; 32]) -> Self {
        let cipher = Self::at(&key, 0);
        key.zeroize();
        cipher
    }

    /// The cipher of epoch key `key` after `chunk_counter` lengths.
    fn at(key: &[u8; 32], chunk_counter: u64) -> Self {
        let mut stream = Self::stream(key, chunk_counter / REKEY_INTERVAL);
        stream.seek((chunk_counter % REKEY_INTERVAL) * LENGTH_LEN as u64);
        FsChaCha20 {
            stream,
            key: *key,
            chunk_counter,
        }
    }

    fn pause(&self, snapshot: &mut Snapshot) {
        snapshot.array(&self.key);
        snapshot.u64(self.chunk_counter);
    }

    fn resume(reader: &mut Reader<'_>) -> Result<Self, ResumeError> {
        let key = reader.key()?;
        Ok(Self::at(&key, reader.u64()?))
    }

    fn stream(key: &[u8; 32], epoch: u64) -> ChaCha20 {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&epoch.to_le_bytes());
        ChaCha20::new(&Key::from(*key), &Nonce::from(nonce))
    }

    fn crypt(&mut self, chunk: &mut [u8; LENGTH_LEN]) {
        self.stream.apply_keystream(chunk);
        self.chunk_counter += 1;
        if self.chunk_counter % REKEY_INTERVAL == 0 {
            let mut key = [0u8; 32];
            self.stream.apply_keystream(&mut key);
            self.stream = Self::stream(&key, self.chunk_counter / REKEY_INTERVAL);
            self.key = key;
            key.zeroize();
        }
    }
}

/// The contents cipher: ChaCha20-Poly1305 with a nonce per packet.
#[derive(Zeroize, ZeroizeOnDrop)]
struct FsChaCha20Poly1305 {
    key: [u8; 32],
    packet_counter: u64,
}

impl FsChaCha20Poly1305 {
    fn new(key: [u8; 32]) -> Self {
        FsChaCha20Poly1305 {
            key,
            packet_counter: 0,
        }
    }

    fn pause(&self, snapshot: &mut Snapshot) {
        snapshot.array(&self.key);
        snapshot.u64(self.packet_counter);
    }

    fn resume(reader: &mut Reader<'_>) -> Result<Self, ResumeError> {
        Ok(FsChaCha20Poly1305 {
            key: *reader.key()?,
            packet_counter: reader.u64()?,
        })
    }

    fn nonce(&self) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&((self.packet_counter % REKEY_INTERVAL) as u32).to_le_bytes());
        nonce[4..].copy_from_slice(&(self.packet_counter / REKEY_INTERVAL).to_le_bytes());
        nonce
    }

    fn encrypt(&mut self, aad: &[u8], text: &mut [u8], tag_out: &mut [u8]) {
        tag_out.copy_from_slice(&aead::encrypt(&self.key, self.nonce(), aad, text));
        self.advance();
    }

    fn decrypt(&mut self, aad: &[u8], text: &mut [u8], tag: &[u8]) -> Result<(), ProtocolError> {
        let tag: &[u8; TAG_LEN] = tag
            .try_into()
            .map_err(|_| ProtocolError::V2AuthenticationFailed)?;
        if !aead::decrypt(&self.key, self.nonce(), aad, text, tag) {
            return Err(ProtocolError::V2AuthenticationFailed);
        }
        self.advance();
        Ok(())
    }

    fn advance(&mut self) {
        self.packet_counter += 1;
        if self.packet_counter % REKEY_INTERVAL == 0 {
            // The new key is the keystream that would encrypt 32 zero bytes under the nonce
            // 0xffffffff || epoch of the packet just processed, starting at block 1.
            let epoch = (self.packet_counter - 1) / REKEY_INTERVAL;
            let mut nonce = [0xffu8; 12];
            nonce[4..].copy_from_slice(&epoch.to_le_bytes());
            let mut stream = ChaCha20::new(&Key::from(self.key), &Nonce::from(nonce));
            stream.seek(64u64);
            let mut key = [0u8; 32];
            stream.apply_keystream(&mut key);
            self.key = key;
            key.zeroize();
        }
    }
}

/// Total bytes of a packet carrying `contents_len` bytes of contents.
pub const fn packet_len(contents_len: usize) -> usize {
    contents_len + PACKET_OVERHEAD
}

/// Encrypts outgoing packets of one direction.
pub struct PacketSealer {
    length: FsChaCha20,
    contents: FsChaCha20Poly1305,
}

impl PacketSealer {
    pub(crate) fn pause(&self, snapshot: &mut Snapshot) {
        self.length.pause(snapshot);
        self.contents.pause(snapshot);
    }

    pub(crate) fn resume(reader: &mut Reader<'_>) -> Result<Self, ResumeError> {
        Ok(PacketSealer {
            length: FsChaCha20::resume(reader)?,
            contents: FsChaCha20Poly1305::resume(reader)?,
        })
    }

    /// `length_key` and `contents_key` are this direction's L and P keys.
    pub fn new(length_key: [u8; 32], contents_key: [u8; 32]) -> Self {
        PacketSealer {
            length: FsChaCha20::new(length_key),
            contents: FsChaCha20Poly1305::new(contents_key),
        }
    }

    /// Seals `packet` in place. `packet` is `length(3) | header(1) | contents | tag(16)`;
    /// only the contents need to be filled in, the rest is written here.
    pub fn seal(&mut self, packet: &mut [u8], aad: &[u8], ignore: bool) {
        let contents_len = packet.len() - PACKET_OVERHEAD;
        debug_assert!(contents_len < 1 << 24);
        let mut length = [0u8; LENGTH_LEN];
        length.copy_from_slice(&(contents_len as u32).to_le_bytes()[..LENGTH_LEN]);
        self.length.crypt(&mut length);
        packet[..LENGTH_LEN].copy_from_slice(&length);
        packet[LENGTH_LEN] = if ignore { IGNORE_BIT } else { 0 };
        let (text, tag) = packet[LENGTH_LEN..].split_at_mut(HEADER_LEN + contents_len);
        self.contents.encrypt(aad, text, tag);
    }
}

/// Decrypts incoming packets of one direction.
pub struct PacketOpener {
    length: FsChaCha20,
    contents: FsChaCha20Poly1305,
}

impl PacketOpener {
    pub(crate) fn pause(&self, snapshot: &mut Snapshot) {
        self.length.pause(snapshot);
        self.contents.pause(snapshot);
    }

    pub(crate) fn resume(reader: &mut Reader<'_>) -> Result<Self, ResumeError> {
        Ok(PacketOpener {
            length: FsChaCha20::resume(reader)?,
            contents: FsChaCha20Poly1305::resume(reader)?,
        })
    }

    /// An opener of the packets sealed with these keys.
    pub fn new(length_key: [u8; 32], contents_key: [u8; 32]) -> Self {
        PacketOpener {
            length: FsChaCha20::new(length_key),
            contents: FsChaCha20Poly1305::new(contents_key),
        }
    }

    /// Decrypts the next packet's length field: the number of contents bytes, so the rest of
    /// the packet is `HEADER_LEN + len + TAG_LEN` bytes. Call exactly once per packet.
    pub fn open_length(&mut self, encrypted: [u8; LENGTH_LEN]) -> usize {
        let mut length = encrypted;
        self.length.crypt(&mut length);
        usize::from(length[0]) | usize::from(length[1]) << 8 | usize::from(length[2]) << 16
    }

    /// Authenticates and decrypts `header | contents | tag` in place. On success the header
    /// and contents are plaintext; returns whether the packet is a decoy.
    pub fn open(&mut self, aad: &[u8], packet_body: &mut [u8]) -> Result<bool, ProtocolError> {
        let text_len = packet_body
            .len()
            .checked_sub(TAG_LEN)
            .filter(|&n| n >= HEADER_LEN)
            .ok_or(ProtocolError::V2AuthenticationFailed)?;
        let (text, tag) = packet_body.split_at_mut(text_len);
        self.contents.decrypt(aad, text, tag)?;
        Ok(text[0] & IGNORE_BIT != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_across_rekeys() {
        let mut sealer = PacketSealer::new([1; 32], [2; 32]);
        let mut opener = PacketOpener::new([1; 32], [2; 32]);
        for i in 0..(3 * REKEY_INTERVAL as usize + 5) {
            let contents: Vec<u8> = (0..i % 300).map(|j| (i + j) as u8).collect();
            let mut packet = vec![0u8; packet_len(contents.len())];
            packet[LENGTH_LEN + HEADER_LEN..][..contents.len()].copy_from_slice(&contents);
            let aad: &[u8] = if i == 0 { b"garbage" } else { b"" };
            sealer.seal(&mut packet, aad, i % 7 == 0);
            let len = opener.open_length(packet[..LENGTH_LEN].try_into().unwrap());
            assert_eq!(len, contents.len());
            let ignore = opener.open(aad, &mut packet[LENGTH_LEN..]).unwrap();
            assert_eq!(ignore, i % 7 == 0);
            assert_eq!(&packet[LENGTH_LEN + HEADER_LEN..][..len], &contents[..]);
        }
    }

    #[test]
    fn tampering_is_detected() {
        let mut sealer = PacketSealer::new([3; 32], [4; 32]);
        let mut packet = vec![0u8; packet_len(10)];
        sealer.seal(&mut packet, b"", false);
        for flip in [LENGTH_LEN, LENGTH_LEN + 5, packet.len() - 1] {
            let mut opener = PacketOpener::new([3; 32], [4; 32]);
            let mut bad = packet.clone();
            bad[flip] ^= 1;
            opener.open_length(bad[..LENGTH_LEN].try_into().unwrap());
            assert!(opener.open(b"", &mut bad[LENGTH_LEN..]).is_err());
        }
        // Wrong AAD fails too.
        let mut opener = PacketOpener::new([3; 32], [4; 32]);
        let mut copy = packet.clone();
        opener.open_length(copy[..LENGTH_LEN].try_into().unwrap());
        assert!(opener.open(b"x", &mut copy[LENGTH_LEN..]).is_err());
        // A body too short to hold a header and a tag is an error, not a panic.
        let mut opener = PacketOpener::new([3; 32], [4; 32]);
        assert!(opener.open(b"", &mut [0u8; TAG_LEN]).is_err());
    }
}
