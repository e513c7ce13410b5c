//! A bounded in-memory sink for a guest's stdout or stderr.
//!
//! Unlike wasmtime-wasi's `MemoryOutputPipe`, a full capture never fails the
//! guest's write: it keeps the first `capacity` bytes and remembers that more
//! were offered, so a chatty function is truncated, not crashed, and an
//! oversize response is reported as such after the run.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    overflowed: bool,
}

/// A sink keeping at most `capacity` bytes.
#[derive(Clone)]
pub struct Capture {
    capacity: usize,
    buffer: Arc<Mutex<Buffer>>,
}

impl Capture {
    /// A capture that keeps at most `capacity` bytes.
    pub fn new(capacity: usize) -> Capture {
        Capture {
            capacity,
            buffer: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bytes kept, and whether more were offered than kept.
    pub fn take(&self) -> (Vec<u8>, bool) {
        let mut buffer = self.lock();
        (std::mem::take(&mut buffer.bytes), buffer.overflowed)
    }

    fn write(&self, data: &[u8]) {
        let mut buffer = self.lock();
        let room = self.capacity.saturating_sub(buffer.bytes.len());
        if data.len() > room {
            buffer.overflowed = true;
        }
        buffer
            .bytes
            .extend_from_slice(&data[..data.len().min(room)]);
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_head_and_flags_overflow() {
        let capture = Capture::new(4);
        capture.write(b"ab");
        capture.write(b"cdef");
        assert_eq!(capture.take(), (b"abcd".to_vec(), true));
    }
}
