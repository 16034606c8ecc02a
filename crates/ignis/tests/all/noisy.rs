//! The noisy neighbour: namespace A floods the server (2,000 requests a second at a CPU-spinning
//! function held to its concurrency quota of 1, so nearly all are refused with 429) while
//! namespace B's latency is measured; B's p99 must stay within twice its p99 alone.
//!
//! The flood is paced rather than as fast as the test can send: on the 2-core machines this runs
//! on, an unpaced load generator in the same test process takes the CPU from the server itself,
//! and what is measured is then the machine, not the isolation. For the same reason the test runs
//! alone (no other test has a server meanwhile), and the flood is switched on and off in rounds
//! so that both measurements share whatever else the machine does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
    host: String,
    auth: String,
}

impl Conn {
    fn open(s: &Server) -> Conn {
        let w = TcpStream::connect(&s.addr).unwrap();
        w.set_nodelay(true).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Conn {
            w,
            r,
            host: s.addr.clone(),
            auth: format!("Bearer {}", s.key),
        }
    }

    /// POSTs `body` and returns the status.
    fn post(&mut self, path: &str, body: &str) -> u16 {
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.host,
            self.auth,
            body.len()
        );
        self.w.write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).unwrap();
        status
    }
}

#[test]
fn a_flooding_namespace_leaves_another_its_latency() {
    // Other tests' servers would load the machine unevenly between the two measurements.
    let _alone = alone();
    let s = Server::start();
    for (ns, quotas) in [("a", r#"{"concurrency":1}"#), ("b", "{}")] {
        let r = s.request(
            "PUT",
            &format!("/v1/namespaces/{ns}"),
            Some("application/json"),
            format!(r#"{{"quotas":{quotas}}}"#).as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let deploy = |ns: &str, name: &str, code: &str| {
        let r = s.raw_request(
            "PUT",
            &format!(
                "/v1/namespaces/{ns}/functions/{name}?runtime=python&handler=app.handler&filename=app.py"
            ),
            &[("authorization", &format!("Bearer {}", s.key))],
            Some("application/octet-stream"),
            code.as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    };
    deploy(
        "a",
        "spin",
        "import time\ndef handler(event, context):\n    end = time.time() + 0.2\n    n = 0\n    while time.time() < end:\n        n += 1\n    return n\n",
    );
    deploy(
        "b",
        "hello",
        "def handler(event, context):\n    return {'hello': 'world'}\n",
    );
    let b_path = "/v1/namespaces/b/functions/hello/invoke";
    let a_path = "/v1/namespaces/a/functions/spin/invoke";
    let mut b = Conn::open(&s);
    let mut time_b = |n: usize, into: &mut Vec<Duration>| {
        for _ in 0..n {
            let t = Instant::now();
            assert_eq!(b.post(b_path, "{}"), 200);
            into.push(t.elapsed());
        }
    };
    time_b(200, &mut Vec::new()); // warm up

    // The flood is switched on and off in rounds, and B is timed in both states, so that
    // whatever else the machine does weighs on both measurements alike.
    let (on, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (sent, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    const FLOODERS: u32 = 4;
    const RATE: u32 = 2000;
    let gap = Duration::from_secs(1) / (RATE / FLOODERS);
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let mut conn = Conn::open(&s);
            let (on, stop, sent, refused) =
                (on.clone(), stop.clone(), sent.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if !on.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(1));
                        next = Instant::now();
                        continue;
                    }
                    next += gap;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let status = conn.post(a_path, "{}");
                    assert!(status == 200 || status == 429, "{status}");
                    sent.fetch_add(1, Ordering::Relaxed);
                    if status == 429 {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // One measurement: 20 rounds of B alone, then B during the flood. A 2-core machine's
    // scheduler can put one measurement past the margin by itself, so up to three are made;
    // the isolation holds if one of them shows it (a real regression fails all three).
    let mut measure = || {
        let (mut alone, mut flooded) = (Vec::new(), Vec::new());
        let mut flood_time = Duration::ZERO;
        let sent_before = sent.load(Ordering::Relaxed);
        for _ in 0..20 {
            on.store(false, Ordering::Relaxed);
            // A's running invocation (200 ms of spinning) ends first.
            std::thread::sleep(Duration::from_millis(300));
            time_b(150, &mut alone);
            on.store(true, Ordering::Relaxed);
            let t = Instant::now();
            std::thread::sleep(Duration::from_millis(100));
            time_b(150, &mut flooded);
            flood_time += t.elapsed();
        }
        on.store(false, Ordering::Relaxed);
        let p99 = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() * 99 / 100]
        };
        let rate = (sent.load(Ordering::Relaxed) - sent_before) as f64 / flood_time.as_secs_f64();
        (p99(alone), p99(flooded), rate)
    };
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let (solo, flooded, rate) = measure();
        eprintln!(
            "noisy neighbour: B p99 alone {solo:?}, during A's flood {flooded:?}; A sent {rate:.0} req/s, {} refused (429) so far",
            refused.load(Ordering::Relaxed)
        );
        attempts.push((solo, flooded, rate));
        if flooded <= solo * 2 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    let &(solo, flooded, rate) = attempts.last().unwrap();
    // Each flooder waits out the invocations that get in (200 ms each), so the rate is below
    // the pace; it must still be thousands a second.
    assert!(rate >= 1000.0, "the flood was only {rate:.0} req/s");
    assert!(
        flooded <= solo * 2,
        "B's p99 during A's flood passed twice its p99 alone in every attempt: {attempts:?}"
    );
}
