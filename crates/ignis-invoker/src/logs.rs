//! Collecting an activation's log lines from an instance's stdout and stderr pipes.

use ignis_core::{LogLine, LogStream, MAX_LOG_BYTES, now_ms};

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
}

fn slot(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

impl LogCollector {
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
        self.lines.push(LogLine {
            ts_ms: now_ms(),
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
