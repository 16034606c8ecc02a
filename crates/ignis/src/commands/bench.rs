//! `ignis bench`: a load test through the REST API — many concurrent invocations of one
//! function, then throughput, latency percentiles, errors by kind and cold starts.
//!
//! ```text
//!  deploy bench-noop-<runtime>      (unless --function names one; max_instances = C;
//!      │                             with --functions F: bench-noop-<runtime>-1 … -F)
//!  warm-up: W invocations, C at once ── every instance gets created, not measured
//!      │
//!  measure: N invocations by C workers ─┬─ one tokio task each, one shared pooled Client
//!      │                                └─ each takes the next ticket until N or --duration
//!      │                                   (ticket k invokes function k mod F)
//!  summary: merge the workers' tallies, sort latencies once, percentiles by nearest rank
//!      │
//!  delete bench-noop-<runtime>[-i]  (kills their instances)
//! ```
//!
//! Latency is measured from just before the request is sent to the end of the response body,
//! for successful invocations only; failures are counted by kind instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use ignis_client::{Client, ClientError, CodeUpload, DeployRequest, InvokeResponse};
use ignis_core::{FunctionSpec, Runtime};
use serde::Serialize;

use super::GlobalOpts;

/// Load-test a function through the API and report throughput and latency percentiles.
#[derive(Args)]
pub struct BenchCommand {
    /// The function to invoke (NAME or NAME@VERSION). Without it, a no-op function named
    /// `bench-noop-<runtime>` is deployed for the run and deleted after it
    #[arg(long, value_name = "NAME")]
    function: Option<String>,
    /// Runtime of the no-op function: python, node, exec or wasm [default: python]
    #[arg(long, short = 'r', conflicts_with = "function")]
    runtime: Option<Runtime>,
    /// How many invocations to measure
    #[arg(long, value_name = "N", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,
    /// Stop measuring after this many seconds even if fewer than N invocations were made
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    duration: Option<Duration>,
    /// How many invocations are in flight at once (also the no-op function's max_instances)
    #[arg(long, short = 'c', value_name = "C", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(FunctionSpec::MAX_INSTANCES)))]
    concurrency: u32,
    /// The event sent with every invocation (JSON for python and node functions)
    #[arg(long, short = 'd', value_name = "JSON", default_value = "{}")]
    payload: String,
    /// Invocations made before measuring, C at once, so that every instance exists
    #[arg(long, value_name = "N", default_value_t = 200)]
    warmup: u64,
    /// Spread the load over F no-op functions (`bench-noop-<runtime>-1` … `-F`), invoked in
    /// turn: in a cluster, each function has its own home invoker
    #[arg(long, value_name = "F", default_value_t = 1, conflicts_with = "function",
          value_parser = clap::value_parser!(u32).range(1..=MAX_FUNCTIONS))]
    functions: u32,
}

/// Most no-op functions `--functions` deploys.
const MAX_FUNCTIONS: i64 = 64;

impl BenchCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        let client = global.client()?;
        let existing = match &self.function {
            Some(name) => Some(client.get_function(name).await?),
            None => None,
        };
        let runtime = existing
            .as_ref()
            .map(|f| f.spec.runtime)
            .or(self.runtime)
            .unwrap_or(Runtime::Python);
        if runtime.json_events()
            && serde_json::from_str::<serde::de::IgnoredAny>(&self.payload).is_err()
        {
            return Err(ClientError::Config(format!(
                "--payload: {runtime} functions take a JSON event, got {:?}",
                self.payload
            ))
            .into());
        }
        let (names, deployed) = match &self.function {
            Some(name) => (vec![name.clone()], false),
            None if runtime.is_composition() => {
                return Err(ClientError::Config(format!(
                    "--runtime {runtime}: deploy a {runtime} and give it with --function"
                ))
                .into());
            }
            None => {
                let mut names = Vec::new();
                for name in noop_names(runtime, self.functions) {
                    let deployed = deploy_noop(&client, &name, runtime, self.concurrency).await;
                    let f = match deployed {
                        Ok(f) => f,
                        Err(e) => {
                            delete_all(&client, &names).await;
                            return Err(e);
                        }
                    };
                    eprintln!(
                        "bench: deployed {} version {} ({runtime}, max_instances {})",
                        f.name, f.version, f.spec.max_instances
                    );
                    names.push(f.name);
                }
                (names, true)
            }
        };
        let target = Arc::new(Target {
            client: client.clone(),
            label: label(&names),
            names: names.clone(),
            payload: Bytes::from(self.payload.clone()),
        });
        let outcome = self.run(&target, runtime).await;
        if deployed {
            delete_all(&client, &names).await;
        }
        let summary = outcome?;
        if global.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            print!("{}", summary.render());
        }
        if summary.errors.total > 0 {
            anyhow::bail!(
                "{} of {} requests failed",
                summary.errors.total,
                summary.requests
            );
        }
        Ok(())
    }

    /// Warms the function up, then measures.
    async fn run(&self, target: &Arc<Target>, runtime: Runtime) -> anyhow::Result<Summary> {
        let c = self.concurrency;
        let mut warm_cold = 0;
        if self.warmup > 0 {
            eprintln!(
                "bench: warming up {}: {} invocations, {c} at once",
                target.label, self.warmup
            );
            let phase = Phase {
                total: self.warmup,
                concurrency: c,
                limit: None,
                warmup: true,
            };
            let (warm, took) = run_phase(target, &phase).await?;
            warm_cold = warm.cold;
            eprintln!(
                "bench: warm-up done in {:.1} s: {} cold starts, {} errors",
                took.as_secs_f64(),
                warm.cold,
                warm.errors.total
            );
            if warm.latencies.0.is_empty() {
                let why = warm.errors.examples.values().next().cloned();
                anyhow::bail!(
                    "every warm-up invocation of {} failed: {}",
                    target.label,
                    why.unwrap_or_default()
                );
            }
        }
        eprintln!(
            "bench: measuring {} invocations of {}, {c} at once",
            self.requests, target.label
        );
        let phase = Phase {
            total: self.requests,
            concurrency: c,
            limit: self.duration,
            warmup: false,
        };
        let (tally, took) = run_phase(target, &phase).await?;
        Ok(Summary {
            functions: target.names.len(),
            ..Summary::new(
                &target.label,
                runtime,
                c,
                tally,
                took,
                self.warmup,
                warm_cold,
            )
        })
    }
}

/// `--duration`: a positive number of seconds, possibly fractional.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => {
            Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is too long"))
        }
        _ => Err(format!("expected a positive number of seconds, got {s:?}")),
    }
}

/// The no-op function of each runtime: file name, handler and code. Each returns its event,
/// except wasm's: a WASI command (in WebAssembly text) whose `_start` returns at once.
fn noop_code(runtime: Runtime) -> (&'static str, &'static str, &'static [u8]) {
    match runtime {
        Runtime::Python => (
            "bench_noop.py",
            "bench_noop.handler",
            b"def handler(event, context):\n    return event\n",
        ),
        Runtime::Node => (
            "bench_noop.js",
            "bench_noop.handler",
            b"exports.handler = async (e) => e;\n",
        ),
        Runtime::Exec => (
            "bench_noop.sh",
            "bench_noop.sh",
            b"#!/bin/sh\nexec /bin/cat\n",
        ),
        Runtime::Lambda => ("bootstrap", "echo", ignis_runtime::bootstrap::LAMBDA_ECHO),
        Runtime::Wasm => (
            "bench_noop.wat",
            "bench_noop.wat",
            b"(module (memory (export \"memory\") 1) (func (export \"_start\")))\n",
        ),
        Runtime::Sequence | Runtime::Workflow => unreachable!("refused before deploying"),
    }
}

/// The no-op functions of a run: `bench-noop-<runtime>`, or `-1` … `-F` after it.
fn noop_names(runtime: Runtime, functions: u32) -> Vec<String> {
    match functions {
        0 | 1 => vec![format!("bench-noop-{runtime}")],
        f => (1..=f)
            .map(|i| format!("bench-noop-{runtime}-{i}"))
            .collect(),
    }
}

/// How a run names its functions: the one, or `first … last (F functions)`.
fn label(names: &[String]) -> String {
    match names {
        [one] => one.clone(),
        [first, .., last] => format!("{first} … {last} ({} functions)", names.len()),
        [] => String::new(),
    }
}

/// Deletes the no-op functions of a run (all their versions; kills their instances).
async fn delete_all(client: &Client, names: &[String]) {
    for name in names {
        if let Err(e) = client.delete_function(name).await {
            eprintln!("bench: warning: cannot delete {name}: {e}");
        }
    }
}

/// Deploys a no-op function `name` with room for `concurrency` instances.
async fn deploy_noop(
    client: &Client,
    name: &str,
    runtime: Runtime,
    concurrency: u32,
) -> anyhow::Result<ignis_core::FunctionVersion> {
    let (filename, handler, code) = noop_code(runtime);
    let upload = CodeUpload::File {
        filename: filename.to_owned(),
        bytes: Bytes::from_static(code),
    };
    let mut req = DeployRequest::new(runtime, handler, Some(upload));
    req.max_instances = Some(concurrency);
    let f = client
        .deploy(name, &req)
        .await
        .with_context(|| format!("cannot deploy {name}"))?;
    Ok(f)
}

/// What every worker invokes: the functions in turn.
struct Target {
    client: Client,
    names: Vec<String>,
    /// How progress lines and the summary name them.
    label: String,
    payload: Bytes,
}

/// One round of invocations: the warm-up or the measurement.
#[derive(Debug, Clone, Copy)]
struct Phase {
    /// How many invocations to make.
    total: u64,
    /// How many at once.
    concurrency: u32,
    /// Make no more after this long.
    limit: Option<Duration>,
    /// A warm-up prints no progress, and gives up as soon as `concurrency` invocations failed
    /// with none succeeding (a broken function need not be invoked hundreds of times).
    warmup: bool,
}

/// Counters shared by the workers of one phase.
#[derive(Default)]
struct Shared {
    /// Set when a warm-up gives up.
    give_up: AtomicBool,
    /// Tickets handed out; a worker stops when this reaches the phase's total.
    issued: AtomicU64,
    /// Invocations finished, for the progress line.
    done: AtomicU64,
    /// Invocations failed, for the progress line.
    failed: AtomicU64,
}

/// Runs a phase with one worker per concurrent invocation; returns the merged tally and how
/// long the phase took.
async fn run_phase(target: &Arc<Target>, phase: &Phase) -> anyhow::Result<(Tally, Duration)> {
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let deadline = phase.limit.map(|d| start + d);
    let workers: Vec<_> = (0..phase.concurrency)
        .map(|_| {
            let (target, shared) = (target.clone(), shared.clone());
            tokio::spawn(worker(target, shared, *phase, deadline))
        })
        .collect();
    let ticker =
        (!phase.warmup).then(|| tokio::spawn(report_progress(shared.clone(), phase.total, start)));
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await.context("a load worker panicked")?);
    }
    let took = start.elapsed();
    if let Some(t) = ticker {
        t.abort();
    }
    Ok((tally, took))
}

/// One worker: invokes until the tickets run out, the deadline passes or a warm-up gives up.
async fn worker(
    target: Arc<Target>,
    shared: Arc<Shared>,
    phase: Phase,
    deadline: Option<Instant>,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) || shared.give_up.load(Ordering::Relaxed) {
            return tally;
        }
        let ticket = shared.issued.fetch_add(1, Ordering::Relaxed);
        if ticket >= phase.total {
            return tally;
        }
        let name = &target.names[(ticket % target.names.len() as u64) as usize];
        let sent = Instant::now();
        let result = target
            .client
            .invoke(name, None, target.payload.clone())
            .await;
        let latency = sent.elapsed();
        let failed = if tally.record(&result, latency) {
            shared.failed.load(Ordering::Relaxed)
        } else {
            shared.failed.fetch_add(1, Ordering::Relaxed) + 1
        };
        let done = shared.done.fetch_add(1, Ordering::Relaxed) + 1;
        if phase.warmup && failed == done && failed >= u64::from(phase.concurrency) {
            shared.give_up.store(true, Ordering::Relaxed);
        }
    }
}

/// Prints `done/total` and the rate of the last second to stderr, every second.
async fn report_progress(shared: Arc<Shared>, total: u64, start: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_done, mut last_at) = (0, start);
    loop {
        tick.tick().await;
        let (done, now) = (shared.done.load(Ordering::Relaxed), Instant::now());
        let rate = (done - last_done) as f64 / now.duration_since(last_at).as_secs_f64();
        eprintln!(
            "bench: {:>4.0}s  {done}/{total}  {rate:.0} req/s  {} errors",
            now.duration_since(start).as_secs_f64(),
            shared.failed.load(Ordering::Relaxed)
        );
        (last_done, last_at) = (done, now);
    }
}

/// Why an invocation counts as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ErrorKind {
    /// HTTP 429: the function's instances and queue were full.
    Throttled,
    /// Another HTTP 5xx from the platform (not from the function).
    Server,
    /// Another HTTP 4xx (unknown function, bad payload, bad key) or a client-side mistake.
    Client,
    /// The invocation reached the function and the function failed.
    Function,
    /// The connection failed or broke.
    Transport,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Throttled => "http_429",
            ErrorKind::Server => "http_5xx",
            ErrorKind::Client => "http_4xx",
            ErrorKind::Function => "function",
            ErrorKind::Transport => "transport",
        }
    }
}

/// Sorts the outcome of one invocation: `Ok(cold)` or the kind of failure and a message.
fn classify(result: &Result<InvokeResponse, ClientError>) -> Result<bool, (ErrorKind, String)> {
    match result {
        Ok(r) => match r.error() {
            None => Ok(r.cold),
            Some(e) => Err((
                ErrorKind::Function,
                format!("{}: {}", r.fn_status, e.message),
            )),
        },
        Err(e) => {
            let kind = match e {
                ClientError::Api { status: 429, .. } => ErrorKind::Throttled,
                ClientError::Api { status, .. } if *status >= 500 => ErrorKind::Server,
                ClientError::Connect { .. } | ClientError::Transport { .. } => ErrorKind::Transport,
                ClientError::FunctionFailed { .. } => ErrorKind::Function,
                _ => ErrorKind::Client,
            };
            Err((kind, format!("{e:#}")))
        }
    }
}

/// What one worker (or, merged, all of them) saw.
#[derive(Debug, Default)]
struct Tally {
    latencies: Latencies,
    errors: ErrorCounts,
    cold: u64,
}

impl Tally {
    /// Counts one invocation; `false` if it failed.
    fn record(&mut self, result: &Result<InvokeResponse, ClientError>, latency: Duration) -> bool {
        match classify(result) {
            Ok(cold) => {
                self.latencies.record(latency);
                self.cold += u64::from(cold);
                true
            }
            Err((kind, message)) => {
                self.errors.add(kind, message);
                false
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.merge(other.latencies);
        self.cold += other.cold;
        for (kind, n) in other.errors.counts {
            *self.errors.counts.entry(kind).or_default() += n;
        }
        self.errors.total += other.errors.total;
        for (kind, msg) in other.errors.examples {
            self.errors.examples.entry(kind).or_insert(msg);
        }
    }
}

/// Failures by kind, with the first message of each kind.
#[derive(Debug, Default)]
struct ErrorCounts {
    total: u64,
    counts: BTreeMap<ErrorKind, u64>,
    examples: BTreeMap<ErrorKind, String>,
}

impl ErrorCounts {
    fn add(&mut self, kind: ErrorKind, message: String) {
        self.total += 1;
        *self.counts.entry(kind).or_default() += 1;
        self.examples.entry(kind).or_insert(message);
    }
}

/// Latencies in microseconds, kept whole and sorted once at the end: a run is at most a few
/// million requests, so this is exact and small enough.
#[derive(Debug, Default)]
struct Latencies(Vec<u32>);

impl Latencies {
    fn record(&mut self, d: Duration) {
        self.0
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// Min, mean, percentiles and max; `None` when nothing was recorded.
    fn summarize(mut self) -> Option<LatencySummary> {
        let sorted = &mut self.0;
        sorted.sort_unstable();
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let sum: u64 = sorted.iter().map(|&v| u64::from(v)).sum();
        Some(LatencySummary {
            min,
            mean: sum / sorted.len() as u64,
            p50: percentile(sorted, 500),
            p90: percentile(sorted, 900),
            p99: percentile(sorted, 990),
            p99_9: percentile(sorted, 999),
            max,
        })
    }
}

/// The value below or at which `per_mille`/1000 of the sorted values lie (nearest rank: the
/// ⌈n·q⌉-th smallest), in integer arithmetic so that p99.9 of 1000 values is the 999th.
fn percentile(sorted: &[u32], per_mille: u64) -> u32 {
    let n = sorted.len() as u64;
    if n == 0 {
        return 0;
    }
    let rank = (n * per_mille).div_ceil(1000).clamp(1, n);
    sorted[(rank - 1) as usize]
}

/// Latency statistics in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct LatencySummary {
    min: u32,
    mean: u64,
    p50: u32,
    p90: u32,
    p99: u32,
    p99_9: u32,
    max: u32,
}

/// Failures in the JSON summary.
#[derive(Debug, Serialize)]
struct ErrorSummary {
    total: u64,
    #[serde(flatten)]
    by_kind: BTreeMap<&'static str, u64>,
    /// The first message of each kind.
    examples: BTreeMap<&'static str, String>,
}

/// The result of a run, printed as a listing or as JSON.
#[derive(Debug, Serialize)]
struct Summary {
    function: String,
    /// How many functions the load was spread over.
    functions: usize,
    runtime: Runtime,
    concurrency: u32,
    /// Invocations measured (successful or not).
    requests: u64,
    succeeded: u64,
    errors: ErrorSummary,
    duration_s: f64,
    throughput_rps: f64,
    /// Of successful invocations; `null` if there were none.
    latency_us: Option<LatencySummary>,
    cold_starts: u64,
    warmup_requests: u64,
    warmup_cold_starts: u64,
}

impl Summary {
    fn new(
        function: &str,
        runtime: Runtime,
        concurrency: u32,
        tally: Tally,
        took: Duration,
        warmup_requests: u64,
        warmup_cold_starts: u64,
    ) -> Self {
        let succeeded = tally.latencies.0.len() as u64;
        let requests = succeeded + tally.errors.total;
        let secs = took.as_secs_f64();
        let kinds = [
            ErrorKind::Throttled,
            ErrorKind::Server,
            ErrorKind::Client,
            ErrorKind::Function,
            ErrorKind::Transport,
        ];
        let errors = ErrorSummary {
            total: tally.errors.total,
            by_kind: kinds
                .iter()
                .map(|k| (k.as_str(), tally.errors.counts.get(k).copied().unwrap_or(0)))
                .collect(),
            examples: tally
                .errors
                .examples
                .into_iter()
                .map(|(k, m)| (k.as_str(), m))
                .collect(),
        };
        Summary {
            function: function.to_owned(),
            functions: 1,
            runtime,
            concurrency,
            requests,
            succeeded,
            errors,
            duration_s: (secs * 1000.0).round() / 1000.0,
            throughput_rps: if secs > 0.0 {
                (requests as f64 / secs * 10.0).round() / 10.0
            } else {
                0.0
            },
            latency_us: tally.latencies.summarize(),
            cold_starts: tally.cold,
            warmup_requests,
            warmup_cold_starts,
        }
    }

    /// The human-readable listing.
    fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut line = |k: &str, v: String| {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "  {k:<15}{v}");
        };
        line("function", format!("{} ({})", self.function, self.runtime));
        line("concurrency", self.concurrency.to_string());
        line("requests", self.requests.to_string());
        line("errors", self.errors.total.to_string());
        for (kind, n) in self.errors.by_kind.iter().filter(|(_, n)| **n > 0) {
            let example = self.errors.examples.get(kind).cloned().unwrap_or_default();
            line(&format!("  {kind}"), format!("{n}  (first: {example})"));
        }
        line("duration", format!("{:.2} s", self.duration_s));
        line("throughput", format!("{:.0} req/s", self.throughput_rps));
        match &self.latency_us {
            Some(l) => {
                let stats = [
                    ("min", u64::from(l.min)),
                    ("mean", l.mean),
                    ("p50", u64::from(l.p50)),
                    ("p90", u64::from(l.p90)),
                    ("p99", u64::from(l.p99)),
                    ("p99.9", u64::from(l.p99_9)),
                    ("max", u64::from(l.max)),
                ];
                for (name, us) in stats {
                    line(&format!("latency {name}"), format_micros(us));
                }
            }
            None => line("latency", "no successful request".to_owned()),
        }
        line("cold starts", self.cold_starts.to_string());
        out
    }
}

/// `812 µs`, `3.91 ms`, `1.25 s`.
fn format_micros(us: u64) -> String {
    match us {
        us if us < 1000 => format!("{us} µs"),
        us if us < 1_000_000 => format!("{:.2} ms", us as f64 / 1000.0),
        us => format!("{:.2} s", us as f64 / 1_000_000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchCommand,
    }

    #[test]
    fn arguments_are_consistent() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["bench"]).unwrap().bench;
        assert_eq!((c.requests, c.concurrency, c.warmup), (20_000, 16, 200));
        assert_eq!(
            (c.payload.as_str(), c.runtime, c.duration),
            ("{}", None, None)
        );
        let c = Cli::try_parse_from(["bench", "-r", "node", "-c", "64", "--duration", "3"])
            .unwrap()
            .bench;
        assert_eq!(c.runtime, Some(Runtime::Node));
        assert_eq!(c.duration, Some(Duration::from_secs(3)));
        assert!(Cli::try_parse_from(["bench", "-c", "0"]).is_err());
        assert!(Cli::try_parse_from(["bench", "-c", "1001"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--requests", "0"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--function", "f", "-r", "node"]).is_err());
        assert_eq!(c.functions, 1);
        let c = Cli::try_parse_from(["bench", "--functions", "8"])
            .unwrap()
            .bench;
        assert_eq!(c.functions, 8);
        assert!(Cli::try_parse_from(["bench", "--functions", "0"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--functions", "65"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--functions", "2", "--function", "f"]).is_err());
    }

    #[test]
    fn several_functions_are_named_in_turn() {
        assert_eq!(noop_names(Runtime::Python, 1), ["bench-noop-python"]);
        let names = noop_names(Runtime::Wasm, 3);
        assert_eq!(
            names,
            [
                "bench-noop-wasm-1",
                "bench-noop-wasm-2",
                "bench-noop-wasm-3"
            ]
        );
        assert_eq!(
            label(&names),
            "bench-noop-wasm-1 … bench-noop-wasm-3 (3 functions)"
        );
        assert_eq!(label(&names[..1]), "bench-noop-wasm-1");
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 500), 50);
        assert_eq!(percentile(&v, 900), 90);
        assert_eq!(percentile(&v, 990), 99);
        assert_eq!(percentile(&v, 999), 100);
        assert_eq!(percentile(&v, 1000), 100);
        assert_eq!(percentile(&v, 0), 1);
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 999), 999);
        assert_eq!(percentile(&v, 500), 500);
        assert_eq!(percentile(&[7], 500), 7);
        assert_eq!(percentile(&[7], 999), 7);
        assert_eq!(percentile(&[], 500), 0);
        // Two values: the median is the lower one, p90 the upper one.
        assert_eq!(percentile(&[10, 20], 500), 10);
        assert_eq!(percentile(&[10, 20], 900), 20);
    }

    #[test]
    fn summaries_sort_merged_latencies() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        for us in (1..=500u64).rev() {
            a.record(Duration::from_micros(us * 2));
            b.record(Duration::from_micros(us * 2 - 1));
        }
        a.merge(b);
        let s = a.summarize().unwrap();
        assert_eq!(
            s,
            LatencySummary {
                min: 1,
                mean: 500,
                p50: 500,
                p90: 900,
                p99: 990,
                p99_9: 999,
                max: 1000,
            }
        );
        assert!(Latencies::default().summarize().is_none());
    }

    fn response(fn_status: &str, cold: bool) -> InvokeResponse {
        InvokeResponse {
            status: if fn_status == "success" { 200 } else { 502 },
            activation_id: "a".into(),
            fn_status: fn_status.into(),
            cold,
            duration_ms: 1,
            init_ms: 0,
            version: 1,
            body: Bytes::from_static(b"{}"),
        }
    }

    fn api(status: u16) -> ClientError {
        ClientError::Api {
            status,
            code: "x".into(),
            message: "m".into(),
            retry_after: None,
        }
    }

    #[test]
    fn outcomes_are_classified_by_kind() {
        let kind = |r: Result<InvokeResponse, ClientError>| classify(&r).map_err(|(k, _)| k);
        assert_eq!(kind(Ok(response("success", true))), Ok(true));
        assert_eq!(kind(Ok(response("success", false))), Ok(false));
        assert_eq!(
            kind(Ok(response("timeout", false))),
            Err(ErrorKind::Function)
        );
        assert_eq!(kind(Err(api(429))), Err(ErrorKind::Throttled));
        assert_eq!(kind(Err(api(503))), Err(ErrorKind::Server));
        assert_eq!(kind(Err(api(404))), Err(ErrorKind::Client));
    }

    #[test]
    fn tallies_merge_and_summarize() {
        let mut a = Tally::default();
        assert!(a.record(&Ok(response("success", true)), Duration::from_micros(10)));
        assert!(!a.record(&Err(api(429)), Duration::from_micros(1)));
        let mut b = Tally::default();
        assert!(b.record(&Ok(response("success", false)), Duration::from_micros(30)));
        assert!(!b.record(&Err(api(429)), Duration::from_micros(1)));
        assert!(!b.record(&Ok(response("crash", false)), Duration::from_micros(1)));
        a.merge(b);
        let s = Summary::new("f", Runtime::Python, 2, a, Duration::from_secs(2), 0, 0);
        assert_eq!((s.requests, s.succeeded, s.cold_starts), (5, 2, 1));
        assert_eq!(s.errors.total, 3);
        assert_eq!(s.errors.by_kind["http_429"], 2);
        assert_eq!(s.errors.by_kind["function"], 1);
        assert_eq!(s.errors.by_kind["transport"], 0);
        assert_eq!(s.throughput_rps, 2.5);
        assert_eq!(s.latency_us.unwrap().max, 30);
        let doc = serde_json::to_value(&s).unwrap();
        assert_eq!(doc["errors"]["http_429"], 2);
        assert_eq!(doc["latency_us"]["p50"], 10);
        assert!(s.render().contains("http_429"));
    }

    #[test]
    fn formats_durations_and_parses_seconds() {
        assert_eq!(format_micros(812), "812 µs");
        assert_eq!(format_micros(3_914), "3.91 ms");
        assert_eq!(format_micros(1_250_000), "1.25 s");
        assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
    }
}
