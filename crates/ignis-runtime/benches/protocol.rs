//! The instance protocol's hot functions: encoding an INVOKE frame and taking frames off a
//! read buffer, for a small (100 B) and a large (64 KiB) event.
//!
//! Run with `cargo bench -p ignis-runtime --bench protocol`.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ignis_runtime::protocol::{FrameKind, InvokeMeta, encode, encode_invoke, parse_frame};

/// Event sizes benched: a typical small JSON event and a large one.
const SIZES: [(&str, usize); 2] = [("100B", 100), ("64KiB", 64 * 1024)];

/// A JSON-looking event of exactly `len` bytes.
fn event(len: usize) -> Vec<u8> {
    let mut e = b"{\"data\":\"".to_vec();
    e.resize(len - 2, b'x');
    e.extend_from_slice(b"\"}");
    e
}

fn encode_invoke_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_invoke");
    let meta = InvokeMeta {
        request_id: "0123456789abcdef0123456789abcdef",
        deadline_ms: 1_700_000_000_000,
    };
    for (name, len) in SIZES {
        let event = event(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &event, |b, event| {
            b.iter(|| encode_invoke(black_box(7), black_box(&meta), black_box(event)))
        });
    }
    group.finish();
}

fn parse_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_frame");
    for (name, len) in SIZES {
        // A RESULT frame as an instance sends it, arriving whole in the read buffer.
        let wire = encode(FrameKind::Result, 7, &event(len));
        let mut buf = BytesMut::with_capacity(wire.len());
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &wire, |b, wire| {
            b.iter(|| {
                buf.extend_from_slice(black_box(wire));
                let frame = parse_frame(&mut buf).expect("valid frame").expect("whole");
                black_box(frame)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = encode_invoke_frames, parse_frames
}
criterion_main!(benches);
