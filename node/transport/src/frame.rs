//! The wire format of session streams: a pure, incremental decoder (fuzzed) and its encoders.
//!
//! Every message of a session travels on a unidirectional QUIC stream that belongs to one
//! (session, sender, receiver) triple. The stream is a sequence of frames:
//!
//! ```text
//! frame   = length:u32 (big endian, counts the payload only) payload
//! payload = 0x01 version:u8 session-id:[u8; 32] protocol:u8        ; OPEN, first frame only
//!         | 0x02 kind:u8 body:[u8]                                   ; MESSAGE, every later frame
//! kind    = 0x00 broadcast | 0x01 point-to-point
//! ```
//!
//! The body is the protocol message in CBOR. A frame longer than the configured limit is refused
//! from its length prefix alone, before anything is buffered. Nothing in a frame names the
//! sender: the sender is the authenticated peer of the connection the stream arrived on.

use crate::session::{ProtocolKind, SessionId};

/// Version of the OPEN frame layout; a stream announcing any other version is refused.
pub const WIRE_VERSION: u8 = 1;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Bytes of a MESSAGE payload before its body.
pub const MESSAGE_HEADER: usize = 2;

const TAG_OPEN: u8 = 0x01;
const TAG_MESSAGE: u8 = 0x02;
const OPEN_LEN: usize = 1 + 1 + 32 + 1;

/// How a message was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Sent to every other participant.
    Broadcast,
    /// Sent to this participant only.
    P2p,
}

impl MessageKind {
    fn code(self) -> u8 {
        match self {
            MessageKind::Broadcast => 0,
            MessageKind::P2p => 1,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(MessageKind::Broadcast),
            1 => Some(MessageKind::P2p),
            _ => None,
        }
    }
}

/// The first frame of a stream: which session the stream belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOpen {
    /// The session.
    pub session: SessionId,
    /// The protocol the sender runs in it.
    pub protocol: ProtocolKind,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Names the stream's session.
    Open(StreamOpen),
    /// One protocol message.
    Message {
        /// How it was sent.
        kind: MessageKind,
        /// The CBOR-encoded protocol message.
        body: Vec<u8>,
    },
}

/// A frame that breaks the wire format; the peer that sent it is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A frame with an empty payload.
    #[error("empty frame")]
    Empty,
    /// The payload starts with an unknown tag.
    #[error("unknown frame tag {0:#04x}")]
    UnknownTag(u8),
    /// The OPEN frame announces an unsupported wire version.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// The OPEN frame has the wrong length.
    #[error("OPEN frame of {0} bytes, expected {OPEN_LEN}")]
    BadOpenLength(usize),
    /// The OPEN frame names an unknown protocol.
    #[error("unknown protocol code {0}")]
    UnknownProtocol(u8),
    /// A MESSAGE frame without its kind byte.
    #[error("MESSAGE frame without a kind")]
    MissingKind,
    /// A MESSAGE frame with an unknown kind.
    #[error("unknown message kind {0}")]
    UnknownMessageKind(u8),
    /// The stream does not start with OPEN.
    #[error("stream does not start with an OPEN frame")]
    OpenExpected,
    /// A second OPEN on the same stream.
    #[error("second OPEN frame on one stream")]
    DuplicateOpen,
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({0} bytes left over)")]
    Truncated(usize),
}

/// Encodes the OPEN frame.
pub fn encode_open(open: &StreamOpen) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEN_PREFIX + OPEN_LEN);
    // OPEN_LEN is a small constant; the cast cannot truncate.
    out.extend_from_slice(&(OPEN_LEN as u32).to_be_bytes());
    out.push(TAG_OPEN);
    out.push(WIRE_VERSION);
    out.extend_from_slice(open.session.as_bytes());
    out.push(open.protocol.code());
    out
}

/// Encodes a MESSAGE frame; refuses bodies that would exceed `max` (the caller's limit).
pub fn encode_message(kind: MessageKind, body: &[u8], max: u32) -> Result<Vec<u8>, FrameError> {
    let len = body.len().saturating_add(MESSAGE_HEADER);
    let len32 = u32::try_from(len)
        .ok()
        .filter(|l| *l <= max)
        .ok_or(FrameError::TooLarge {
            len: len as u64,
            max,
        })?;
    let mut out = Vec::with_capacity(LEN_PREFIX + len);
    out.extend_from_slice(&len32.to_be_bytes());
    out.push(TAG_MESSAGE);
    out.push(kind.code());
    out.extend_from_slice(body);
    Ok(out)
}

/// Decodes one payload (the bytes after the length prefix).
pub fn decode_payload(payload: &[u8]) -> Result<Frame, FrameError> {
    let (&tag, rest) = payload.split_first().ok_or(FrameError::Empty)?;
    match tag {
        TAG_OPEN => {
            if payload.len() != OPEN_LEN {
                return Err(FrameError::BadOpenLength(payload.len()));
            }
            let (&version, rest) = rest.split_first().ok_or(FrameError::BadOpenLength(1))?;
            if version != WIRE_VERSION {
                return Err(FrameError::UnsupportedVersion(version));
            }
            let (id, rest) = rest
                .split_first_chunk::<32>()
                .ok_or(FrameError::BadOpenLength(payload.len()))?;
            let &[code] = rest else {
                return Err(FrameError::BadOpenLength(payload.len()));
            };
            let protocol =
                ProtocolKind::from_code(code).ok_or(FrameError::UnknownProtocol(code))?;
            Ok(Frame::Open(StreamOpen {
                session: SessionId::from_bytes(*id),
                protocol,
            }))
        }
        TAG_MESSAGE => {
            let (&code, body) = rest.split_first().ok_or(FrameError::MissingKind)?;
            let kind = MessageKind::from_code(code).ok_or(FrameError::UnknownMessageKind(code))?;
            Ok(Frame::Message {
                kind,
                body: body.to_vec(),
            })
        }
        other => Err(FrameError::UnknownTag(other)),
    }
}

/// Incremental decoder of one session stream: feed it bytes as they arrive, take frames out.
/// It enforces the stream grammar (OPEN first, then only MESSAGE) and the size limit, and
/// never buffers more than one frame beyond what was fed. Once it has returned an error it
/// returns that error forever.
#[derive(Debug)]
pub struct FrameDecoder {
    max: u32,
    buf: Vec<u8>,
    opened: bool,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder that refuses frames over `max` payload bytes.
    pub fn new(max: u32) -> Self {
        Self {
            max,
            buf: Vec::new(),
            opened: false,
            failed: None,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes fed but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.next_inner();
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
        }
        result
    }

    /// Called at the end of the stream: an error if a partial frame is left over.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.buf.len() {
            0 => Ok(()),
            n => Err(FrameError::Truncated(n)),
        }
    }

    fn next_inner(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(prefix) = self.buf.first_chunk::<LEN_PREFIX>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        if len > self.max {
            return Err(FrameError::TooLarge {
                len: u64::from(len),
                max: self.max,
            });
        }
        // len <= max <= u32::MAX, which fits usize on every supported target.
        let end = LEN_PREFIX + len as usize;
        let Some(payload) = self.buf.get(LEN_PREFIX..end) else {
            return Ok(None);
        };
        let frame = decode_payload(payload)?;
        match (&frame, self.opened) {
            (Frame::Open(_), false) => self.opened = true,
            (Frame::Open(_), true) => return Err(FrameError::DuplicateOpen),
            (Frame::Message { .. }, false) => return Err(FrameError::OpenExpected),
            (Frame::Message { .. }, true) => {}
        }
        self.buf.drain(..end);
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> StreamOpen {
        StreamOpen {
            session: SessionId::from_bytes([7; 32]),
            protocol: ProtocolKind::Sign,
        }
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let mut wire = encode_open(&open());
        wire.extend(encode_message(MessageKind::Broadcast, b"hello", 1024).unwrap());
        wire.extend(encode_message(MessageKind::P2p, b"", 1024).unwrap());
        let mut d = FrameDecoder::new(1024);
        let mut frames = Vec::new();
        for b in &wire {
            d.feed(&[*b]);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        d.finish().unwrap();
        assert_eq!(
            frames,
            vec![
                Frame::Open(open()),
                Frame::Message {
                    kind: MessageKind::Broadcast,
                    body: b"hello".to_vec()
                },
                Frame::Message {
                    kind: MessageKind::P2p,
                    body: vec![]
                },
            ]
        );
    }

    #[test]
    fn wire_bytes_are_pinned() {
        let wire = encode_open(&open());
        assert_eq!(hex::encode(&wire[..6]), "000000230101");
        assert_eq!(wire.len(), 4 + 35);
        assert_eq!(*wire.last().unwrap(), ProtocolKind::Sign.code());
        let m = encode_message(MessageKind::P2p, &[0xaa], 16).unwrap();
        assert_eq!(m, vec![0, 0, 0, 3, 2, 1, 0xaa]);
    }

    #[test]
    fn oversized_refused_from_prefix() {
        let mut d = FrameDecoder::new(100);
        d.feed(&encode_open(&open()));
        assert!(matches!(d.next_frame(), Ok(Some(Frame::Open(_)))));
        d.feed(&101u32.to_be_bytes());
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
        // Sticky.
        d.feed(&[0; 10]);
        assert!(d.next_frame().is_err());
        assert!(encode_message(MessageKind::P2p, &[0; 99], 100).is_err());
        assert!(encode_message(MessageKind::P2p, &[0; 98], 100).is_ok());
    }

    #[test]
    fn grammar_enforced() {
        let mut d = FrameDecoder::new(100);
        d.feed(&encode_message(MessageKind::P2p, b"x", 100).unwrap());
        assert_eq!(d.next_frame(), Err(FrameError::OpenExpected));

        let mut d = FrameDecoder::new(100);
        d.feed(&encode_open(&open()));
        d.feed(&encode_open(&open()));
        assert!(d.next_frame().unwrap().is_some());
        assert_eq!(d.next_frame(), Err(FrameError::DuplicateOpen));

        let mut bad_version = encode_open(&open());
        bad_version[5] = 9;
        let mut d = FrameDecoder::new(100);
        d.feed(&bad_version);
        assert_eq!(d.next_frame(), Err(FrameError::UnsupportedVersion(9)));

        for (payload, err) in [
            (vec![], FrameError::Empty),
            (vec![0x07], FrameError::UnknownTag(7)),
            (vec![0x02], FrameError::MissingKind),
            (vec![0x02, 0x05], FrameError::UnknownMessageKind(5)),
            (vec![0x01, 0x01], FrameError::BadOpenLength(2)),
        ] {
            assert_eq!(decode_payload(&payload), Err(err));
        }
        let mut unknown_proto = encode_open(&open());
        *unknown_proto.last_mut().unwrap() = 0xee;
        assert_eq!(
            decode_payload(&unknown_proto[4..]),
            Err(FrameError::UnknownProtocol(0xee))
        );
    }

    #[test]
    fn truncated_stream_detected() {
        let mut d = FrameDecoder::new(100);
        let wire = encode_open(&open());
        d.feed(&wire[..10]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated(10)));
    }
}
