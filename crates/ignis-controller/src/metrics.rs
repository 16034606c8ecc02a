//! Counters of the control plane, rendered as Prometheus text on scrape.
//!
//! Each function has one [`FunctionMetrics`] (atomics only), found once per invocation by a
//! read-locked lookup keyed by `&str` (no allocation); it points at its namespace's
//! [`NamespaceMetrics`]. The series are bounded: one set per function that exists (functions
//! are bounded by namespace quotas) with fixed label values (6 statuses × cold/warm, 3
//! throttle reasons). A deleted function's series go with it, a deleted namespace's too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ignis_core::Status;
use ignis_core::metrics::{Exposition, Histogram};

/// Why an invocation was refused with 429.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Throttle {
    /// The function's instances and queue were full.
    Concurrency = 0,
    /// The invoker's memory budget was taken by busy instances.
    Memory = 1,
    /// The namespace was at a quota.
    Quota = 2,
}

const THROTTLE_REASONS: [&str; 3] = ["concurrency", "memory", "quota"];

/// Metering of one namespace.
#[derive(Debug, Default)]
pub(crate) struct NamespaceMetrics {
    /// Billed MB-milliseconds (memory_mb × billed_ms), exact.
    mb_ms: AtomicU64,
}

/// Counters of one function (all its versions).
#[derive(Debug, Default)]
pub(crate) struct FunctionMetrics {
    /// `[status as usize][cold as usize]`.
    invocations: [[AtomicU64; 2]; Status::ALL.len()],
    duration: Histogram,
    init: Histogram,
    throttles: [AtomicU64; 3],
    namespace: Arc<NamespaceMetrics>,
}

impl FunctionMetrics {
    /// Counts a finished invocation.
    pub fn finished(
        &self,
        status: Status,
        cold: bool,
        duration: std::time::Duration,
        init: std::time::Duration,
        mb_ms: u64,
    ) {
        self.invocations[status as usize][cold as usize].fetch_add(1, Ordering::Relaxed);
        self.duration.observe(duration);
        if cold {
            self.init.observe(init);
        }
        self.namespace.mb_ms.fetch_add(mb_ms, Ordering::Relaxed);
    }

    /// Counts a refusal (429).
    pub fn throttled(&self, why: Throttle) {
        self.throttles[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The metrics of every function and namespace.
#[derive(Default)]
pub(crate) struct Metrics {
    functions: RwLock<HashMap<String, HashMap<String, Arc<FunctionMetrics>>>>,
    namespaces: RwLock<HashMap<String, Arc<NamespaceMetrics>>>,
}

/// What the controller adds to a scrape that is not kept here: gauges read at scrape time.
pub(crate) struct Gauges {
    pub in_flight: usize,
    pub async_backlog: Vec<(String, u64)>,
}

impl Metrics {
    /// The metrics of a function, made on first use.
    pub fn function(&self, ns: &str, name: &str) -> Arc<FunctionMetrics> {
        if let Some(m) = self
            .functions
            .read()
            .unwrap()
            .get(ns)
            .and_then(|f| f.get(name))
        {
            return m.clone();
        }
        let namespace = self
            .namespaces
            .write()
            .unwrap()
            .entry(ns.to_string())
            .or_default()
            .clone();
        self.functions
            .write()
            .unwrap()
            .entry(ns.to_string())
            .or_default()
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(FunctionMetrics {
                    namespace,
                    ..FunctionMetrics::default()
                })
            })
            .clone()
    }

    /// Drops a deleted function's series.
    pub fn forget_function(&self, ns: &str, name: &str) {
        if let Some(f) = self.functions.write().unwrap().get_mut(ns) {
            f.remove(name);
        }
    }

    /// Drops a deleted namespace's series.
    pub fn forget_namespace(&self, ns: &str) {
        self.functions.write().unwrap().remove(ns);
        self.namespaces.write().unwrap().remove(ns);
    }

    /// Writes the control plane's families.
    pub fn render(&self, e: &mut Exposition, gauges: &Gauges) {
        let functions: Vec<(String, String, Arc<FunctionMetrics>)> = {
            let map = self.functions.read().unwrap();
            let mut all: Vec<_> = map
                .iter()
                .flat_map(|(ns, fs)| {
                    fs.iter()
                        .map(|(name, m)| (ns.clone(), name.clone(), m.clone()))
                })
                .collect();
            all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            all
        };
        e.family(
            "ignis_function_invocations_total",
            "counter",
            "Invocations that ran, by function, status and start (cold or warm).",
        );
        for (ns, name, m) in &functions {
            for (i, status) in Status::ALL.iter().enumerate() {
                for (cold, start) in [(0, "warm"), (1, "cold")] {
                    let n = m.invocations[i][cold].load(Ordering::Relaxed);
                    if n == 0 {
                        continue;
                    }
                    e.sample(
                        "ignis_function_invocations_total",
                        &[
                            ("namespace", ns),
                            ("function", name),
                            ("status", status.as_str()),
                            ("start", start),
                        ],
                        n as f64,
                    );
                }
            }
        }
        type Pick = fn(&FunctionMetrics) -> &Histogram;
        let histograms: [(&str, &str, Pick); 2] = [
            (
                "ignis_function_duration_seconds",
                "Time from acceptance to the end of an invocation (queue, init and run).",
                |m| &m.duration,
            ),
            (
                "ignis_function_init_duration_seconds",
                "Time creating an instance and loading the code, for cold starts.",
                |m| &m.init,
            ),
        ];
        for (name, help, pick) in histograms {
            e.family(name, "histogram", help);
            for (ns, f, m) in &functions {
                e.histogram(name, &[("namespace", ns), ("function", f)], pick(m));
            }
        }
        e.family(
            "ignis_function_throttles_total",
            "counter",
            "Invocations refused with 429, by reason: concurrency (instances and queue full), memory (budget taken by busy instances), quota (namespace quota).",
        );
        for (ns, name, m) in &functions {
            for (i, reason) in THROTTLE_REASONS.iter().enumerate() {
                let n = m.throttles[i].load(Ordering::Relaxed);
                if n > 0 {
                    e.sample(
                        "ignis_function_throttles_total",
                        &[("namespace", ns), ("function", name), ("reason", reason)],
                        n as f64,
                    );
                }
            }
        }
        let namespaces: Vec<(String, u64)> = {
            let mut v: Vec<_> = self
                .namespaces
                .read()
                .unwrap()
                .iter()
                .map(|(ns, m)| (ns.clone(), m.mb_ms.load(Ordering::Relaxed)))
                .collect();
            v.sort();
            v
        };
        e.family(
            "ignis_namespace_gb_seconds_total",
            "counter",
            "Billed GB-seconds (memory limit × billed duration) of a namespace's invocations.",
        );
        for (ns, mb_ms) in &namespaces {
            e.sample(
                "ignis_namespace_gb_seconds_total",
                &[("namespace", ns)],
                ignis_core::usage::gb_seconds(*mb_ms),
            );
        }
        e.family(
            "ignis_invocations_in_flight",
            "gauge",
            "Blocking and queued invocations running now.",
        );
        e.sample("ignis_invocations_in_flight", &[], gauges.in_flight as f64);
        e.family(
            "ignis_async_backlog",
            "gauge",
            "Asynchronous invocations accepted and not yet run to their end, by namespace.",
        );
        for (ns, n) in &gauges.async_backlog {
            e.sample("ignis_async_backlog", &[("namespace", ns)], *n as f64);
        }
    }
}
