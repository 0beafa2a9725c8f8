//! Capped byte streams for the guest's stdout and stderr.
//!
//! The guest may write as much as it likes; the host keeps the first `cap`
//! bytes, drops the rest and records that it did. The guest is never told
//! (a closed pipe would make Rust's `println!` panic and look like a crash).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::events::{Event, EventObserver};

#[derive(Default)]
struct Captured {
    buf: Vec<u8>,
    truncated: bool,
}

/// One capped stream; clones share the buffer.
#[derive(Clone)]
pub struct CappedOutput {
    stream: &'static str,
    cap: usize,
    captured: Arc<Mutex<Captured>>,
    /// Where to forward each kept chunk as it arrives, if anywhere.
    forward: Option<Arc<dyn EventObserver>>,
}

impl CappedOutput {
    /// A stream named `stream` (`stdout`/`stderr`) keeping `cap` bytes.
    /// With `forward`, kept bytes are also sent as [`Event::Output`]; the
    /// truncation itself is always reported to `events`.
    pub fn new(stream: &'static str, cap: usize, forward: Option<Arc<dyn EventObserver>>) -> Self {
        CappedOutput {
            stream,
            cap,
            captured: Arc::default(),
            forward,
        }
    }

    /// The bytes kept so far and whether any were dropped.
    pub fn contents(&self) -> (Vec<u8>, bool) {
        let c = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        (c.buf.clone(), c.truncated)
    }

    fn write(&self, data: &[u8]) {
        let mut c = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.cap.saturating_sub(c.buf.len());
        let kept = &data[..data.len().min(room)];
        c.buf.extend_from_slice(kept);
        let newly_truncated = kept.len() < data.len() && !c.truncated;
        c.truncated |= kept.len() < data.len();
        drop(c);
        if let Some(sink) = &self.forward {
            if !kept.is_empty() {
                sink.event(Event::Output {
                    stream: self.stream,
                    text: String::from_utf8_lossy(kept).into_owned(),
                });
            }
            if newly_truncated {
                sink.event(Event::Truncated {
                    stream: self.stream,
                    cap: self.cap,
                });
            }
        }
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_reports_truncation_once() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let e2 = events.clone();
        let sink: Arc<dyn EventObserver> = Arc::new(move |e: Event| e2.lock().unwrap().push(e));
        let out = CappedOutput::new("stdout", 5, Some(sink));
        out.write(b"abc");
        out.write(b"defgh");
        out.write(b"ijk");
        assert_eq!(out.contents(), (b"abcde".to_vec(), true));
        let ev = events.lock().unwrap();
        let truncations = ev
            .iter()
            .filter(|e| matches!(e, Event::Truncated { .. }))
            .count();
        assert_eq!(truncations, 1);
    }
}
