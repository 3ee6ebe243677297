//! v1 -> v2: reads a v1 client's messages and emits encrypted v2 packets.
//!
//! A v1 frame is `header(24) | payload`; its packet is
//! `length(3) | header(1) | type(1 or 13) | payload | tag(16)`. Each packet is assembled in
//! the outbox with the payload at its final offset and then sealed in place.

use super::ProtocolError;
use super::buffers::{Outbox, Staging};
use super::cipher::{
    HEADER_LEN as PACKET_HEADER_LEN, LENGTH_LEN, PACKET_OVERHEAD, PacketSealer, TAG_LEN, packet_len,
};
use super::message_type;
use super::network::Magic;
use super::pipe::{Event, Pipe};
use super::resume::{Reader, Refeed, ResumeError, Snapshot, Tag, refeed};
use super::v1;

/// The client's direction: v1 messages in, v2 packets out.
pub struct Encoder {
    magic: Magic,
    sealer: PacketSealer,
    staging: Staging,
    out: Outbox,
    /// The message whose payload is being read straight into the outbox.
    partial: Option<PartialMessage>,
    /// Traffic shaping: each flight padded to a bucket size with a decoy.
    pad_to_buckets: bool,
    /// Messages were sealed since the last padding.
    fresh: bool,
}

/// The smallest flight size of the bucket scheme that `len` bytes fit in with room for a
/// decoy packet, or `len` itself when it is one: powers of two from 512 B to 64 KiB, then
/// multiples of 64 KiB.
pub fn bucket_for(len: usize) -> usize {
    const LARGEST_POWER: usize = 64 * 1024;
    let is_bucket = |n: usize| {
        ((512..=LARGEST_POWER).contains(&n) && n.is_power_of_two())
            || (n > 0 && n % LARGEST_POWER == 0)
    };
    if is_bucket(len) {
        return len;
    }
    let needed = len + PACKET_OVERHEAD;
    if needed <= LARGEST_POWER {
        needed.next_power_of_two().max(512)
    } else {
        needed.div_ceil(LARGEST_POWER) * LARGEST_POWER
    }
}

struct PartialMessage {
    header: v1::Header,
    frame_start: usize,
    payload_start: usize,
    /// End of the payload bytes received so far.
    filled: usize,
}

impl PartialMessage {
    fn payload_end(&self) -> usize {
        self.payload_start + self.header.payload_len
    }
}

impl Encoder {
    /// `sealer` must already have sent the version packet: the encoder only emits messages.
    pub fn new(magic: Magic, sealer: PacketSealer) -> Self {
        Encoder {
            magic,
            sealer,
            staging: Staging::default(),
            out: Outbox::default(),
            partial: None,
            pad_to_buckets: false,
            fresh: false,
        }
    }

    /// Traffic shaping: from now on every flight (what one read of input produces) is padded
    /// with a decoy packet to a size of [`bucket_for`]'s scheme, and nothing is released
    /// while a large message is still arriving. Hides the sizes of small messages inside their
    /// bucket; not their timing, nor their number.
    pub fn pad_flights_to_buckets(&mut self) {
        self.pad_to_buckets = true;
    }

    /// Size of a cover decoy on the wire: the smallest bucket.
    pub const COVER_LEN: usize = 512;

    /// Appends one decoy packet of `frame_len` bytes on the wire (at least a packet's
    /// overhead).
    fn append_decoy(&mut self, frame_len: usize) {
        let frame_start = self.out.begin_frame(frame_len);
        let frame_end = frame_start + frame_len;
        self.sealer
            .seal(&mut self.out.buf[frame_start..frame_end], &[], true);
        self.out.finish_frame(frame_start, frame_start, frame_end);
    }

    /// Appends the decoy that brings this flight to its bucket.
    fn pad(&mut self) {
        if !(self.pad_to_buckets && self.fresh && self.partial.is_none()) {
            return;
        }
        self.fresh = false;
        let len = self.out.pending().len();
        let target = bucket_for(len);
        if target == len {
            return;
        }
        self.append_decoy(target - len);
    }

    /// Starts packets for every whole header in staging.
    fn process_staging(&mut self, events: &mut dyn FnMut(Event)) -> Result<(), ProtocolError> {
        while self.partial.is_none() {
            let Some(header_bytes) = self.staging.data().first_chunk::<{ v1::HEADER_LEN }>() else {
                break;
            };
            let header = v1::Header::parse(header_bytes, self.magic)?;
            let type_len = message_type::encoded_len(&header.command);
            let frame_start = self
                .out
                .begin_frame(packet_len(type_len + header.payload_len));
            let type_start = frame_start + LENGTH_LEN + PACKET_HEADER_LEN;
            message_type::encode(&header.command, &mut self.out.buf[type_start..][..type_len]);
            let payload_start = type_start + type_len;

            let staged = &self.staging.data()[v1::HEADER_LEN..];
            let available = staged.len().min(header.payload_len);
            self.out.buf[payload_start..][..available].copy_from_slice(&staged[..available]);
            self.staging.consume(v1::HEADER_LEN + available);

            let message = PartialMessage {
                header,
                frame_start,
                payload_start,
                filled: payload_start + available,
            };
            if message.filled == message.payload_end() {
                self.seal(message, events)?;
            } else {
                self.partial = Some(message);
            }
        }
        Ok(())
    }

    fn seal(
        &mut self,
        message: PartialMessage,
        events: &mut dyn FnMut(Event),
    ) -> Result<(), ProtocolError> {
        let payload_end = message.payload_end();
        let payload = &self.out.buf[message.payload_start..payload_end];
        if v1::checksum(payload) != message.header.checksum {
            self.out.discard_frame();
            return Err(ProtocolError::V1BadChecksum {
                command: message.header.command,
            });
        }
        let frame_end = payload_end + TAG_LEN;
        self.sealer.seal(
            &mut self.out.buf[message.frame_start..frame_end],
            &[],
            false,
        );
        self.out
            .finish_frame(message.frame_start, message.frame_start, frame_end);
        self.fresh = true;
        events(Event::Message {
            command: message.header.command,
            payload_len: message.header.payload_len,
        });
        Ok(())
    }
}

impl Pipe for Encoder {
    fn output(&self) -> &[u8] {
        // A shaped flight leaves whole: not while a large message is still arriving.
        if self.pad_to_buckets && self.partial.is_some() {
            return &[];
        }
        self.out.pending()
    }

    fn consume_output(&mut self, n: usize) {
        self.out.consume(n);
    }

    fn input_space(&mut self) -> &mut [u8] {
        if self.partial.is_none() && self.out.pending().len() >= Outbox::HIGH_WATER {
            return &mut [];
        }
        self.free_space()
    }

    fn commit_input(
        &mut self,
        n: usize,
        events: &mut dyn FnMut(Event),
    ) -> Result<(), ProtocolError> {
        match &mut self.partial {
            Some(message) => {
                message.filled += n;
                debug_assert!(message.filled <= message.payload_end());
                if message.filled == message.payload_end() {
                    let message = self.partial.take().expect("checked above");
                    self.seal(message, events)?;
                }
            }
            None => self.staging.fill(n),
        }
        self.process_staging(events)?;
        self.pad();
        Ok(())
    }

    fn partial_input(&self) -> usize {
        self.staging.data().len()
            + self
                .partial
                .as_ref()
                .map_or(0, |m| v1::HEADER_LEN + (m.filled - m.payload_start))
    }

    fn release_idle_buffers(&mut self) {
        self.staging.release_if_empty();
        self.out.release_if_empty();
    }

    fn emit_cover(&mut self) -> bool {
        if self.partial.is_some() || !self.out.pending().is_empty() {
            return false;
        }
        self.append_decoy(Self::COVER_LEN);
        true
    }

    /// The unfinished message goes as the v1 bytes it came as: nothing was sealed for it.
    fn pause(&self, snapshot: &mut Snapshot) {
        snapshot.tag(Tag::Encoder);
        snapshot.magic(self.magic);
        self.sealer.pause(snapshot);
        snapshot.flag(self.pad_to_buckets);
        snapshot.flag(self.fresh);
        snapshot.bytes(&[self.out.pending()]);
        let mut header = [0u8; v1::HEADER_LEN];
        let unread: [&[u8]; 3] = match &self.partial {
            Some(message) => {
                header[..4].copy_from_slice(&self.magic.0);
                header[4..16].copy_from_slice(&message.header.command.0);
                let len = message.header.payload_len as u32;
                header[16..20].copy_from_slice(&len.to_le_bytes());
                header[20..].copy_from_slice(&message.header.checksum);
                let payload = &self.out.buf[message.payload_start..message.filled];
                [&header, payload, self.staging.data()]
            }
            None => [&[], &[], self.staging.data()],
        };
        snapshot.bytes(&unread);
    }
}

impl Encoder {
    pub(crate) fn resume(reader: &mut Reader<'_>) -> Result<Encoder, ResumeError> {
        let magic = reader.magic()?;
        let mut encoder = Encoder::new(magic, PacketSealer::resume(reader)?);
        encoder.pad_to_buckets = reader.flag()?;
        encoder.fresh = reader.flag()?;
        encoder.out = Outbox::holding(reader.bytes()?);
        refeed(&mut encoder, reader.bytes()?)?;
        Ok(encoder)
    }
}

impl Refeed for Encoder {
    fn free_space(&mut self) -> &mut [u8] {
        match &self.partial {
            Some(message) => &mut self.out.buf[message.filled..message.payload_end()],
            None => self.staging.space(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Network;
    use crate::test_util::{cipher_pair, feed, open_all, v1_frame};

    const MAGIC: Magic = Network::Regtest.magic();

    fn messages() -> Vec<u8> {
        let mut input = v1_frame(MAGIC, "version", b"version payload");
        input.extend(v1_frame(MAGIC, "verack", b""));
        input.extend(v1_frame(MAGIC, "ping", &[1, 2, 3, 4, 5, 6, 7, 8]));
        input.extend(v1_frame(MAGIC, "block", &vec![0xab; 100_000]));
        input.extend(v1_frame(MAGIC, "tx", &[9; 300]));
        input
    }

    #[test]
    fn translates_v1_frames_to_packets_with_short_and_long_types() {
        let (sealer, mut opener) = cipher_pair();
        let mut encoder = Encoder::new(MAGIC, sealer);
        let (wire, events, result) = feed(&mut encoder, &messages(), usize::MAX);
        result.unwrap();
        assert_eq!(events.len(), 5);
        let packets = open_all(&mut opener, &wire);
        let mut version = vec![0u8];
        version.extend_from_slice(b"version\0\0\0\0\0version payload");
        assert_eq!(packets[0], (false, version));
        let mut verack = vec![0u8];
        verack.extend_from_slice(b"verack\0\0\0\0\0\0");
        assert_eq!(packets[1], (false, verack));
        assert_eq!(packets[2], (false, vec![18, 1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(packets[3].1[0], 2, "block has short ID 2");
        assert_eq!(packets[3].1.len(), 100_001);
        assert_eq!(packets[4].1[..2], [21, 9]);
        assert_eq!(encoder.partial_input(), 0);
    }

    /// Every flight (what one read produces, drained at once as a driver does) leaves at a
    /// bucket size; the reader skips the decoys and gets the messages unchanged.
    #[test]
    fn shaped_flights_are_bucket_sizes_and_decoys_are_skipped() {
        let input = messages();
        for chunk in [7, 24, 1000, 16 * 1024 + 1, usize::MAX] {
            let (sealer, mut opener) = cipher_pair();
            let mut encoder = Encoder::new(MAGIC, sealer);
            encoder.pad_flights_to_buckets();
            let mut wire = Vec::new();
            let mut fed = 0;
            while fed < input.len() {
                let space = encoder.input_space();
                let n = space.len().min(chunk).min(input.len() - fed);
                space[..n].copy_from_slice(&input[fed..fed + n]);
                fed += n;
                encoder.commit_input(n, &mut |_| {}).unwrap();
                let flight = encoder.output().len();
                if flight > 0 {
                    assert_eq!(
                        bucket_for(flight),
                        flight,
                        "chunk {chunk}: a flight of {flight}"
                    );
                }
                wire.extend_from_slice(encoder.output());
                encoder.consume_output(flight);
            }
            let messages: Vec<Vec<u8>> = open_all(&mut opener, &wire)
                .into_iter()
                .filter(|(decoy, _)| !decoy)
                .map(|(_, contents)| contents)
                .collect();
            let plain = open_all(
                &mut cipher_pair().1,
                &feed(
                    &mut Encoder::new(MAGIC, cipher_pair().0),
                    &input,
                    usize::MAX,
                )
                .0,
            );
            let plain: Vec<Vec<u8>> = plain.into_iter().map(|(_, c)| c).collect();
            assert_eq!(messages, plain, "chunk {chunk}: the same messages");
        }
    }

    #[test]
    fn buckets_leave_room_for_a_decoy() {
        assert_eq!(bucket_for(512), 512);
        assert_eq!(bucket_for(1), 512);
        assert_eq!(bucket_for(492), 512);
        assert_eq!(bucket_for(493), 1024, "no room for a 20-byte decoy in 512");
        assert_eq!(bucket_for(65_536), 65_536);
        assert_eq!(bucket_for(65_517), 131_072);
        assert_eq!(bucket_for(100_000), 131_072);
        assert_eq!(bucket_for(131_072), 131_072);
    }

    #[test]
    fn output_does_not_depend_on_how_input_is_split() {
        let input = messages();
        let whole = feed(
            &mut Encoder::new(MAGIC, cipher_pair().0),
            &input,
            usize::MAX,
        );
        for chunk in [1, 3, 23, 24, 25, 1000, 16 * 1024 + 1] {
            let split = feed(&mut Encoder::new(MAGIC, cipher_pair().0), &input, chunk);
            assert_eq!(split.0, whole.0, "chunk {chunk}");
            assert_eq!(split.1, whole.1, "chunk {chunk}");
        }
    }

    #[test]
    fn large_payloads_are_read_in_place() {
        let mut encoder = Encoder::new(MAGIC, cipher_pair().0);
        let frame = v1_frame(MAGIC, "block", &vec![7u8; 4_000_000]);
        // Header plus a little payload go through staging; then the pipe asks for the rest
        // of the payload in one piece, straight into its outbox.
        encoder.push(&frame[..100], &mut |_| {}).unwrap();
        assert_eq!(encoder.input_space().len(), frame.len() - 100);
        assert_eq!(encoder.partial_input(), 100);
        let mut events = Vec::new();
        encoder
            .push(&frame[100..], &mut |e| events.push(e))
            .unwrap();
        assert_eq!(encoder.output().len(), 3 + 1 + 1 + 4_000_000 + 16);
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn stops_taking_input_while_output_is_backed_up() {
        let mut encoder = Encoder::new(MAGIC, cipher_pair().0);
        let ping = v1_frame(MAGIC, "ping", &[0; 8]);
        let mut fed = 0;
        while !encoder.input_space().is_empty() {
            encoder.push(&ping, &mut |_| {}).unwrap();
            fed += 1;
            assert!(fed < 100_000, "no backpressure");
        }
        assert!(encoder.output().len() >= Outbox::HIGH_WATER);
        let pending = encoder.output().len();
        encoder.consume_output(pending);
        assert!(!encoder.input_space().is_empty());
    }

    #[test]
    fn rejects_bad_client_frames() {
        let mut bad_checksum = v1_frame(MAGIC, "tx", &[1, 2, 3]);
        let last = bad_checksum.len() - 1;
        bad_checksum[last] ^= 1;
        let wrong_magic = v1_frame(Network::Mainnet.magic(), "tx", &[1]);
        let mut oversized = v1_frame(MAGIC, "block", &[]);
        oversized[16..20].copy_from_slice(&4_000_001u32.to_le_bytes());
        let mut bad_command = v1_frame(MAGIC, "tx", &[]);
        bad_command[6] = 0x07;
        for (input, check) in [
            (bad_checksum, "checksum"),
            (wrong_magic, "magic"),
            (oversized, "4000000"),
            (bad_command, "command"),
        ] {
            let mut encoder = Encoder::new(MAGIC, cipher_pair().0);
            let (wire, _, result) = feed(&mut encoder, &input, usize::MAX);
            let error = result.unwrap_err().to_string();
            assert!(error.contains(check), "{error}");
            assert!(wire.is_empty(), "nothing of a bad frame is sent");
        }
    }
}
