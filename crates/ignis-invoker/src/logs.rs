//! Collecting an activation's log lines from an instance's stdout and stderr pipes, and the
//! [`LogHub`] that streams them live to whoever follows a function's logs.
//!
//! ```text
//!  instance pipes ─▶ LogCollector ─┬─▶ activation record (at the end)
//!                                  └─▶ LiveTap ─▶ broadcast of (namespace, function) ─▶ followers
//! ```
//!
//! The tap exists only while someone follows the function: with no follower anywhere, an
//! invocation checks one atomic and nothing more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use ignis_core::{ActivationId, FunctionLogLine, LogLine, LogStream, MAX_LOG_BYTES, now_ms};
use tokio::sync::broadcast;

/// Longest line kept whole; a longer run without a newline is cut into lines of this size.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Lines of one activation, capped at [`MAX_LOG_BYTES`]; what passes the cap is dropped and
/// counted as truncation.
#[derive(Debug, Default)]
pub struct LogCollector {
    lines: Vec<LogLine>,
    partial: [Vec<u8>; 2],
    bytes: usize,
    truncated: bool,
    tap: Option<LiveTap>,
}

/// Lines buffered per follower of a function; a follower that falls further behind is told
/// how many it missed.
const FOLLOW_BUFFER: usize = 1024;

/// Where one activation's lines go live.
#[derive(Debug, Clone)]
pub struct LiveTap {
    sender: broadcast::Sender<Arc<FunctionLogLine>>,
    activation_id: ActivationId,
    version: u32,
}

type Channels = HashMap<String, HashMap<String, broadcast::Sender<Arc<FunctionLogLine>>>>;

/// The live log channels, one per followed function, made on first follow and dropped with
/// their last follower.
#[derive(Debug, Default)]
pub struct LogHub {
    followers: AtomicUsize,
    channels: RwLock<Channels>,
}

/// A follower of one function's logs; unsubscribes when dropped.
#[derive(Debug)]
pub struct LogFollower {
    rx: Option<broadcast::Receiver<Arc<FunctionLogLine>>>,
    hub: Arc<LogHub>,
    namespace: String,
    function: String,
}

/// What a follower gets next.
#[derive(Debug)]
pub enum Followed {
    /// A line.
    Line(Arc<FunctionLogLine>),
    /// This many lines were dropped because the follower was too slow.
    Missed(u64),
}

impl LogFollower {
    /// The next line, waiting for one.
    pub async fn next(&mut self) -> Followed {
        let rx = self.rx.as_mut().expect("receiver held until drop");
        loop {
            match rx.recv().await {
                Ok(line) => return Followed::Line(line),
                Err(broadcast::error::RecvError::Lagged(n)) => return Followed::Missed(n),
                // The hub keeps the sender while this receiver exists: cannot happen, but
                // waiting forever is the right answer if it did.
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

impl Drop for LogFollower {
    fn drop(&mut self) {
        drop(self.rx.take());
        self.hub.followers.fetch_sub(1, Ordering::Relaxed);
        let mut channels = self.hub.channels.write().unwrap();
        if let Some(fns) = channels.get_mut(&self.namespace) {
            if fns
                .get(&self.function)
                .is_some_and(|tx| tx.receiver_count() == 0)
            {
                fns.remove(&self.function);
            }
            if fns.is_empty() {
                channels.remove(&self.namespace);
            }
        }
    }
}

impl LogHub {
    /// Follows the logs of a function (every version, every instance) from now on.
    pub fn follow(self: &Arc<Self>, namespace: &str, function: &str) -> LogFollower {
        let mut channels = self.channels.write().unwrap();
        let rx = channels
            .entry(namespace.to_string())
            .or_default()
            .entry(function.to_string())
            .or_insert_with(|| broadcast::channel(FOLLOW_BUFFER).0)
            .subscribe();
        self.followers.fetch_add(1, Ordering::Relaxed);
        LogFollower {
            rx: Some(rx),
            hub: self.clone(),
            namespace: namespace.to_string(),
            function: function.to_string(),
        }
    }

    /// The tap of an activation of a followed function; `None` (one atomic load) when nobody
    /// follows anything.
    pub fn tap(
        &self,
        namespace: &str,
        function: &str,
        activation_id: ActivationId,
        version: u32,
    ) -> Option<LiveTap> {
        if self.followers.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let channels = self.channels.read().unwrap();
        let sender = channels.get(namespace)?.get(function)?.clone();
        Some(LiveTap {
            sender,
            activation_id,
            version,
        })
    }
}

fn slot(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

impl LogCollector {
    /// A collector whose lines also go to a live tap.
    pub fn tapped(tap: Option<LiveTap>) -> Self {
        LogCollector {
            tap,
            ..LogCollector::default()
        }
    }

    /// Sends this collector's lines from now on to `tap` too.
    pub fn set_tap(&mut self, tap: Option<LiveTap>) {
        self.tap = tap;
    }

    /// Adds bytes read from `stream`.
    pub fn push(&mut self, stream: LogStream, mut data: &[u8]) {
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            let (line, rest) = data.split_at(pos);
            self.partial[slot(stream)].extend_from_slice(line);
            self.emit(stream);
            data = &rest[1..];
        }
        let partial = &mut self.partial[slot(stream)];
        partial.extend_from_slice(data);
        if partial.len() >= MAX_LINE_BYTES {
            self.emit(stream);
        }
    }

    fn emit(&mut self, stream: LogStream) {
        let raw = std::mem::take(&mut self.partial[slot(stream)]);
        if self.truncated {
            return;
        }
        if self.bytes + raw.len() > MAX_LOG_BYTES {
            self.truncated = true;
            return;
        }
        self.bytes += raw.len();
        let line = match String::from_utf8(raw) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        let ts_ms = now_ms();
        if let Some(tap) = &self.tap {
            // No follower left: the send fails, and that is fine.
            let _ = tap.sender.send(Arc::new(FunctionLogLine {
                ts_ms,
                activation_id: tap.activation_id,
                version: tap.version,
                stream,
                line: line.clone(),
            }));
        }
        self.lines.push(LogLine {
            ts_ms,
            stream,
            line,
        });
    }

    /// The last `n` stderr lines joined, for error messages.
    pub fn stderr_tail(&self, n: usize) -> String {
        let mut tail: Vec<&str> = self
            .lines
            .iter()
            .rev()
            .filter(|l| l.stream == LogStream::Stderr)
            .take(n)
            .map(|l| l.line.as_str())
            .collect();
        tail.reverse();
        tail.join("\n")
    }

    /// Whether any line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.lines.iter().any(|l| l.line.contains(needle))
    }

    /// Ends collection: unfinished lines become lines. Returns the lines and whether some
    /// were dropped.
    pub fn finish(mut self) -> (Vec<LogLine>, bool) {
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            if !self.partial[slot(stream)].is_empty() {
                self.emit(stream);
            }
        }
        (self.lines, self.truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_reads() {
        let mut c = LogCollector::default();
        c.push(LogStream::Stdout, b"hel");
        c.push(LogStream::Stderr, b"oops\n");
        c.push(LogStream::Stdout, b"lo\nwor");
        let (lines, truncated) = c.finish();
        let got: Vec<_> = lines.iter().map(|l| (l.stream, l.line.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (LogStream::Stderr, "oops"),
                (LogStream::Stdout, "hello"),
                (LogStream::Stdout, "wor")
            ]
        );
        assert!(!truncated);
    }

    #[test]
    fn caps_and_marks_truncation() {
        let mut c = LogCollector::default();
        let line = vec![b'x'; 1000];
        for _ in 0..2000 {
            c.push(LogStream::Stdout, &line);
            c.push(LogStream::Stdout, b"\n");
        }
        let (lines, truncated) = c.finish();
        assert!(truncated);
        let total: usize = lines.iter().map(|l| l.line.len()).sum();
        assert!(total <= MAX_LOG_BYTES);
        assert!(lines.len() > 1000);
    }

    #[tokio::test]
    async fn followers_get_lines_live_and_leave_nothing_behind() {
        let hub = Arc::new(LogHub::default());
        let id = ActivationId::new();
        assert!(hub.tap("ns", "f", id, 1).is_none());
        let mut follower = hub.follow("ns", "f");
        assert!(hub.tap("ns", "other", id, 1).is_none());
        let mut c = LogCollector::tapped(hub.tap("ns", "f", id, 3));
        c.push(LogStream::Stdout, b"hello\npart");
        match follower.next().await {
            Followed::Line(l) => {
                assert_eq!((l.line.as_str(), l.version), ("hello", 3));
                assert_eq!(l.activation_id, id);
            }
            other => panic!("{other:?}"),
        }
        let (lines, _) = c.finish();
        assert_eq!(lines.len(), 2);
        match follower.next().await {
            Followed::Line(l) => assert_eq!(l.line, "part"),
            other => panic!("{other:?}"),
        }
        drop(follower);
        assert!(hub.channels.read().unwrap().is_empty());
        assert!(hub.tap("ns", "f", id, 1).is_none());
    }

    #[test]
    fn long_lines_are_cut_and_bad_utf8_replaced() {
        let mut c = LogCollector::default();
        c.push(LogStream::Stdout, &vec![b'a'; MAX_LINE_BYTES + 10]);
        c.push(LogStream::Stdout, b"\xff\n");
        let (lines, _) = c.finish();
        assert_eq!(lines[0].line.len(), MAX_LINE_BYTES + 10);
        assert_eq!(lines[1].line, "\u{fffd}");
    }
}
