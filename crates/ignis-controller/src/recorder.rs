//! Writes activation records off the hot path: invocations hand finished records to a channel,
//! and one thread writes them in batches, each batch one SQLite transaction.
//!
//! Readers call [`Recorder::flush`] first, so that an activation whose response was sent is
//! always found. On shutdown the thread drains the channel before it exits: nothing recorded
//! is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use ignis_core::ActivationRecord;
use ignis_store::Store;
use tokio::sync::{mpsc, oneshot};

const BATCH: usize = 512;
/// How long a small batch waits for more records before it is written.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);
/// Batches smaller than this linger.
const LINGER_BELOW: usize = 32;
const CHANNEL: usize = 64 * 1024;

/// A finished activation: its record, and its result bytes still to be decoded.
pub(crate) struct Finished {
    pub record: ActivationRecord,
    pub result: Option<Bytes>,
}

enum Msg {
    Record(Box<Finished>),
    Flush(oneshot::Sender<()>),
}

/// Handle to the recording thread.
pub(crate) struct Recorder {
    tx: std::sync::Mutex<Option<mpsc::Sender<Msg>>>,
    pending: Arc<AtomicUsize>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn decode_result(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

impl Recorder {
    pub fn start(store: Arc<dyn Store>) -> std::io::Result<Self> {
        let (tx, mut rx) = mpsc::channel::<Msg>(CHANNEL);
        let pending = Arc::new(AtomicUsize::new(0));
        let counter = pending.clone();
        let thread = std::thread::Builder::new()
            .name("ignis-recorder".into())
            .spawn(move || {
                let mut batch: Vec<ActivationRecord> = Vec::with_capacity(BATCH);
                let mut flushes = Vec::new();
                let mut lingered = false;
                while let Some(first) = rx.blocking_recv() {
                    let mut next = Some(first);
                    while let Some(msg) = next.take() {
                        match msg {
                            Msg::Record(f) => {
                                let Finished { mut record, result } = *f;
                                record.result = result.as_deref().map(decode_result);
                                batch.push(record);
                            }
                            Msg::Flush(done) => flushes.push(done),
                        }
                        if batch.len() < BATCH {
                            next = rx.try_recv().ok();
                            // Under light load every activation would be its own transaction:
                            // give the batch a moment to grow, unless a reader is waiting.
                            if next.is_none()
                                && flushes.is_empty()
                                && !lingered
                                && batch.len() < LINGER_BELOW
                            {
                                lingered = true;
                                std::thread::sleep(LINGER);
                                next = rx.try_recv().ok();
                            }
                        }
                    }
                    lingered = false;
                    if !batch.is_empty() {
                        write_batch(store.as_ref(), &batch);
                        counter.fetch_sub(batch.len(), Ordering::AcqRel);
                        batch.clear();
                    }
                    for done in flushes.drain(..) {
                        let _ = done.send(());
                    }
                }
            })?;
        Ok(Recorder {
            tx: std::sync::Mutex::new(Some(tx)),
            pending,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    fn sender(&self) -> Option<mpsc::Sender<Msg>> {
        self.tx.lock().unwrap().clone()
    }

    /// Queues a finished activation for writing.
    pub async fn record(&self, finished: Finished) {
        let Some(tx) = self.sender() else {
            tracing::error!(id = %finished.record.id, "activation finished after the recorder stopped; it is not recorded");
            return;
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        if tx.send(Msg::Record(Box::new(finished))).await.is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Waits until every activation queued so far is written.
    pub async fn flush(&self) {
        if self.pending.load(Ordering::Acquire) == 0 {
            return;
        }
        let Some(tx) = self.sender() else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Stops accepting records, writes what is queued, and joins the thread.
    pub fn shutdown(&self) {
        drop(self.tx.lock().unwrap().take());
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}

/// Writes a batch, retrying while the database refuses (disk full, locked): records are never
/// dropped, the writer waits.
fn write_batch(store: &dyn Store, batch: &[ActivationRecord]) {
    let mut delay = std::time::Duration::from_millis(50);
    loop {
        match store.insert_activations(batch) {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(error = %e, count = batch.len(), "cannot write activations; retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}
