//! The instance protocol (v1): length-prefixed binary frames over a Unix stream socket.
//!
//! ```text
//!  0               4      5                      13
//!  +---------------+------+----------------------+----------------------+
//!  | LEN (u32 BE)  | KIND | ID (u64 BE)          | PAYLOAD (LEN-9 bytes) |
//!  +---------------+------+----------------------+----------------------+
//! ```
//!
//! The instance sends READY once it is up; the invoker sends INIT (which code to load) and gets
//! INIT_OK or INIT_ERROR; then INVOKE frames are answered by RESULT or ERROR frames with the same
//! id. Logs are the instance's stdout and stderr, except in an instance that runs several
//! invocations at once (INIT's `concurrency` > 1): there the handler's output comes as LOG
//! frames carrying the invocation's id. The full description is docs/runtime-protocol.md.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes before a frame's payload: length, kind and id.
pub const HEADER_LEN: usize = 13;
/// Largest frame accepted from an instance.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// instance → invoker: the bootstrap is up.
    Ready = 1,
    /// invoker → instance: load this code.
    Init = 2,
    /// instance → invoker: the handler is loaded.
    InitOk = 3,
    /// instance → invoker: loading failed.
    InitError = 4,
    /// invoker → instance: run the handler on an event.
    Invoke = 5,
    /// instance → invoker: the handler's result.
    Result = 6,
    /// instance → invoker: the handler failed.
    Error = 7,
    /// instance → invoker: output of the invocation with this id (concurrent instances only);
    /// the payload is one byte, 1 for stdout or 2 for stderr, then the bytes written.
    Log = 8,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => FrameKind::Ready,
            2 => FrameKind::Init,
            3 => FrameKind::InitOk,
            4 => FrameKind::InitError,
            5 => FrameKind::Invoke,
            6 => FrameKind::Result,
            7 => FrameKind::Error,
            8 => FrameKind::Log,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it is.
    pub kind: FrameKind,
    /// The invocation it belongs to (0 outside invocations).
    pub id: u64,
    /// Its payload.
    pub payload: Bytes,
}

/// A frame that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The socket failed.
    #[error("instance channel: {0}")]
    Io(#[from] std::io::Error),
    /// The instance closed the channel.
    #[error("instance closed its channel")]
    Closed,
    /// The frame is larger than [`MAX_FRAME_LEN`] or shorter than its header.
    #[error("frame of {0} bytes is out of bounds")]
    BadLength(usize),
    /// Unknown frame kind.
    #[error("unknown frame kind {0}")]
    BadKind(u8),
}

/// Appends the header of a frame with a payload of `payload_len` bytes to `out`.
pub fn put_header(out: &mut Vec<u8>, kind: FrameKind, id: u64, payload_len: usize) {
    let len = (payload_len + 9) as u32;
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&id.to_be_bytes());
}

/// Encodes a whole frame.
pub fn encode(kind: FrameKind, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    put_header(&mut out, kind, id, payload.len());
    out.extend_from_slice(payload);
    out
}

/// What an INVOKE frame says besides the event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InvokeMeta<'a> {
    /// The activation id.
    pub request_id: &'a str,
    /// When the invocation times out (ms since epoch).
    pub deadline_ms: u64,
}

/// Encodes an INVOKE frame: `u32 META_LEN | meta JSON | event`.
pub fn encode_invoke(id: u64, meta: &InvokeMeta<'_>, event: &[u8]) -> Vec<u8> {
    // The meta is small and fixed in shape; serialising it cannot fail.
    let meta = serde_json::to_vec(meta).unwrap_or_default();
    let payload_len = 4 + meta.len() + event.len();
    let mut out = Vec::with_capacity(HEADER_LEN + payload_len);
    put_header(&mut out, FrameKind::Invoke, id, payload_len);
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(event);
    out
}

/// What INIT tells an instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InitMessage {
    /// Directory holding the function's code.
    pub code_dir: String,
    /// The handler string of the function.
    pub handler: String,
    /// Namespace of the function.
    pub namespace: String,
    /// Function name.
    pub function: String,
    /// Function version.
    pub version: u32,
    /// Memory limit in MiB.
    pub memory_mb: u32,
    /// Timeout in ms.
    pub timeout_ms: u64,
    /// Environment to set before loading the code.
    pub env: std::collections::BTreeMap<String, String>,
    /// How many invocations the instance may be given at once; above 1 it answers them as
    /// they finish and sends the handlers' output as LOG frames.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub concurrency: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// An error reported by an instance (INIT_ERROR or ERROR payload).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorPayload {
    /// Exception class or error kind.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Message.
    #[serde(default)]
    pub message: String,
    /// Stack trace.
    #[serde(default)]
    pub stack: Option<String>,
}

impl ErrorPayload {
    /// Parses an error payload; a payload that is not the expected JSON becomes the message.
    pub fn parse(payload: &[u8]) -> Self {
        serde_json::from_slice(payload).unwrap_or_else(|_| ErrorPayload {
            kind: "Error".into(),
            message: String::from_utf8_lossy(payload).into_owned(),
            stack: None,
        })
    }
}

/// Reads one frame. The buffer is reused across calls to avoid allocating per frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> Result<Frame, ProtocolError> {
    let mut header = [0u8; HEADER_LEN];
    if let Err(e) = r.read_exact(&mut header).await {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtocolError::Closed
        } else {
            e.into()
        });
    }
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if !(9..=MAX_FRAME_LEN).contains(&len) {
        return Err(ProtocolError::BadLength(len));
    }
    let kind = FrameKind::from_u8(header[4]).ok_or(ProtocolError::BadKind(header[4]))?;
    let mut id_bytes = [0u8; 8];
    id_bytes.copy_from_slice(&header[5..13]);
    let id = u64::from_be_bytes(id_bytes);
    let payload_len = len - 9;
    buf.clear();
    buf.resize(payload_len, 0);
    if let Err(e) = r.read_exact(&mut buf[..]).await {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtocolError::Closed
        } else {
            e.into()
        });
    }
    Ok(Frame {
        kind,
        id,
        payload: buf.split().freeze(),
    })
}

/// Takes one whole frame off the front of `buf`, if it holds one. Used by readers that must be
/// cancel-safe (`select!` over the channel and the log pipes): read with `read_buf` into `buf`,
/// then call this until it returns `None`.
pub fn parse_frame(buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(9..=MAX_FRAME_LEN).contains(&len) {
        return Err(ProtocolError::BadLength(len));
    }
    let kind = FrameKind::from_u8(buf[4]).ok_or(ProtocolError::BadKind(buf[4]))?;
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(4 + len);
    let mut id_bytes = [0u8; 8];
    id_bytes.copy_from_slice(&frame[5..13]);
    let _ = frame.split_to(HEADER_LEN);
    Ok(Some(Frame {
        kind,
        id: u64::from_be_bytes(id_bytes),
        payload: frame.freeze(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let mut wire = encode(FrameKind::Result, 42, b"{\"ok\":true}");
        wire.extend(encode(FrameKind::InitOk, 0, b""));
        let meta = InvokeMeta {
            request_id: "abc",
            deadline_ms: 7,
        };
        wire.extend(encode_invoke(9, &meta, b"\x00\xffbinary"));
        let mut r = &wire[..];
        let mut buf = BytesMut::new();
        let f = read_frame(&mut r, &mut buf).await.unwrap();
        assert_eq!(
            (f.kind, f.id, &f.payload[..]),
            (FrameKind::Result, 42, &b"{\"ok\":true}"[..])
        );
        let f = read_frame(&mut r, &mut buf).await.unwrap();
        assert_eq!((f.kind, f.payload.len()), (FrameKind::InitOk, 0));
        let f = read_frame(&mut r, &mut buf).await.unwrap();
        assert_eq!((f.kind, f.id), (FrameKind::Invoke, 9));
        let meta_len = u32::from_be_bytes(f.payload[..4].try_into().unwrap()) as usize;
        let parsed: InvokeMeta = serde_json::from_slice(&f.payload[4..4 + meta_len]).unwrap();
        assert_eq!(parsed, meta);
        assert_eq!(&f.payload[4 + meta_len..], b"\x00\xffbinary");
        assert!(matches!(
            read_frame(&mut r, &mut buf).await,
            Err(ProtocolError::Closed)
        ));
    }

    #[tokio::test]
    async fn refuses_bad_frames() {
        let mut buf = BytesMut::new();
        let huge = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        let mut wire = huge.to_vec();
        wire.extend([6u8; 9]);
        assert!(matches!(
            read_frame(&mut &wire[..], &mut buf).await,
            Err(ProtocolError::BadLength(_))
        ));
        let mut wire = encode(FrameKind::Result, 1, b"x");
        wire[4] = 99;
        assert!(matches!(
            read_frame(&mut &wire[..], &mut buf).await,
            Err(ProtocolError::BadKind(99))
        ));
        let wire = encode(FrameKind::Result, 1, b"truncated payload");
        assert!(matches!(
            read_frame(&mut &wire[..wire.len() - 3], &mut buf).await,
            Err(ProtocolError::Closed)
        ));
    }

    #[test]
    fn parses_frames_split_anywhere() {
        let mut wire = encode(FrameKind::Result, 5, b"hello");
        wire.extend(encode(FrameKind::Error, 6, b"{}"));
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(f) = parse_frame(&mut buf).unwrap() {
                got.push(f);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(f) = parse_frame(&mut buf).unwrap() {
                got.push(f);
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(&got[0].payload[..], b"hello");
            assert_eq!((got[1].kind, got[1].id), (FrameKind::Error, 6));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn error_payloads_parse_leniently() {
        let e = ErrorPayload::parse(br#"{"type":"ValueError","message":"bad","stack":"tb"}"#);
        assert_eq!(e.kind, "ValueError");
        assert_eq!(e.stack.as_deref(), Some("tb"));
        let e = ErrorPayload::parse(b"not json");
        assert_eq!(e.message, "not json");
    }
}
