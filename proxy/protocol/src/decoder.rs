//! v2 -> v1: decrypts a v2 peer's packets and emits v1 messages.
//!
//! A packet's body (`header | type | payload | tag`) is placed in the outbox so that, for a
//! short message type, its payload starts exactly 24 bytes after the frame: after decryption
//! the v1 header is written in front of the payload and nothing moves. A long-form type
//! leaves a 12-byte gap, closed by the outbox.

use super::ProtocolError;
use super::buffers::{Outbox, Staging};
use super::cipher::{
    HEADER_LEN as PACKET_HEADER_LEN, LENGTH_LEN, MAX_CONTENTS_LEN, PacketOpener, TAG_LEN,
};
use super::message_type;
use super::network::Magic;
use super::pipe::{Event, Pipe};
use super::resume::{Reader, Refeed, ResumeError, Snapshot, Tag, refeed};
use super::v1;

/// Where a body starts in its frame: the v1 header (24) minus packet header and short type.
const BODY_OFFSET: usize = v1::HEADER_LEN - PACKET_HEADER_LEN - 1;

/// The remote's direction: v2 packets in, v1 messages out.
pub struct Decoder {
    magic: Magic,
    opener: PacketOpener,
    staging: Staging,
    out: Outbox,
    /// The peer's garbage: authenticated with its first packet, whatever that is.
    first_aad: Option<Vec<u8>>,
    awaiting_version: bool,
    /// Contents length of the packet being received, once its length field is decrypted.
    contents_len: Option<usize>,
    /// The packet whose body is being read straight into the outbox.
    partial: Option<PartialPacket>,
}

struct PartialPacket {
    frame_start: usize,
    body_start: usize,
    body_end: usize,
    filled: usize,
}

impl Decoder {
    /// A decoder for a session whose peer has yet to send its version packet.
    pub fn new(magic: Magic, opener: PacketOpener, peer_garbage: Vec<u8>) -> Self {
        Decoder {
            magic,
            opener,
            staging: Staging::default(),
            out: Outbox::default(),
            first_aad: Some(peer_garbage),
            awaiting_version: true,
            contents_len: None,
            partial: None,
        }
    }

    /// True once the peer's version packet has authenticated: the session is v2.
    pub fn version_received(&self) -> bool {
        !self.awaiting_version
    }

    fn process_staging(&mut self, events: &mut dyn FnMut(Event)) -> Result<(), ProtocolError> {
        while self.partial.is_none() {
            let contents_len = match self.contents_len {
                Some(len) => len,
                None => {
                    let Some(&length) = self.staging.data().first_chunk::<LENGTH_LEN>() else {
                        break;
                    };
                    self.staging.consume(LENGTH_LEN);
                    let len = self.opener.open_length(length);
                    if len > MAX_CONTENTS_LEN {
                        return Err(ProtocolError::V2PacketTooLarge(len));
                    }
                    self.contents_len = Some(len);
                    len
                }
            };
            let body_len = PACKET_HEADER_LEN + contents_len + TAG_LEN;
            let frame_start = self.out.begin_frame(BODY_OFFSET + body_len);
            let body_start = frame_start + BODY_OFFSET;
            let staged = self.staging.data();
            let available = staged.len().min(body_len);
            self.out.buf[body_start..][..available].copy_from_slice(&staged[..available]);
            self.staging.consume(available);

            let packet = PartialPacket {
                frame_start,
                body_start,
                body_end: body_start + body_len,
                filled: body_start + available,
            };
            if packet.filled == packet.body_end {
                self.open(packet, events)?;
            } else {
                self.partial = Some(packet);
            }
        }
        Ok(())
    }

    fn open(
        &mut self,
        packet: PartialPacket,
        events: &mut dyn FnMut(Event),
    ) -> Result<(), ProtocolError> {
        let aad = self.first_aad.take().unwrap_or_default();
        let body = &mut self.out.buf[packet.body_start..packet.body_end];
        let decoy = self.opener.open(&aad, body)?;
        self.contents_len = None;
        let contents_start = packet.body_start + PACKET_HEADER_LEN;
        let contents_end = packet.body_end - TAG_LEN;
        let contents_len = contents_end - contents_start;

        if decoy {
            self.out.discard_frame();
            events(Event::Decoy { contents_len });
            return Ok(());
        }
        if self.awaiting_version {
            // Contents of the version packet are reserved for future use: ignored.
            self.awaiting_version = false;
            self.out.discard_frame();
            events(Event::VersionPacket { contents_len });
            return Ok(());
        }
        let (command, type_len) =
            match message_type::decode(&self.out.buf[contents_start..contents_end]) {
                Ok(decoded) => decoded,
                Err(reason) => {
                    self.out.discard_frame();
                    events(Event::Dropped {
                        reason,
                        contents_len,
                    });
                    return Ok(());
                }
            };
        let payload_start = contents_start + type_len;
        let payload_len = contents_end - payload_start;
        if payload_len > v1::MAX_PAYLOAD_LEN {
            return Err(ProtocolError::V2PayloadTooLargeForV1 {
                command,
                len: payload_len,
            });
        }
        let header_start = payload_start - v1::HEADER_LEN;
        let (header, payload) =
            self.out.buf[header_start..contents_end].split_at_mut(v1::HEADER_LEN);
        let header: &mut [u8; v1::HEADER_LEN] = header.try_into().expect("split at HEADER_LEN");
        v1::Header::write(header, self.magic, &command, payload);
        self.out
            .finish_frame(packet.frame_start, header_start, contents_end);
        events(Event::Message {
            command,
            payload_len,
        });
        Ok(())
    }
}

impl Pipe for Decoder {
    fn output(&self) -> &[u8] {
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
            Some(packet) => {
                packet.filled += n;
                debug_assert!(packet.filled <= packet.body_end);
                if packet.filled == packet.body_end {
                    let packet = self.partial.take().expect("checked above");
                    self.open(packet, events)?;
                }
            }
            None => self.staging.fill(n),
        }
        self.process_staging(events)
    }

    fn partial_input(&self) -> usize {
        let length = if self.contents_len.is_some() {
            LENGTH_LEN
        } else {
            0
        };
        self.staging.data().len()
            + length
            + self.partial.as_ref().map_or(0, |p| p.filled - p.body_start)
    }

    fn release_idle_buffers(&mut self) {
        self.staging.release_if_empty();
        self.out.release_if_empty();
    }

    /// The unfinished packet goes as the bytes that came after its length: that length was
    /// decrypted already (the length cipher moved), so it goes as a number.
    fn pause(&self, snapshot: &mut Snapshot) {
        snapshot.tag(Tag::Decoder);
        snapshot.magic(self.magic);
        self.opener.pause(snapshot);
        snapshot.flag(self.first_aad.is_some());
        snapshot.bytes(&[self.first_aad.as_deref().unwrap_or_default()]);
        snapshot.flag(self.awaiting_version);
        snapshot.flag(self.contents_len.is_some());
        snapshot.u64(self.contents_len.unwrap_or_default() as u64);
        snapshot.bytes(&[self.out.pending()]);
        let body = self
            .partial
            .as_ref()
            .map_or(&[][..], |p| &self.out.buf[p.body_start..p.filled]);
        snapshot.bytes(&[body, self.staging.data()]);
    }
}

impl Decoder {
    pub(crate) fn resume(reader: &mut Reader<'_>) -> Result<Decoder, ResumeError> {
        let magic = reader.magic()?;
        let opener = PacketOpener::resume(reader)?;
        let has_aad = reader.flag()?;
        let aad = reader.bytes()?;
        if aad.len() > crate::MAX_GARBAGE_LEN {
            return Err(ResumeError::Invalid("garbage"));
        }
        let mut decoder = Decoder::new(magic, opener, aad.to_vec());
        if !has_aad {
            decoder.first_aad = None;
        }
        decoder.awaiting_version = reader.flag()?;
        let has_len = reader.flag()?;
        let len = reader.usize_at_most(MAX_CONTENTS_LEN, "packet length")?;
        decoder.contents_len = has_len.then_some(len);
        decoder.out = Outbox::holding(reader.bytes()?);
        refeed(&mut decoder, reader.bytes()?)?;
        Ok(decoder)
    }
}

impl Refeed for Decoder {
    fn free_space(&mut self) -> &mut [u8] {
        match &self.partial {
            Some(packet) => &mut self.out.buf[packet.filled..packet.body_end],
            None => self.staging.space(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message_type::UndecodableType;
    use crate::network::Network;
    use crate::test_util::{cipher_pair, feed, seal, v1_frame};

    const MAGIC: Magic = Network::Regtest.magic();
    const GARBAGE: &[u8] = b"the peer's garbage";

    fn short(id: u8, payload: &[u8]) -> Vec<u8> {
        let mut contents = vec![id];
        contents.extend_from_slice(payload);
        contents
    }

    fn long(command: &[u8; 12], payload: &[u8]) -> Vec<u8> {
        let mut contents = vec![0];
        contents.extend_from_slice(command);
        contents.extend_from_slice(payload);
        contents
    }

    /// A peer's stream: decoy (carrying the garbage as AAD), version, decoy, then messages.
    fn session(messages: &[Vec<u8>]) -> Vec<u8> {
        let (mut sealer, _) = cipher_pair();
        let mut wire = seal(&mut sealer, b"decoy before version", GARBAGE, true);
        wire.extend(seal(&mut sealer, b"", b"", false));
        wire.extend(seal(&mut sealer, &[0; 5000], b"", true));
        for contents in messages {
            wire.extend(seal(&mut sealer, contents, b"", false));
        }
        wire.extend(seal(&mut sealer, b"decoy at the end", b"", true));
        wire
    }

    fn decoder() -> Decoder {
        Decoder::new(MAGIC, cipher_pair().1, GARBAGE.to_vec())
    }

    #[test]
    fn skips_decoys_and_the_version_packet() {
        let ping = short(18, &[8; 8]);
        let version = long(b"version\0\0\0\0\0", b"hello");
        let block = short(2, &vec![0x5a; 70_000]);
        let wire = session(&[ping, version, block]);
        let mut decoder = decoder();
        let (v1, events, result) = feed(&mut decoder, &wire, usize::MAX);
        result.unwrap();
        assert!(decoder.version_received());
        let mut expected = v1_frame(MAGIC, "ping", &[8; 8]);
        expected.extend(v1_frame(MAGIC, "version", b"hello"));
        expected.extend(v1_frame(MAGIC, "block", &vec![0x5a; 70_000]));
        assert!(v1 == expected, "v1 output differs");
        let decoys = events
            .iter()
            .filter(|e| matches!(e, Event::Decoy { .. }))
            .count();
        assert_eq!(decoys, 3);
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::VersionPacket { .. }))
                .count(),
            1
        );
    }

    #[test]
    fn output_does_not_depend_on_how_input_is_split() {
        let messages = [
            short(19, &[1; 8]),
            long(b"sendheaders\0", b""),
            short(21, &[3; 1000]),
            long(b"wtxidrelay\0\0", &[4; 20_000]),
            short(14, &[5; 37]),
        ];
        let wire = session(&messages);
        let whole = feed(&mut decoder(), &wire, usize::MAX);
        whole.2.clone().unwrap();
        for chunk in [1, 2, 3, 4, 17, 21, 4096, 16 * 1024 + 3] {
            let split = feed(&mut decoder(), &wire, chunk);
            assert!(split.0 == whole.0, "chunk {chunk}: output differs");
            assert_eq!(split.1, whole.1, "chunk {chunk}");
        }
    }

    #[test]
    fn long_form_after_pending_output_stays_contiguous() {
        let wire = session(&[short(18, &[1; 8]), long(b"custom\0\0\0\0\0\0", &[2; 10])]);
        let mut decoder = decoder();
        // Feed everything without draining: the second frame must close its gap by moving.
        let mut events = Vec::new();
        assert_eq!(
            decoder.push(&wire, &mut |e| events.push(e)).unwrap(),
            wire.len()
        );
        let mut expected = v1_frame(MAGIC, "ping", &[1; 8]);
        expected.extend(v1_frame(MAGIC, "custom", &[2; 10]));
        assert_eq!(decoder.output(), &expected[..]);
    }

    #[test]
    fn proposed_short_ids_reach_the_client_as_their_command() {
        let wire = session(&[short(37, b"feature payload"), short(29, &[1, 2, 3])]);
        let (v1, _, result) = feed(&mut decoder(), &wire, 7);
        result.unwrap();
        let mut expected = v1_frame(MAGIC, "feature", b"feature payload");
        expected.extend(v1_frame(MAGIC, "uproof", &[1, 2, 3]));
        assert_eq!(v1, expected);
    }

    #[test]
    fn drops_messages_without_a_v1_command_and_goes_on() {
        let wire = session(&[
            short(38, b"unassigned"),
            vec![],
            vec![0, b'x'],
            long(b"bad\x01\0\0\0\0\0\0\0\0", b""),
            short(18, &[7; 8]),
        ]);
        let (v1, events, result) = feed(&mut decoder(), &wire, usize::MAX);
        result.unwrap();
        assert_eq!(v1, v1_frame(MAGIC, "ping", &[7; 8]));
        let dropped: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Dropped { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect();
        assert!(matches!(
            dropped[..],
            [
                UndecodableType::UnknownShortId(38),
                UndecodableType::Empty,
                UndecodableType::TruncatedLongForm,
                UndecodableType::InvalidCommand(_)
            ]
        ));
    }

    #[test]
    fn rejects_a_wrong_garbage_aad() {
        let wire = session(&[]);
        let mut decoder = Decoder::new(MAGIC, cipher_pair().1, b"other garbage".to_vec());
        let (_, _, result) = feed(&mut decoder, &wire, usize::MAX);
        assert_eq!(result, Err(ProtocolError::V2AuthenticationFailed));
    }

    #[test]
    fn rejects_tampering_mid_stream() {
        let mut wire = session(&[short(18, &[1; 8]), short(19, &[2; 8])]);
        // Inside the pong packet, which precedes the final decoy (36 bytes).
        let inside_pong = wire.len() - 36 - 10;
        wire[inside_pong] ^= 0x40;
        let (v1, _, result) = feed(&mut decoder(), &wire, usize::MAX);
        assert_eq!(result, Err(ProtocolError::V2AuthenticationFailed));
        assert_eq!(
            v1,
            v1_frame(MAGIC, "ping", &[1; 8]),
            "only authenticated messages pass"
        );
    }

    #[test]
    fn rejects_oversized_packets_before_reading_them() {
        let (mut sealer, _) = cipher_pair();
        let mut wire = seal(&mut sealer, b"", GARBAGE, false);
        let mut contents = vec![0u8; MAX_CONTENTS_LEN + 1];
        contents[0] = 2;
        let oversized = seal(&mut sealer, &contents, b"", false);
        // The length field alone is enough to refuse it.
        wire.extend_from_slice(&oversized[..LENGTH_LEN]);
        let (_, _, result) = feed(&mut decoder(), &wire, usize::MAX);
        assert_eq!(
            result,
            Err(ProtocolError::V2PacketTooLarge(MAX_CONTENTS_LEN + 1))
        );
    }

    #[test]
    fn rejects_payloads_too_large_for_v1() {
        let contents = short(2, &vec![0; v1::MAX_PAYLOAD_LEN + 1]);
        let wire = session(&[contents]);
        let (_, _, result) = feed(&mut decoder(), &wire, usize::MAX);
        assert!(matches!(
            result,
            Err(ProtocolError::V2PayloadTooLargeForV1 { .. })
        ));
    }
}
