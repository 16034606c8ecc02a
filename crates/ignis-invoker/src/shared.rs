//! An instance that runs several invocations at once (`instance_concurrency` > 1).
//!
//! ```text
//!  handle.invoke ──Request──► driver task (owns the process) ──INVOKE n──► writer task ──► fd 3
//!        ▲                      │  pending: [n → reply, logs, deadline]
//!        └──(RunEnd, logs)──────┤◄── RESULT/ERROR n, LOG n ◄── fd 3
//!                               └◄── stdout/stderr pipes: to the oldest pending invocation
//! ```
//!
//! One driver task per instance reads everything the instance sends and matches answers to
//! invocations by frame id; the bootstrap sends each invocation's output as LOG frames, so
//! every activation gets its own logs. A deadline passing, the process dying or a protocol
//! violation ends the instance, and with it every invocation still running on it (they are
//! told why). The pool holds one handle per concurrent place; the process ends when the last
//! handle is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use ignis_core::{ActivationId, ErrorPhase, FunctionVersion, LogStream, Status};
use ignis_runtime::protocol::{self, Frame, FrameKind, InvokeMeta};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant as TokioInstant;

use crate::instance::{self, ProcessInstance, RunEnd};
use crate::logs::LogCollector;

/// What the driver hands back: how the invocation ended and its logs.
type Reply = (RunEnd, LogCollector);

struct Request {
    id: ActivationId,
    event: Bytes,
    deadline: TokioInstant,
    deadline_ms: u64,
    reply: oneshot::Sender<Reply>,
    tap: Option<crate::logs::LiveTap>,
}

/// The shared part of a concurrent instance; the pool's handles hold it.
pub(crate) struct SharedInstance {
    requests: mpsc::UnboundedSender<Request>,
    dead: Arc<AtomicBool>,
}

impl SharedInstance {
    /// Takes over an initialised process and starts its driver.
    pub fn start(p: ProcessInstance, f: Arc<FunctionVersion>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let dead = Arc::new(AtomicBool::new(false));
        tokio::spawn(drive(p, f, rx, dead.clone()));
        SharedInstance { requests: tx, dead }
    }

    /// Whether its process has ended.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// Runs one invocation on it, alongside whatever else it runs.
    pub async fn invoke(
        &self,
        id: ActivationId,
        event: Bytes,
        deadline: TokioInstant,
        deadline_ms: u64,
        tap: Option<crate::logs::LiveTap>,
    ) -> Reply {
        let (reply, rx) = oneshot::channel();
        let req = Request {
            id,
            event,
            deadline,
            deadline_ms,
            reply,
            tap,
        };
        let lost = || {
            let end = RunEnd::failed(
                Status::Crash,
                "InstanceLost",
                "the instance ended before it could run the invocation".into(),
                ErrorPhase::Invoke,
            );
            (end, LogCollector::default())
        };
        if self.requests.send(req).is_err() {
            return lost();
        }
        rx.await.unwrap_or_else(|_| lost())
    }
}

struct Pending {
    seq: u64,
    deadline: TokioInstant,
    reply: oneshot::Sender<Reply>,
    logs: LogCollector,
}

impl Pending {
    fn finish(self, end: RunEnd) {
        let _ = self.reply.send((end, self.logs));
    }
}

/// The error message of a run's end ("" for a success).
fn message_of(end: &RunEnd) -> String {
    end.error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default()
}

/// Why the instance ended with invocations still running on it.
fn lost_end(why: &str) -> RunEnd {
    RunEnd::failed(
        Status::Crash,
        "InstanceLost",
        format!("the instance running this invocation was stopped: {why}"),
        ErrorPhase::Invoke,
    )
}

async fn drive(
    p: ProcessInstance,
    f: Arc<FunctionVersion>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    dead: Arc<AtomicBool>,
) {
    let ProcessInstance {
        mut proc,
        channel,
        mut rbuf,
        slot,
        data,
        ..
    } = p;
    let _slot = slot; // a stem cell's code directory lives as long as the process
    let _data = data; // and its token and data relay too
    let (mut rd, mut wr) = channel.into_split();
    // Writes go through their own task so that a large event never stops the reading.
    let (frames, mut to_write) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(frame) = to_write.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let mut pending: Vec<Pending> = Vec::new();
    let mut stray = LogCollector::default(); // output while nothing runs: the next one's
    let mut next_seq = 1u64;
    let mut scratch = [0u8; 16 * 1024];
    let mut accepting = true;
    let outcome: Result<(), RunEnd> = 'drive: loop {
        loop {
            match protocol::parse_frame(&mut rbuf) {
                Ok(Some(fr)) => {
                    if let Err(end) = on_frame(fr, &mut pending, &proc) {
                        break 'drive Err(end);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    break 'drive Err(RunEnd::failed(
                        Status::Crash,
                        "ProtocolError",
                        e.to_string(),
                        ErrorPhase::Invoke,
                    ));
                }
            }
        }
        if !accepting && pending.is_empty() {
            break Ok(());
        }
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(64 * 1024);
        }
        let next_deadline = pending.iter().map(|p| p.deadline).min();
        let target = pending.first_mut().map_or(&mut stray, |p| &mut p.logs);
        tokio::select! {
            biased;
            r = rd.read_buf(&mut rbuf) => match r {
                Ok(0) => {
                    let _ = proc.wait_exit(std::time::Duration::from_millis(200)).await;
                    break Err(instance::died(&mut proc, target, ErrorPhase::Invoke));
                }
                Ok(_) => {}
                Err(e) => break Err(RunEnd::failed(
                    Status::Crash, "ProtocolError", e.to_string(), ErrorPhase::Invoke,
                )),
            },
            r = proc.stdout.readable() => {
                if r.is_ok() { instance::drain(&proc.stdout, LogStream::Stdout, target, &mut scratch); }
            }
            r = proc.stderr.readable() => {
                if r.is_ok() { instance::drain(&proc.stderr, LogStream::Stderr, target, &mut scratch); }
            }
            req = requests.recv(), if accepting => match req {
                None => accepting = false,
                Some(req) => {
                    let seq = next_seq;
                    next_seq += 1;
                    let request_id = req.id.to_string();
                    let meta = InvokeMeta { request_id: &request_id, deadline_ms: req.deadline_ms };
                    if frames.send(protocol::encode_invoke(seq, &meta, &req.event)).is_err() {
                        let _ = req.reply.send((lost_end("its channel broke"), std::mem::take(&mut stray)));
                        continue;
                    }
                    let mut logs = std::mem::take(&mut stray);
                    logs.set_tap(req.tap);
                    pending.push(Pending {
                        seq,
                        deadline: req.deadline,
                        reply: req.reply,
                        logs,
                    });
                }
            },
            _ = tokio::time::sleep_until(next_deadline.unwrap_or_else(TokioInstant::now)),
                if next_deadline.is_some() => {
                proc.kill();
                let now = TokioInstant::now();
                let (late, rest): (Vec<_>, Vec<_>) =
                    pending.drain(..).partition(|p| p.deadline <= now);
                pending = rest;
                for mut p in late {
                    instance::drain_both(&proc, &mut p.logs);
                    p.finish(instance::timeout_end(&f, ErrorPhase::Invoke));
                }
                break Err(lost_end("another invocation on it timed out"));
            }
        }
    };
    dead.store(true, Ordering::Relaxed);
    proc.kill();
    if let Err(end) = outcome {
        // The first still running gets the classified end (crash, out of memory, protocol);
        // the others are told the instance was lost under them.
        let why = message_of(&end);
        let mut first = true;
        for mut p in pending.drain(..) {
            if first {
                instance::drain_both(&proc, &mut p.logs);
                p.finish(end.clone());
                first = false;
            } else {
                p.finish(lost_end(&why));
            }
        }
    }
    // Requests that raced the end are answered by the handle (their reply is dropped).
    requests.close();
}

/// Handles one frame from the instance. `Err` ends the instance.
fn on_frame(
    fr: Frame,
    pending: &mut Vec<Pending>,
    proc: &ignis_sandbox::SandboxedProcess,
) -> Result<(), RunEnd> {
    let Some(pos) = pending.iter().position(|p| p.seq == fr.id) else {
        // Output or an answer for an invocation that is already over (it timed out or was
        // answered): nothing waits for it.
        return match fr.kind {
            FrameKind::Log | FrameKind::Result | FrameKind::Error => Ok(()),
            other => Err(instance::protocol_violation(other, ErrorPhase::Invoke)),
        };
    };
    match fr.kind {
        FrameKind::Log => {
            let (stream, bytes) = match fr.payload.split_first() {
                Some((1, rest)) => (LogStream::Stdout, rest),
                Some((2, rest)) => (LogStream::Stderr, rest),
                _ => {
                    return Err(RunEnd::failed(
                        Status::Crash,
                        "ProtocolError",
                        "a LOG frame names no stream".into(),
                        ErrorPhase::Invoke,
                    ));
                }
            };
            pending[pos].logs.push(stream, bytes);
            Ok(())
        }
        FrameKind::Result | FrameKind::Error => {
            let mut p = pending.remove(pos);
            instance::drain_both(proc, &mut p.logs);
            let end = instance::answer(fr, proc);
            if end.reusable {
                p.finish(end);
                Ok(())
            } else {
                // Out of memory: the process was killed, and everyone on it is lost.
                let why = message_of(&end);
                p.finish(end);
                Err(lost_end(&why))
            }
        }
        other => Err(instance::protocol_violation(other, ErrorPhase::Invoke)),
    }
}
