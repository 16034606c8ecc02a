//! The warm path inside the invoker, with no HTTP: pool lookup, lease of an idle instance,
//! INVOKE frame out, RESULT frame back, release. One no-op function per runtime, warmed once
//! before measuring; runtimes whose interpreter is not installed are skipped. For wasm, an
//! iteration is instantiate-to-result: a fresh store, an instance from the pool, `_start`, the
//! store dropped.
//!
//! Run with `cargo bench -p ignis-invoker --bench warm_invoke`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ignis_core::{
    ActivationId, CodeFormat, CodeRef, FunctionSpec, FunctionVersion, Runtime, Status,
};
use ignis_invoker::{CodeSource, Invocation, Invoker, InvokerConfig};
use ignis_sandbox::Sandbox;
use sha2::{Digest, Sha256};

/// Uploaded code kept in memory, by SHA-256.
#[derive(Default)]
struct MemoryCode(HashMap<String, Vec<u8>>);

impl MemoryCode {
    /// Stores `bytes` and returns the reference a version would carry.
    fn add(&mut self, filename: &str, bytes: &[u8]) -> CodeRef {
        let sha256 = format!("{:x}", Sha256::digest(bytes));
        self.0.insert(sha256.clone(), bytes.to_vec());
        CodeRef {
            sha256,
            size: bytes.len() as u64,
            format: CodeFormat::File,
            filename: Some(filename.to_owned()),
        }
    }
}

impl CodeSource for MemoryCode {
    fn read(&self, sha256: &str) -> std::io::Result<Vec<u8>> {
        self.0
            .get(sha256)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such code"))
    }
}

/// The no-op function of each runtime: file name, handler, code.
fn noop(runtime: Runtime) -> (&'static str, &'static str, &'static [u8]) {
    match runtime {
        Runtime::Python => (
            "noop.py",
            "noop.handler",
            b"def handler(event, context):\n    return event\n",
        ),
        Runtime::Node => (
            "noop.js",
            "noop.handler",
            b"exports.handler = async (e) => e;\n",
        ),
        Runtime::Exec => ("noop.sh", "noop.sh", b"#!/bin/sh\nexec /bin/cat\n"),
        Runtime::Lambda => ("bootstrap", "noop", ignis_runtime::bootstrap::LAMBDA_ECHO),
        Runtime::Wasm => (
            "noop.wat",
            "noop.wat",
            include_bytes!("../../ignis-wasm/fixtures/noop.wat"),
        ),
        Runtime::Sequence | Runtime::Workflow => unreachable!("not in Runtime::ALL"),
    }
}

/// The first `name` on `PATH`.
fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn version(runtime: Runtime, code: CodeRef) -> Arc<FunctionVersion> {
    let (_, handler, _) = noop(runtime);
    Arc::new(FunctionVersion {
        namespace: "default".into(),
        name: format!("noop-{runtime}"),
        version: 1,
        spec: FunctionSpec::new(runtime, handler),
        code,
        created_ms: 0,
    })
}

fn invocation(f: &Arc<FunctionVersion>, event: &Bytes) -> Invocation {
    Invocation {
        function: f.clone(),
        id: ActivationId::new(),
        event: event.clone(),
        accepted: Instant::now(),
        lambda: None,
    }
}

/// An invoker like `ignis serve` builds, over `dir` and in-memory code.
fn invoker(dir: &Path, code: MemoryCode, python: &Path, node: &Path) -> Invoker {
    let bootstraps =
        ignis_runtime::bootstrap::install(&dir.join("runtime")).expect("install bootstraps");
    let tmp_dir = dir.join("tmp");
    std::fs::create_dir_all(&tmp_dir).expect("create tmp dir");
    Invoker::new(
        InvokerConfig {
            code_dir: dir.join("code"),
            tmp_dir,
            bootstraps,
            python: python.to_path_buf(),
            node: node.to_path_buf(),
            keep_alive: Duration::from_secs(600),
            queue_per_function: 100,
            stem_cells: 0,
            memory_budget_mb: 4096,
            zygote: false,
            aws_region: ignis_core::lambda::DEFAULT_REGION.into(),
            wasm: ignis_wasm::WasmConfig::new(dir.join("wasm-cache")),
        },
        Sandbox::unisolated(),
        Arc::new(code),
    )
}

fn warm_invoke(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let python = find_in_path("python3");
    let node = find_in_path("node");
    let runtimes: Vec<Runtime> = Runtime::ALL
        .into_iter()
        .filter(|r| match r {
            Runtime::Python => python.is_some(),
            Runtime::Node => node.is_some(),
            Runtime::Exec | Runtime::Lambda | Runtime::Wasm => true,
            Runtime::Sequence | Runtime::Workflow => false,
        })
        .collect();
    let mut code = MemoryCode::default();
    let functions: Vec<_> = runtimes
        .iter()
        .map(|&r| {
            let (filename, _, bytes) = noop(r);
            version(r, code.add(filename, bytes))
        })
        .collect();
    let missing = PathBuf::from("/nonexistent");
    let invoker = {
        let _entered = rt.enter();
        invoker(
            dir.path(),
            code,
            python.as_deref().unwrap_or(&missing),
            node.as_deref().unwrap_or(&missing),
        )
    };
    let event = Bytes::from_static(br#"{"hello":"world"}"#);

    let mut group = c.benchmark_group("warm_invoke");
    for f in &functions {
        let first = rt
            .block_on(invoker.invoke(invocation(f, &event)))
            .expect("warm-up invocation");
        assert_eq!(first.status, Status::Success, "{:?}", first.error);
        assert!(first.cold, "the first invocation creates the instance");
        group.bench_function(BenchmarkId::from_parameter(f.spec.runtime), |b| {
            b.to_async(&rt).iter(|| async {
                let r = invoker
                    .invoke(invocation(f, &event))
                    .await
                    .expect("invocation");
                debug_assert!(!r.cold && r.status == Status::Success);
                r
            })
        });
    }
    group.finish();
    // Criterion reports means per sample; the issue's aim for wasm is a per-invocation p50.
    if let Some(f) = functions.iter().find(|f| f.spec.runtime == Runtime::Wasm) {
        let mut took: Vec<Duration> = (0..20_000)
            .map(|_| {
                let start = Instant::now();
                let r = rt.block_on(invoker.invoke(invocation(f, &event)));
                let took = start.elapsed();
                assert_eq!(r.expect("invocation").status, Status::Success);
                took
            })
            .collect();
        took.sort();
        let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
        eprintln!(
            "warm_invoke/wasm, {} single invocations: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
            took.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            took[took.len() - 1]
        );
    }
    invoker.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = warm_invoke
}
criterion_main!(benches);
