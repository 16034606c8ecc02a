//! The epoch ticker: one thread that advances the engine's epoch every [`TICK`] while some
//! guest is running, and sleeps (parked) otherwise, so an idle server does not wake up a
//! thousand times a second.
//!
//! Every store asks to be interrupted at the next epoch. At each interruption its callback
//! compares the clock with the invocation's deadline: before it, the guest yields to tokio and
//! goes on (so a busy guest never holds a worker thread for more than a tick); past it, the
//! guest traps with `Interrupt` and the activation is a `timeout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances while guests run: the granularity of timeouts and of yields.
pub(crate) const TICK: Duration = Duration::from_millis(1);

struct Shared {
    running: AtomicUsize,
    stop: AtomicBool,
}

/// The ticker thread; stopped when dropped.
pub(crate) struct Ticker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Held while a guest runs: keeps the epoch advancing.
pub(crate) struct Running<'a>(&'a Ticker);

impl Ticker {
    pub fn start(engine: Engine) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            running: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ignis-wasm-epoch".into())
            .spawn(move || {
                while !s.stop.load(Ordering::Acquire) {
                    if s.running.load(Ordering::Acquire) == 0 {
                        // An unpark between the load and here makes this return at once.
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Ticker {
            shared,
            thread: Some(thread),
        })
    }

    /// Marks a guest as running until the guard is dropped.
    pub fn running(&self) -> Running<'_> {
        if self.shared.running.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(t) = &self.thread
        {
            t.thread().unpark();
        }
        Running(self)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.shared.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
