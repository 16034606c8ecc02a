//! Measures what the sandbox adds to starting a process: p50/p99 of start-to-exit of
//! `/bin/true` over N runs, bare and in each sandbox configuration.
//!
//! `cargo run --release -p ignis-sandbox --example spawn_cost [N]` (as root for the isolated
//! rows). The numbers are recorded in docs/performance.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ignis_sandbox::{ProcessSpec, Sandbox, SandboxConfig};

fn spec(host_network: bool) -> ProcessSpec {
    ProcessSpec {
        program: PathBuf::from("/bin/true"),
        args: Vec::new(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        code_dir: std::env::temp_dir(),
        runtime_dir: None,
        memory_mb: 128,
        tmp_mb: 16,
        host_network,
        data_limit_bytes: None,
        channel: true,
        stdin: false,
        background: false,
        loopback_listeners: Vec::new(),
    }
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (p(0.50), p(0.99))
}

async fn measure(n: usize, mut run: impl AsyncFnMut()) -> (Duration, Duration) {
    for _ in 0..n / 10 {
        run().await;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        run().await;
        times.push(t.elapsed());
    }
    percentiles(times)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let root = tempfile::tempdir().expect("temp dir");
    let full = Sandbox::new(SandboxConfig::new(root.path().join("root")));
    let plain = Sandbox::unisolated();
    println!("protections: {:?}", full.protections());
    println!("{n} runs of /bin/true each, start to exit");
    println!("{:<48} {:>10} {:>10}", "configuration", "p50", "p99");
    let row = |name: &str, (p50, p99): (Duration, Duration)| {
        println!(
            "{name:<48} {:>8.0}µs {:>8.0}µs",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    };
    row(
        "bare tokio::process::Command",
        measure(n, async || {
            let mut c = tokio::process::Command::new("/bin/true")
                .spawn()
                .expect("spawn");
            c.wait().await.expect("wait");
        })
        .await,
    );
    let s = spec(true);
    row(
        "process group + rlimits only (no isolation)",
        measure(n, async || {
            let mut p = plain.spawn(&s).await.expect("spawn");
            p.child.wait().await.expect("wait");
        })
        .await,
    );
    if full.protections().namespaces {
        let s = spec(true);
        row(
            "full sandbox, host network (no netns)",
            measure(n, async || {
                let mut p = full.spawn(&s).await.expect("spawn");
                p.child.wait().await.expect("wait");
            })
            .await,
        );
        let s = spec(false);
        row(
            "full sandbox, own network namespace",
            measure(n, async || {
                let mut p = full.spawn(&s).await.expect("spawn");
                p.child.wait().await.expect("wait");
            })
            .await,
        );
    } else {
        println!("(isolated rows skipped: namespaces unavailable; run as root)");
    }
}
