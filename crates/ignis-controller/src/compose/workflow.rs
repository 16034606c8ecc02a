//! The workflow engine: drives the DAG of a workflow's steps, durably.
//!
//! An execution is written to the store before its first step starts, and every step (every
//! item of a map step) is written when it ends, before anything that depends on it starts.
//! After a crash, [`Controller::resume_workflows`] takes up each execution still running from
//! what the store holds: a step that ended is not run again; one that was running runs again
//! under the same activation id (ids of attempts are derived from the execution's id, the step
//! and the item), so each attempt has one visible activation.
//!
//! ```text
//!            ┌── ready: every step it waits for ended ──┐
//!  Waiting ──┤                                          ├─► Running ─► Done(output) | Failed
//!            └── condition false, or all waited skipped ─► Skipped
//! ```
//!
//! A failed step (after its retries) fails the execution; steps running then are left to end
//! on their own. At shutdown no new step starts and the execution stays `running`, to resume
//! at the next start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ignis_core::composition::{
    DEFAULT_RETRY_DELAY_MS, FunctionRef, MAX_MAP_ITEMS, Scope, WorkflowDef, WorkflowStep, resolve,
};
use ignis_core::{
    ActivationId, ExecutionRecord, ExecutionStatus, FunctionVersion, Status, StepRecord,
    StepStatus, now_ms,
};
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::{Ended, Event, decode};
use crate::{Controller, ControllerError, InFlightGuard, Result};

type Shared = Option<Arc<Ended>>;

/// The executions this process drives, by id: a second run of the same execution (the async
/// queue delivering it again after a restart, while it is being resumed) waits for the first
/// instead of driving it twice.
#[derive(Default)]
pub(crate) struct Executions {
    driving: Mutex<HashMap<ActivationId, watch::Receiver<Shared>>>,
}

/// What one execution's steps share.
struct Run {
    id: ActivationId,
    namespace: String,
    depth: u32,
    /// Time the engine spent on its steps beyond the functions' own (µs): calling, waiting for
    /// the call's task, recording the step.
    overhead_us: AtomicU64,
    /// Step runs (attempts and items) counted in `overhead_us`.
    runs: AtomicU64,
}

impl Run {
    fn account(&self, engine: Duration, function_us: u64) {
        let us = (engine.as_micros() as u64).saturating_sub(function_us);
        self.overhead_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// How a step ended.
enum StepEnd {
    Done(Value),
    Failed(String),
    /// The server is shutting down: the step did not end and is not recorded.
    Interrupted,
}

/// The state of a step while the execution runs.
#[derive(Clone)]
enum State {
    Waiting,
    Running,
    Done(Arc<Value>),
    Skipped,
}

/// One log line of the workflow's activation for a step record.
fn line(r: &StepRecord) -> String {
    let name = match r.index {
        Some(i) => format!("{}[{i}]", r.step),
        None => r.step.clone(),
    };
    match (r.status, r.activation_id) {
        (StepStatus::Skipped, _) => format!("- {name} skipped"),
        (status, Some(id)) => format!(
            "{id} {name} {} {}ms",
            match status {
                StepStatus::Succeeded => "succeeded",
                _ => "failed",
            },
            r.end_ms.saturating_sub(r.start_ms)
        ),
        (_, None) => format!("- {name} ended"),
    }
}

/// The answer of an execution that is over.
fn ended_from(e: &ExecutionRecord, lines: Vec<String>) -> Ended {
    match e.status {
        ExecutionStatus::Succeeded => Ended {
            status: Status::Success,
            body: Bytes::from(
                serde_json::to_vec(e.output.as_ref().unwrap_or(&Value::Null)).unwrap_or_default(),
            ),
            json: true,
            error: None,
            lines,
        },
        _ => Ended::failed(
            "StepFailed",
            e.error.clone().unwrap_or_else(|| "failed".into()),
            lines,
        ),
    }
}

impl Controller {
    /// Runs execution `id` of workflow `f`: a new one, or one that exists (resumed from its
    /// ended steps, or answered as it ended).
    pub(super) async fn run_workflow(
        &self,
        f: &Arc<FunctionVersion>,
        id: ActivationId,
        event: Bytes,
        trigger: Option<String>,
        depth: u32,
        parent: Option<ActivationId>,
    ) -> Result<Ended> {
        let joined = {
            let mut driving = self.inner.executions.driving.lock().unwrap();
            match driving.get(&id) {
                Some(rx) => Err(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    driving.insert(id, rx);
                    Ok(tx)
                }
            }
        };
        let tx = match joined {
            Ok(tx) => tx,
            Err(mut rx) => loop {
                if let Some(e) = rx.borrow_and_update().clone() {
                    return Ok((*e).clone());
                }
                if rx.changed().await.is_err() {
                    return Err(ControllerError::Unavailable);
                }
            },
        };
        // Forgotten however the drive ends (a panic included), so the id can be driven again.
        struct Forget<'a>(&'a Executions, ActivationId);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0
                    .driving
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.1);
            }
        }
        let forget = Forget(&self.inner.executions, id);
        let result = self.drive(f, id, event, trigger, depth, parent).await;
        drop(forget);
        if let Ok(e) = &result {
            let _ = tx.send(Some(Arc::new(e.clone())));
        }
        result
    }

    async fn drive(
        &self,
        f: &Arc<FunctionVersion>,
        id: ActivationId,
        event: Bytes,
        trigger: Option<String>,
        depth: u32,
        parent: Option<ActivationId>,
    ) -> Result<Ended> {
        let ns = f.namespace.clone();
        let existing = {
            let ns = ns.clone();
            self.blocking(move |i| Ok(i.store.get_execution(&ns, id)?))
                .await?
        };
        let (mut exec, ended_steps) = match existing {
            Some(e) if e.status != ExecutionStatus::Running => {
                let lines = e.steps.iter().map(line).collect();
                return Ok(ended_from(&e, lines));
            }
            Some(mut e) => {
                e.resumed += 1;
                let steps = std::mem::take(&mut e.steps);
                (e, steps)
            }
            None => {
                let input = if event.iter().all(|b| b.is_ascii_whitespace()) {
                    Value::Object(Default::default())
                } else {
                    serde_json::from_slice(&event).map_err(|e| {
                        ControllerError::BadRequest(format!("a workflow takes a JSON event ({e})"))
                    })?
                };
                let e = ExecutionRecord {
                    id,
                    namespace: ns.clone(),
                    function: f.name.clone(),
                    version: f.version,
                    status: ExecutionStatus::Running,
                    input,
                    output: None,
                    error: None,
                    start_ms: now_ms(),
                    end_ms: None,
                    trigger,
                    resumed: 0,
                    parent,
                    steps: Vec::new(),
                };
                (e, Vec::new())
            }
        };
        self.save_execution(&exec).await?;
        // The version the execution started with, even if another was deployed since.
        let f = if f.version == exec.version {
            f.clone()
        } else {
            self.get_function(&ns, &f.name, Some(exec.version)).await?
        };
        let Some(def) = f.spec.workflow.clone() else {
            return Err(ControllerError::Internal(format!(
                "{} version {} has no workflow",
                f.name, f.version
            )));
        };
        let run = Arc::new(Run {
            id,
            namespace: ns,
            depth,
            overhead_us: AtomicU64::new(0),
            runs: AtomicU64::new(0),
        });
        let outcome = self.drive_steps(&run, &def, &exec.input, ended_steps).await;
        let (result, mut lines) = match outcome {
            Ok(r) => r,
            Err(ControllerError::Unavailable) => return Err(ControllerError::Unavailable),
            Err(e) => (Err(e.to_string()), Vec::new()),
        };
        exec.end_ms = Some(now_ms());
        match result {
            Ok(output) => {
                exec.status = ExecutionStatus::Succeeded;
                exec.output = Some(output);
            }
            Err(why) => {
                exec.status = ExecutionStatus::Failed;
                exec.error = Some(why);
            }
        }
        self.save_execution(&exec).await?;
        let runs = run.runs.load(Ordering::Relaxed);
        let us = run.overhead_us.load(Ordering::Relaxed);
        if let Some(per_run) = us.checked_div(runs) {
            lines.push(format!(
                "- engine overhead {per_run} µs per step run ({runs} runs, {us} µs beyond the functions' own time)"
            ));
        }
        Ok(ended_from(&exec, lines))
    }

    async fn save_execution(&self, e: &ExecutionRecord) -> Result<()> {
        let e = e.clone();
        self.blocking(move |i| Ok(i.store.save_execution(&e)?))
            .await
    }

    async fn save_step(&self, run: &Run, r: &StepRecord) -> Result<()> {
        let started = Instant::now();
        let row = (run.id, run.namespace.clone(), r.clone());
        let saved = self
            .blocking(move |i| Ok(i.store.save_steps(std::slice::from_ref(&row))?))
            .await;
        run.account(started.elapsed(), 0);
        saved
    }

    /// Runs the steps not ended yet. The output of the workflow, or why it failed; and the
    /// lines of its activation.
    async fn drive_steps(
        &self,
        run: &Arc<Run>,
        def: &WorkflowDef,
        input: &Value,
        ended: Vec<StepRecord>,
    ) -> Result<(std::result::Result<Value, String>, Vec<String>)> {
        let n = def.steps.len();
        let mut state = vec![State::Waiting; n];
        let mut outputs: HashMap<String, Arc<Value>> = HashMap::new();
        let mut items: HashMap<String, BTreeMap<u32, StepRecord>> = HashMap::new();
        let mut lines: Vec<String> = ended.iter().map(line).collect();
        for r in ended {
            let Some(i) = def.steps.iter().position(|s| s.name == r.step) else {
                continue;
            };
            match (r.index, r.status) {
                (Some(k), _) => {
                    items.entry(r.step.clone()).or_default().insert(k, r);
                }
                (None, StepStatus::Succeeded) => {
                    let v = Arc::new(r.output.unwrap_or(Value::Null));
                    outputs.insert(r.step.clone(), v.clone());
                    state[i] = State::Done(v);
                }
                (None, StepStatus::Skipped) => state[i] = State::Skipped,
                (None, StepStatus::Failed) => {
                    let why = format!("step {:?} failed: {}", r.step, r.error.unwrap_or_default());
                    return Ok((Err(why), lines));
                }
            }
        }
        let mut tasks: JoinSet<(usize, StepEnd, Vec<String>)> = JoinSet::new();
        loop {
            // Start every step that can start; a skip may make others ready.
            let mut changed = true;
            while changed && !self.closing() {
                changed = false;
                for i in 0..n {
                    if !matches!(state[i], State::Waiting) {
                        continue;
                    }
                    let deps = def.deps(i);
                    if deps
                        .iter()
                        .any(|&d| matches!(state[d], State::Waiting | State::Running))
                    {
                        continue;
                    }
                    changed = true;
                    let step = &def.steps[i];
                    let scope = Scope {
                        input,
                        steps: &outputs,
                        item: None,
                    };
                    let all_skipped = !deps.is_empty()
                        && deps.iter().all(|&d| matches!(state[d], State::Skipped));
                    let holds = match &step.when {
                        Some(c) if !all_skipped => c.holds(&scope),
                        _ => Ok(!all_skipped),
                    };
                    let start = match holds {
                        Ok(false) => {
                            let now = now_ms();
                            let r = StepRecord {
                                step: step.name.clone(),
                                index: None,
                                function: step.function.clone(),
                                status: StepStatus::Skipped,
                                activation_id: None,
                                attempts: 0,
                                start_ms: now,
                                end_ms: now,
                                output: None,
                                error: None,
                            };
                            self.save_step(run, &r).await?;
                            lines.push(line(&r));
                            state[i] = State::Skipped;
                            continue;
                        }
                        Ok(true) => self.prepare(def, i, &scope, &deps, &state),
                        Err(e) => Err(format!("when: {e}")),
                    };
                    let work = match start {
                        Ok(w) => w,
                        Err(why) => {
                            let why = format!("step {:?} failed: {why}", step.name);
                            return Ok((Err(why), lines));
                        }
                    };
                    state[i] = State::Running;
                    let this = self.clone();
                    let run = run.clone();
                    let step = step.clone();
                    let done = items.remove(&step.name).unwrap_or_default();
                    tasks.spawn(async move {
                        let (end, lines) = this.run_step(&run, &step, work, done).await;
                        (i, end, lines)
                    });
                }
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (i, end, step_lines) =
                joined.map_err(|e| ControllerError::Internal(format!("step task: {e}")))?;
            lines.extend(step_lines);
            match end {
                StepEnd::Done(v) => {
                    let v = Arc::new(v);
                    outputs.insert(def.steps[i].name.clone(), v.clone());
                    state[i] = State::Done(v);
                }
                StepEnd::Failed(why) => {
                    // Steps still running end on their own; nothing new starts.
                    let why = format!("step {:?} failed: {why}", def.steps[i].name);
                    return Ok((Err(why), lines));
                }
                StepEnd::Interrupted => return Err(ControllerError::Unavailable),
            }
        }
        if state
            .iter()
            .any(|s| matches!(s, State::Waiting | State::Running))
        {
            // Only a shutdown leaves steps unstarted.
            return Err(ControllerError::Unavailable);
        }
        let output = match &def.output {
            Some(t) => {
                let scope = Scope {
                    input,
                    steps: &outputs,
                    item: None,
                };
                match resolve(t, &scope) {
                    Ok(v) => v,
                    Err(e) => return Ok((Err(format!("output: {e}")), lines)),
                }
            }
            None => state
                .iter()
                .rev()
                .find_map(|s| match s {
                    State::Done(v) => Some((**v).clone()),
                    _ => None,
                })
                .unwrap_or(Value::Null),
        };
        Ok((Ok(output), lines))
    }

    /// The input of step `i` (the inputs of its items, for a map step).
    fn prepare(
        &self,
        def: &WorkflowDef,
        i: usize,
        scope: &Scope<'_>,
        deps: &[usize],
        state: &[State],
    ) -> std::result::Result<Work, String> {
        let step = &def.steps[i];
        let Some(map) = &step.map else {
            let input = match &step.input {
                Some(t) => resolve(t, scope)?,
                None => default_input(def, scope.input, deps, state),
            };
            return Ok(Work::One(input));
        };
        let list = match resolve(map, scope)? {
            Value::Array(a) => a,
            other => {
                let kind = match other {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    Value::Object(_) => "an object",
                    Value::Array(_) => "an array",
                };
                return Err(format!("map over {kind}, not an array ({map})"));
            }
        };
        if list.len() > MAX_MAP_ITEMS {
            return Err(format!(
                "map over {} items, more than {MAX_MAP_ITEMS}",
                list.len()
            ));
        }
        let inputs = match &step.input {
            None => list,
            Some(t) => list
                .iter()
                .enumerate()
                .map(|(k, item)| {
                    resolve(
                        t,
                        &Scope {
                            input: scope.input,
                            steps: scope.steps,
                            item: Some((item, k)),
                        },
                    )
                })
                .collect::<std::result::Result<_, _>>()?,
        };
        Ok(Work::Map(inputs))
    }

    /// Runs a step to its end: every attempt of a plain step, every item of a map step.
    async fn run_step(
        &self,
        run: &Arc<Run>,
        step: &WorkflowStep,
        work: Work,
        done: BTreeMap<u32, StepRecord>,
    ) -> (StepEnd, Vec<String>) {
        let fref = match step.function_ref() {
            Ok(r) => r,
            Err(e) => return (StepEnd::Failed(e), Vec::new()),
        };
        let start_ms = now_ms();
        let inputs = match work {
            Work::One(input) => {
                let Some(r) = self.attempts(run, step, &fref, input, None).await else {
                    return (StepEnd::Interrupted, Vec::new());
                };
                if let Err(e) = self.save_step(run, &r).await {
                    return (
                        StepEnd::Failed(format!("cannot record it: {e}")),
                        vec![line(&r)],
                    );
                }
                let lines = vec![line(&r)];
                return match r.status {
                    StepStatus::Succeeded => {
                        (StepEnd::Done(r.output.unwrap_or(Value::Null)), lines)
                    }
                    _ => (StepEnd::Failed(r.error.unwrap_or_default()), lines),
                };
            }
            Work::Map(inputs) => inputs,
        };
        let len = inputs.len();
        let mut results: Vec<Option<Value>> = vec![None; len];
        let mut attempts = 0;
        for (k, r) in &done {
            if *k as usize >= len || r.status != StepStatus::Succeeded {
                continue;
            }
            results[*k as usize] = Some(r.output.clone().unwrap_or(Value::Null));
            attempts += r.attempts;
        }
        let permits = Arc::new(Semaphore::new(step.parallelism() as usize));
        let stop = Arc::new(AtomicBool::new(false));
        let mut set = JoinSet::new();
        let step = Arc::new(step.clone());
        for (k, input) in inputs.into_iter().enumerate() {
            if results[k].is_some() {
                continue;
            }
            let (this, run, step, fref) = (self.clone(), run.clone(), step.clone(), fref.clone());
            let (permits, stop) = (permits.clone(), stop.clone());
            set.spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return (k, None);
                };
                if stop.load(Ordering::Acquire) || this.closing() {
                    return (k, None);
                }
                let r = this
                    .attempts(&run, &step, &fref, input, Some(k as u32))
                    .await;
                if let Some(r) = &r {
                    if let Err(e) = this.save_step(&run, r).await {
                        stop.store(true, Ordering::Release);
                        let mut r = r.clone();
                        r.status = StepStatus::Failed;
                        r.error = Some(format!("cannot record it: {e}"));
                        return (k, Some(r));
                    }
                    if r.status != StepStatus::Succeeded {
                        stop.store(true, Ordering::Release);
                    }
                }
                (k, r)
            });
        }
        let mut lines = Vec::new();
        let mut failed = None;
        let mut interrupted = false;
        while let Some(joined) = set.join_next().await {
            let Ok((k, r)) = joined else {
                interrupted = true;
                continue;
            };
            let Some(r) = r else {
                // Not started: after a failure (which wins below) or at shutdown.
                interrupted = true;
                continue;
            };
            lines.push(line(&r));
            attempts += r.attempts;
            match r.status {
                StepStatus::Succeeded => results[k] = Some(r.output.unwrap_or(Value::Null)),
                _ => {
                    failed.get_or_insert_with(|| {
                        format!("item {k}: {}", r.error.unwrap_or_default())
                    });
                }
            }
        }
        if let Some(why) = failed {
            return (StepEnd::Failed(why), lines);
        }
        if interrupted || results.iter().any(Option::is_none) {
            return (StepEnd::Interrupted, lines);
        }
        let output = Value::Array(results.into_iter().flatten().collect());
        let r = StepRecord {
            step: step.name.clone(),
            index: None,
            function: step.function.clone(),
            status: StepStatus::Succeeded,
            activation_id: None,
            attempts,
            start_ms,
            end_ms: now_ms(),
            output: Some(output),
            error: None,
        };
        if let Err(e) = self.save_step(run, &r).await {
            return (StepEnd::Failed(format!("cannot record it: {e}")), lines);
        }
        (StepEnd::Done(r.output.unwrap_or(Value::Null)), lines)
    }

    /// Runs the attempts of one step (one item of a map step): the record of how it ended, or
    /// `None` if the server began shutting down before it did.
    async fn attempts(
        &self,
        run: &Run,
        step: &WorkflowStep,
        fref: &FunctionRef,
        input: Value,
        index: Option<u32>,
    ) -> Option<StepRecord> {
        let start_ms = now_ms();
        let key = match index {
            Some(k) => format!("{}/{k}", step.name),
            None => step.name.clone(),
        };
        let mut delay =
            Duration::from_millis(step.retry_delay_ms.unwrap_or(DEFAULT_RETRY_DELAY_MS));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let aid = run.id.derived(&format!("{key}#{attempt}"));
            let called_at = Instant::now();
            let call = self.call(
                &run.namespace,
                fref,
                Event::Json(input.clone()),
                aid,
                run.depth,
                Some(run.id),
            );
            let called = match step.timeout_ms {
                Some(t) => tokio::time::timeout(Duration::from_millis(t), call)
                    .await
                    .map_err(|_| t),
                None => Ok(call.await),
            };
            run.runs.fetch_add(1, Ordering::Relaxed);
            match &called {
                Ok(Ok(o)) => run.account(called_at.elapsed(), o.duration_us),
                Ok(Err(_)) => run.account(called_at.elapsed(), 0),
                // A step timeout: the attempt was the function's time.
                Err(_) => {}
            }
            let (error, retriable) = match called {
                Err(t) => (
                    format!("timeout: the attempt took more than the step's timeout_ms ({t})"),
                    true,
                ),
                Ok(Ok(o)) if o.status == Status::Success => {
                    return Some(StepRecord {
                        step: step.name.clone(),
                        index,
                        function: step.function.clone(),
                        status: StepStatus::Succeeded,
                        activation_id: Some(o.activation_id),
                        attempts: attempt,
                        start_ms,
                        end_ms: now_ms(),
                        output: Some(decode(&o.body)),
                        error: None,
                    });
                }
                Ok(Ok(o)) => (
                    match &o.error {
                        Some(e) => format!("{}: {}: {}", o.status, e.kind, e.message),
                        None => o.status.to_string(),
                    },
                    true,
                ),
                Ok(Err(ControllerError::Unavailable)) => return None,
                // The function is gone, or refuses the input: another attempt would too.
                Ok(Err(e @ (ControllerError::NotFound(_) | ControllerError::BadRequest(_)))) => {
                    (e.to_string(), false)
                }
                Ok(Err(e)) => (e.to_string(), true),
            };
            if !retriable || attempt > step.retries {
                return Some(StepRecord {
                    step: step.name.clone(),
                    index,
                    function: step.function.clone(),
                    status: StepStatus::Failed,
                    activation_id: Some(aid),
                    attempts: attempt,
                    start_ms,
                    end_ms: now_ms(),
                    output: None,
                    error: Some(error),
                });
            }
            if self.closing() {
                return None;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    }

    /// Resumes the executions left running; see [`Controller::resume_workflows`].
    pub(super) async fn resume_all(&self) -> Result<usize> {
        let running = self.blocking(|i| Ok(i.store.running_executions()?)).await?;
        let ids: HashSet<ActivationId> = running.iter().map(|e| e.id).collect();
        let mut resumed = 0;
        for mut e in running {
            let abandon = match e.parent {
                // Its parent's step calls it again under the same id, and so resumes it.
                Some(p) if ids.contains(&p) => continue,
                Some(_) => Some("the workflow whose step it was is over".to_string()),
                None => match self
                    .get_function(&e.namespace, &e.function, Some(e.version))
                    .await
                {
                    Ok(f) => {
                        let event = Bytes::from(serde_json::to_vec(&e.input).unwrap_or_default());
                        let (start_ms, trigger) = (e.start_ms, e.trigger.clone());
                        let inv = ignis_invoker::Invocation {
                            function: f,
                            id: e.id,
                            event,
                            accepted: std::time::Instant::now(),
                            lambda: None,
                        };
                        self.inner.in_flight.count.fetch_add(1, Ordering::AcqRel);
                        let this = self.clone();
                        tokio::spawn(async move {
                            let _guard = InFlightGuard(&this.inner.in_flight);
                            if let Err(err) =
                                this.run_composition(inv, start_ms, trigger, 1, None).await
                            {
                                tracing::warn!(execution = %e.id, error = %err, "resumed workflow");
                            }
                        });
                        resumed += 1;
                        None
                    }
                    Err(err) => Some(format!("cannot resume: {err}")),
                },
            };
            if let Some(why) = abandon {
                e.steps.clear();
                e.status = ExecutionStatus::Failed;
                e.error = Some(why);
                e.end_ms = Some(now_ms());
                self.save_execution(&e).await?;
            }
        }
        Ok(resumed)
    }
}

/// What a step runs: one input, or one per item of a map.
enum Work {
    One(Value),
    Map(Vec<Value>),
}

/// A step's input when it gives none: the workflow's input for a step that waits for none, the
/// output of the one step it waits for, or an object of the outputs of those it waits for that
/// ran, by name.
fn default_input(def: &WorkflowDef, input: &Value, deps: &[usize], state: &[State]) -> Value {
    match deps {
        [] => input.clone(),
        [d] => match &state[*d] {
            State::Done(v) => (**v).clone(),
            _ => Value::Null,
        },
        _ => Value::Object(
            deps.iter()
                .filter_map(|&d| match &state[d] {
                    State::Done(v) => Some((def.steps[d].name.clone(), (**v).clone())),
                    _ => None,
                })
                .collect(),
        ),
    }
}
