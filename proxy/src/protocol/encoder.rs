//! v1 -> v2: reads a v1 client's messages and emits encrypted v2 packets.
//!
//! A v1 frame is `header(24) | payload`; its packet is
//! `length(3) | header(1) | type(1 or 13) | payload | tag(16)`. Each packet is assembled in
//! the outbox with the payload at its final offset and then sealed in place.

use super::ProtocolError;
use super::buffers::{Outbox, Staging};
use super::cipher::{
    HEADER_LEN as PACKET_HEADER_LEN, LENGTH_LEN, PacketSealer, TAG_LEN, packet_len,
};
use super::message_type;
use super::network::Magic;
use super::pipe::{Event, Pipe};
use super::v1;

pub struct Encoder {
    magic: Magic,
    sealer: PacketSealer,
    staging: Staging,
    out: Outbox,
    /// The message whose payload is being read straight into the outbox.
    partial: Option<PartialMessage>,
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
        }
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
        events(Event::Message {
            command: message.header.command,
            payload_len: message.header.payload_len,
        });
        Ok(())
    }
}

impl Pipe for Encoder {
    fn output(&self) -> &[u8] {
        self.out.pending()
    }

    fn consume_output(&mut self, n: usize) {
        self.out.consume(n);
    }

    fn input_space(&mut self) -> &mut [u8] {
        match &self.partial {
            Some(message) => &mut self.out.buf[message.filled..message.payload_end()],
            None if self.out.pending().len() >= Outbox::HIGH_WATER => &mut [],
            None => self.staging.space(),
        }
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
        self.process_staging(events)
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
}
