//! Where a guest's stdout and stderr go: bounded buffers in memory.
//!
//! A module's stdout is its result, so it [traps](Full::Trap) the guest once it would pass the
//! result limit: a guest that floods stdout stops at once instead of running to its deadline.
//! Logs (stderr, and a component's stdout) keep what fits and [drop](Full::Drop) the rest,
//! telling the guest its writes succeeded, as a pipe to a full log would for other runtimes.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// What a full capture does with more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// Refuse the write with a trap (results).
    Trap,
    /// Accept and drop it (logs).
    Drop,
}

#[derive(Default)]
struct Buffer {
    bytes: BytesMut,
    overflowed: bool,
}

/// A bounded, shared buffer that a guest's stream writes into. Clones share the buffer: the
/// store holds one, the runner reads another when the guest is done.
#[derive(Clone)]
pub(crate) struct Capture {
    buffer: Arc<Mutex<Buffer>>,
    limit: usize,
    full: Full,
}

/// The largest write a guest is allowed at once; it loops for more.
const PERMIT: usize = 1024 * 1024;

impl Capture {
    pub fn new(limit: usize, full: Full) -> Self {
        Capture {
            buffer: Arc::default(),
            limit,
            full,
        }
    }

    /// Takes what was written, and whether more was written than kept.
    pub fn take(&self) -> (Bytes, bool) {
        let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut b.bytes).freeze(), b.overflowed)
    }

    /// Whether more was written than the limit.
    #[cfg(test)]
    pub fn overflowed(&self) -> bool {
        self.buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .overflowed
    }

    /// Appends `data`; `Err` when it does not fit and this capture traps.
    fn append(&self, data: &[u8]) -> Result<(), ()> {
        let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.limit.saturating_sub(b.bytes.len());
        if data.len() <= room {
            b.bytes.extend_from_slice(data);
            return Ok(());
        }
        b.overflowed = true;
        match self.full {
            Full::Trap => Err(()),
            Full::Drop => {
                b.bytes.extend_from_slice(&data[..room]);
                Ok(())
            }
        }
    }

    fn error_message(&self) -> String {
        format!(
            "the function wrote more than {} bytes to stdout",
            self.limit
        )
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes)
            .map_err(|()| StreamError::trap(&self.error_message()))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(PERMIT)
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(
            self.append(buf)
                .map(|()| buf.len())
                .map_err(|()| io::Error::other(self.error_message())),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_keep_what_fits_and_results_refuse_more() {
        let mut log = Capture::new(4, Full::Drop);
        log.write(Bytes::from_static(b"abc")).unwrap();
        log.write(Bytes::from_static(b"def")).unwrap();
        assert_eq!(log.take(), (Bytes::from_static(b"abcd"), true));

        let mut out = Capture::new(4, Full::Trap);
        out.write(Bytes::from_static(b"abcd")).unwrap();
        assert!(!out.overflowed());
        assert!(matches!(
            out.write(Bytes::from_static(b"e")),
            Err(StreamError::Trap(_))
        ));
        assert!(out.overflowed());
        assert_eq!(out.take().0, Bytes::from_static(b"abcd"));
    }
}
