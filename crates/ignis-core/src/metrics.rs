//! Metric primitives and the Prometheus text encoder: a counter and a histogram made of
//! atomics (updating one takes no lock and allocates nothing), and [`Exposition`], which
//! writes them out in the Prometheus text format (version 0.0.4) when `/metrics` is scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the buckets of every duration histogram: 1 ms to 1 minute.
pub const DURATION_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A histogram of durations over [`DURATION_BUCKETS`]. Observing is a few relaxed atomic adds.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Counts one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// How many durations were observed.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Writes metric families in the Prometheus text format.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// Label values are escaped as the text format requires: backslash, double quote, newline.
fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn labels(pairs: &[(&str, &str)], extra: Option<(&str, &str)>, out: &mut String) {
    if pairs.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in pairs.iter().chain(extra.iter()).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape(v, out);
        out.push('"');
    }
    out.push('}');
}

impl Exposition {
    /// Starts a family: its `# HELP` and `# TYPE` lines. `kind` is `counter`, `gauge` or
    /// `histogram`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of a counter or gauge.
    pub fn sample(&mut self, name: &str, pairs: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        labels(pairs, None, &mut self.out);
        let _ = writeln!(self.out, " {value}");
    }

    /// The `_bucket`, `_sum` and `_count` samples of a histogram.
    pub fn histogram(&mut self, name: &str, pairs: &[(&str, &str)], h: &Histogram) {
        let mut cumulative = 0;
        let mut le = String::new();
        for (i, bucket) in h.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            le.clear();
            match DURATION_BUCKETS.get(i) {
                Some(b) => {
                    let _ = write!(le, "{b}");
                }
                None => le.push_str("+Inf"),
            }
            let _ = write!(self.out, "{name}_bucket");
            labels(pairs, Some(("le", &le)), &mut self.out);
            let _ = writeln!(self.out, " {cumulative}");
        }
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = write!(self.out, "{name}_sum");
        labels(pairs, None, &mut self.out);
        let _ = writeln!(self.out, " {sum}");
        let _ = write!(self.out, "{name}_count");
        labels(pairs, None, &mut self.out);
        let _ = writeln!(self.out, " {cumulative}");
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_cumulative_and_escaped() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let mut e = Exposition::default();
        e.family("x_seconds", "histogram", "test");
        e.histogram("x_seconds", &[("function", "a\"b")], &h);
        let text = e.finish();
        assert!(text.contains("# TYPE x_seconds histogram\n"), "{text}");
        assert!(
            text.contains("x_seconds_bucket{function=\"a\\\"b\",le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{function=\"a\\\"b\",le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{function=\"a\\\"b\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_sum{function=\"a\\\"b\"} 100.0035\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_count{function=\"a\\\"b\"} 3\n"),
            "{text}"
        );
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn samples_without_labels() {
        let mut e = Exposition::default();
        e.sample("up", &[], 1.0);
        e.sample("g", &[("a", "x\ny")], 2.5);
        assert_eq!(e.finish(), "up 1\ng{a=\"x\\ny\"} 2.5\n");
    }
}
