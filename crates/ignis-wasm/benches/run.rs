//! One wasm invocation inside `ignis-wasm`, without the invoker: a fresh store, an instance
//! from the pool, the guest's entry point, the result, the store dropped. Compares running the
//! guest on the calling tokio task (what the invoker does) with handing it to the blocking pool.
//!
//! Run with `cargo bench -p ignis-wasm --bench run`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use ignis_core::Status;
use ignis_wasm::{RunRequest, WasmCode, WasmConfig, WasmEngine};

const NOOP: &str = include_str!("../fixtures/noop.wat");
const GUEST: &str = include_str!("../fixtures/guest.wat");
const HTTP_ECHO: &str = include_str!("../fixtures/http_echo.wat");

fn load(engine: &WasmEngine, name: &str, code: &str) -> Arc<WasmCode> {
    let compiled = engine.compile(code.as_bytes()).expect("compile");
    engine.store_artifact(name, &compiled).expect("store");
    engine.load(name, || unreachable!("cached")).expect("load")
}

async fn run(code: &WasmCode, event: &Bytes) -> Status {
    let out = code
        .run(RunRequest {
            event,
            env: &[],
            name: "bench",
            memory_bytes: 128 << 20,
            deadline: Instant::now() + Duration::from_secs(10),
            timeout_ms: 10_000,
            api: None,
        })
        .await;
    debug_assert_eq!(out.status, Status::Success, "{:?}", out.error);
    out.status
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = WasmEngine::new(&WasmConfig::new(dir.path())).expect("engine");
    let noop = load(&engine, "noop", NOOP);
    let echo = load(&engine, "echo", GUEST);
    let http = load(&engine, "http", HTTP_ECHO);
    let event = Bytes::from_static(br#"{"hello":"world"}"#);
    for (code, what) in [(&noop, "noop"), (&echo, "echo"), (&http, "http")] {
        assert_eq!(rt.block_on(run(code, &event)), Status::Success, "{what}");
    }

    let mut group = c.benchmark_group("wasm_run");
    group.bench_function("noop", |b| b.to_async(&rt).iter(|| run(&noop, &event)));
    group.bench_function("noop_blocking_pool", |b| {
        b.to_async(&rt).iter(|| {
            let (code, event) = (noop.clone(), event.clone());
            let handle = tokio::runtime::Handle::current();
            async move {
                tokio::task::spawn_blocking(move || handle.block_on(run(&code, &event)))
                    .await
                    .expect("blocking task")
            }
        })
    });
    group.bench_function("echo", |b| b.to_async(&rt).iter(|| run(&echo, &event)));
    group.bench_function("http_component", |b| {
        b.to_async(&rt).iter(|| run(&http, &event))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
