//! Compositions: functions made of other functions. A *sequence* chains its components (the
//! output of each is the input of the next); a *workflow* is a DAG of steps with references
//! between them, `map` fan-out, joins, conditions, and per-step retries and timeouts.
//!
//! This module holds the definitions, their static checks (everything that can be refused at
//! deploy time without the store) and the records of workflow executions. The engine that runs
//! them is in the controller.
//!
//! ```text
//!  input ─► split ─► count (map over $.steps.split.chunks, parallelism 64) ─► total (join)
//! ```

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ActivationId, FunctionSpec, SpecError, validate_function_name};

/// Deepest nesting of compositions (a sequence whose component is a workflow whose step is a
/// sequence… counts 3).
pub const MAX_NESTING: u32 = 8;
/// Most components of a sequence.
pub const MAX_COMPONENTS: usize = 50;
/// Most steps of a workflow.
pub const MAX_STEPS: usize = 100;
/// Largest `parallelism` of a map step.
pub const MAX_MAP_PARALLELISM: u32 = 1000;
/// Most items one map step runs over.
pub const MAX_MAP_ITEMS: usize = 10_000;
/// Most retries of one step.
pub const MAX_STEP_RETRIES: u32 = 10;
/// Default `parallelism` of a map step.
pub const DEFAULT_MAP_PARALLELISM: u32 = 16;
/// Default pause before a step's first retry (doubled for each further one).
pub const DEFAULT_RETRY_DELAY_MS: u64 = 100;

/// A reference to a function: `name` (its latest version when run) or `name@version`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionRef {
    /// The function's name.
    pub name: String,
    /// A pinned version.
    pub version: Option<u32>,
}

impl FunctionRef {
    /// Parses `name` or `name@version`.
    pub fn parse(s: &str) -> Result<FunctionRef, String> {
        let (name, version) = match s.split_once('@') {
            Some((n, v)) => {
                let v: u32 =
                    v.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                        format!("{s:?}: the version after @ must be a number ≥ 1")
                    })?;
                (n, Some(v))
            }
            None => (s, None),
        };
        validate_function_name(name).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(FunctionRef {
            name: name.to_string(),
            version,
        })
    }
}

impl std::fmt::Display for FunctionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}@{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A workflow: steps forming a DAG, and what it returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    /// The steps. A step without `after` runs after the step listed before it (the first one
    /// at once), so a plain list is a chain.
    pub steps: Vec<WorkflowStep>,
    /// The workflow's result, a template (see [`resolve`]); by default the output of the last
    /// step listed that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowStep {
    /// Unique within the workflow; how later steps refer to its output (`$.steps.NAME`).
    pub name: String,
    /// The function run: `name` or `name@version`.
    pub function: String,
    /// The steps this one waits for; `[]` to start at once. Absent: the step listed before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    /// The step's input, a template (see [`resolve`]). Absent: the workflow's input for a step
    /// that waits for none, the output of the one step it waits for, or an object of the
    /// outputs of the steps it waits for, by name (a join); in a map, the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Makes this a map step: a reference to an array (or an array); the function runs once per
    /// item and the step's output is the array of their results, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<Value>,
    /// Items of a map run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// Runs the step only if this holds; otherwise it is skipped, and so are the steps that wait
    /// only for skipped steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
    /// Further attempts of a failed run (of each item, in a map).
    #[serde(default)]
    pub retries: u32,
    /// Pause before the first retry, doubled for each further one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_ms: Option<u64>,
    /// Time limit of one attempt, beyond which it counts as failed with `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A test on a value of the workflow's state: exactly one of the tests is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The reference tested, e.g. `$.steps.check.ok`.
    pub path: String,
    /// Equal to this JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    /// Not equal to this JSON value (true when the path is missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_equals: Option<Value>,
    /// A number greater than this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<Value>,
    /// A number at least this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<Value>,
    /// A number less than this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<Value>,
    /// A number at most this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<Value>,
    /// The path exists (true) or not (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

/// One segment of a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    /// `.key`
    Key(String),
    /// `[n]`
    Index(usize),
}

/// Parses a reference: `$`, then `.key` and `[n]` segments, e.g. `$.steps.split.chunks[0]`.
pub fn parse_path(s: &str) -> Result<Vec<PathSeg>, String> {
    let bad = |why: &str| format!("reference {s:?}: {why}");
    let mut rest = s
        .strip_prefix('$')
        .ok_or_else(|| bad("must start with $"))?;
    let mut segs = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err(bad("empty key"));
            }
            segs.push(PathSeg::Key(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| bad("[ without ]"))?;
            let n = r[..end]
                .parse()
                .map_err(|_| bad("an index in [] must be a number"))?;
            segs.push(PathSeg::Index(n));
            rest = &r[end + 1..];
        } else {
            return Err(bad("expected . or [ after a segment"));
        }
    }
    match segs.first() {
        Some(PathSeg::Key(k)) if matches!(k.as_str(), "input" | "steps" | "item" | "index") => {}
        _ => return Err(bad("must start with $.input, $.steps, $.item or $.index")),
    }
    if matches!(segs.first(), Some(PathSeg::Key(k)) if k == "steps")
        && !matches!(segs.get(1), Some(PathSeg::Key(_)))
    {
        return Err(bad("$.steps must be followed by a step name"));
    }
    Ok(segs)
}

/// Whether a template string is a reference (`$…`); `$$…` is a literal `$…`.
fn as_reference(s: &str) -> Option<&str> {
    (s.starts_with('$') && !s.starts_with("$$")).then_some(s)
}

/// What references are resolved against.
pub struct Scope<'a> {
    /// The workflow's input.
    pub input: &'a Value,
    /// The outputs of the steps that ran, by name.
    pub steps: &'a HashMap<String, std::sync::Arc<Value>>,
    /// In a map: the item and its index.
    pub item: Option<(&'a Value, usize)>,
}

impl Scope<'_> {
    /// The value a reference points at, if any.
    pub fn lookup(&self, path: &str) -> Result<Option<Value>, String> {
        let segs = parse_path(path)?;
        let (root, rest): (Value, &[PathSeg]) = match &segs[0] {
            PathSeg::Key(k) if k == "input" => return Ok(walk(self.input, &segs[1..]).cloned()),
            PathSeg::Key(k) if k == "item" => match self.item {
                Some((item, _)) => return Ok(walk(item, &segs[1..]).cloned()),
                None => return Ok(None),
            },
            PathSeg::Key(k) if k == "index" => match self.item {
                Some((_, i)) => (Value::from(i), &segs[1..]),
                None => return Ok(None),
            },
            _ => {
                let PathSeg::Key(step) = &segs[1] else {
                    return Ok(None);
                };
                return Ok(self
                    .steps
                    .get(step)
                    .and_then(|v| walk(v, &segs[2..]))
                    .cloned());
            }
        };
        Ok(walk(&root, rest).cloned())
    }
}

fn walk<'v>(mut v: &'v Value, segs: &[PathSeg]) -> Option<&'v Value> {
    for s in segs {
        v = match s {
            PathSeg::Key(k) => v.get(k)?,
            PathSeg::Index(i) => v.get(*i)?,
        };
    }
    Some(v)
}

/// Fills a template: every string that is a reference (`$.input…`, `$.steps.NAME…`, `$.item…`,
/// `$.index`) becomes the value it points at; `$$x` is the literal string `$x`; anything else is
/// kept. A reference to nothing is an error.
pub fn resolve(template: &Value, scope: &Scope<'_>) -> Result<Value, String> {
    Ok(match template {
        Value::String(s) => match as_reference(s) {
            Some(r) => scope
                .lookup(r)?
                .ok_or_else(|| format!("reference {r:?} points at nothing"))?,
            None if s.starts_with("$$") => Value::String(s[1..].to_string()),
            None => template.clone(),
        },
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|v| resolve(v, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v, scope)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

impl Condition {
    /// Whether the condition holds in `scope`.
    pub fn holds(&self, scope: &Scope<'_>) -> Result<bool, String> {
        let v = scope.lookup(&self.path)?;
        let num = |x: &Value| x.as_f64();
        let cmp =
            |bound: &Value, f: fn(f64, f64) -> bool| match (v.as_ref().and_then(num), num(bound)) {
                (Some(a), Some(b)) => f(a, b),
                _ => false,
            };
        Ok(if let Some(e) = &self.equals {
            v.as_ref() == Some(e)
        } else if let Some(e) = &self.not_equals {
            v.as_ref() != Some(e)
        } else if let Some(b) = &self.gt {
            cmp(b, |a, b| a > b)
        } else if let Some(b) = &self.gte {
            cmp(b, |a, b| a >= b)
        } else if let Some(b) = &self.lt {
            cmp(b, |a, b| a < b)
        } else if let Some(b) = &self.lte {
            cmp(b, |a, b| a <= b)
        } else {
            v.is_some() == self.exists.unwrap_or(true)
        })
    }

    fn validate(&self) -> Result<(), String> {
        parse_path(&self.path)?;
        let tests = [
            self.equals.is_some(),
            self.not_equals.is_some(),
            self.gt.is_some(),
            self.gte.is_some(),
            self.lt.is_some(),
            self.lte.is_some(),
            self.exists.is_some(),
        ];
        if tests.iter().filter(|t| **t).count() != 1 {
            return Err(
                "give exactly one of equals, not_equals, gt, gte, lt, lte, exists".to_string(),
            );
        }
        for b in [&self.gt, &self.gte, &self.lt, &self.lte]
            .into_iter()
            .flatten()
        {
            if !b.is_number() {
                return Err(format!("{b} is not a number"));
            }
        }
        Ok(())
    }
}

/// Every reference in a template.
fn references(template: &Value, out: &mut Vec<String>) {
    match template {
        Value::String(s) => {
            if let Some(r) = as_reference(s) {
                out.push(r.to_string());
            }
        }
        Value::Array(a) => a.iter().for_each(|v| references(v, out)),
        Value::Object(o) => o.values().for_each(|v| references(v, out)),
        _ => {}
    }
}

impl WorkflowStep {
    /// The function run by the step.
    pub fn function_ref(&self) -> Result<FunctionRef, String> {
        FunctionRef::parse(&self.function)
    }

    /// Items of a map run at once.
    pub fn parallelism(&self) -> u32 {
        self.parallelism.unwrap_or(DEFAULT_MAP_PARALLELISM)
    }
}

impl WorkflowDef {
    /// The indexes of the steps step `i` waits for.
    pub fn deps(&self, i: usize) -> Vec<usize> {
        match &self.steps[i].after {
            Some(names) => names
                .iter()
                .filter_map(|n| self.steps.iter().position(|s| &s.name == n))
                .collect(),
            None if i > 0 => vec![i - 1],
            None => Vec::new(),
        }
    }

    /// Every function referenced by a step.
    pub fn functions(&self) -> Vec<FunctionRef> {
        self.steps
            .iter()
            .filter_map(|s| s.function_ref().ok())
            .collect()
    }

    /// Checks everything that needs no store: names, references between steps (only to steps
    /// that surely ran before), cycles, maps over something that is not an array, conditions
    /// and limits.
    pub fn validate(&self) -> Result<(), SpecError> {
        let err = |m: String| SpecError::new("workflow", m);
        if self.steps.is_empty() {
            return Err(err("a workflow needs at least one step".into()));
        }
        if self.steps.len() > MAX_STEPS {
            return Err(err(format!("more than {MAX_STEPS} steps")));
        }
        let mut names = HashSet::new();
        for s in &self.steps {
            let ok = !s.name.is_empty()
                && s.name.len() <= 64
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
            if !ok {
                return Err(err(format!(
                    "step name {:?}: 1 to 64 letters, digits, _ or -",
                    s.name
                )));
            }
            if !names.insert(s.name.as_str()) {
                return Err(err(format!("two steps are named {:?}", s.name)));
            }
        }
        for s in &self.steps {
            let at = |m: String| err(format!("step {:?}: {m}", s.name));
            s.function_ref().map_err(|m| at(format!("function {m}")))?;
            for a in s.after.iter().flatten() {
                if a == &s.name {
                    return Err(at("waits for itself".into()));
                }
                if !names.contains(a.as_str()) {
                    return Err(at(format!("waits for {a:?}, which is not a step")));
                }
            }
            if s.retries > MAX_STEP_RETRIES {
                return Err(at(format!(
                    "retries {} is outside 0..={MAX_STEP_RETRIES}",
                    s.retries
                )));
            }
            if let Some(t) = s.timeout_ms
                && !(1..=FunctionSpec::MAX_TIMEOUT_MS).contains(&t)
            {
                return Err(at(format!(
                    "timeout_ms {t} is outside 1..={}",
                    FunctionSpec::MAX_TIMEOUT_MS
                )));
            }
            if s.retry_delay_ms.is_some_and(|d| d > 60_000) {
                return Err(at("retry_delay_ms is more than 60000".into()));
            }
            match (&s.map, s.parallelism) {
                (None, Some(_)) => return Err(at("parallelism is only for map steps".into())),
                (Some(_), Some(p)) if !(1..=MAX_MAP_PARALLELISM).contains(&p) => {
                    return Err(at(format!(
                        "parallelism {p} is outside 1..={MAX_MAP_PARALLELISM}"
                    )));
                }
                _ => {}
            }
            match &s.map {
                Some(Value::String(r)) if as_reference(r).is_some() => {}
                Some(Value::Array(_)) | None => {}
                Some(other) => {
                    return Err(at(format!(
                        "map must be a reference to an array (such as $.input.items) or an array, not {other}"
                    )));
                }
            }
            if let Some(c) = &s.when {
                c.validate().map_err(|m| at(format!("when: {m}")))?;
            }
        }
        let order = self.topological_order()?;
        // Ancestors: the steps that surely finished before each one starts.
        let mut ancestors: Vec<HashSet<usize>> = vec![HashSet::new(); self.steps.len()];
        for &i in &order {
            let mut mine = HashSet::new();
            for d in self.deps(i) {
                mine.insert(d);
                mine.extend(ancestors[d].iter().copied());
            }
            ancestors[i] = mine;
        }
        for (i, s) in self.steps.iter().enumerate() {
            let at = |m: String| err(format!("step {:?}: {m}", s.name));
            let mut refs = Vec::new();
            for t in [&s.input, &s.map].into_iter().flatten() {
                references(t, &mut refs);
            }
            if let Some(c) = &s.when {
                refs.push(c.path.clone());
            }
            for r in refs {
                let segs = parse_path(&r).map_err(at)?;
                match (&segs[0], segs.get(1)) {
                    (PathSeg::Key(k), _) if (k == "item" || k == "index") && s.map.is_none() => {
                        return Err(at(format!("{r:?}: $.{k} is only known in a map step")));
                    }
                    (PathSeg::Key(k), Some(PathSeg::Key(other))) if k == "steps" => {
                        let Some(j) = self.steps.iter().position(|x| &x.name == other) else {
                            return Err(at(format!("{r:?}: there is no step {other:?}")));
                        };
                        if !ancestors[i].contains(&j) {
                            return Err(at(format!(
                                "{r:?}: step {other:?} does not run before this one (add it to after)"
                            )));
                        }
                    }
                    _ => {}
                }
            }
            if let Some(Value::String(r)) = &s.map
                && matches!(parse_path(r).map_err(at)?.first(), Some(PathSeg::Key(k)) if k == "item" || k == "index")
            {
                return Err(at("map cannot refer to $.item or $.index".into()));
            }
        }
        if let Some(o) = &self.output {
            let mut refs = Vec::new();
            references(o, &mut refs);
            for r in refs {
                let segs = parse_path(&r).map_err(|m| err(format!("output: {m}")))?;
                if let (PathSeg::Key(k), Some(PathSeg::Key(other))) = (&segs[0], segs.get(1))
                    && k == "steps"
                    && !names.contains(other.as_str())
                {
                    return Err(err(format!("output: {r:?}: there is no step {other:?}")));
                }
                if matches!(&segs[0], PathSeg::Key(k) if k == "item" || k == "index") {
                    return Err(err(format!(
                        "output: {r:?}: $.item is only known in a map step"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The steps in an order where each comes after those it waits for; a cycle is an error
    /// naming it.
    pub fn topological_order(&self) -> Result<Vec<usize>, SpecError> {
        let n = self.steps.len();
        let deps: Vec<Vec<usize>> = (0..n).map(|i| self.deps(i)).collect();
        let mut state = vec![0u8; n]; // 0 new, 1 on the path, 2 done
        let mut order = Vec::with_capacity(n);
        fn visit(
            i: usize,
            deps: &[Vec<usize>],
            state: &mut [u8],
            path: &mut Vec<usize>,
            order: &mut Vec<usize>,
        ) -> Result<(), Vec<usize>> {
            match state[i] {
                2 => return Ok(()),
                1 => {
                    let from = path.iter().position(|&p| p == i).unwrap_or(0);
                    let mut cycle = path[from..].to_vec();
                    cycle.push(i);
                    return Err(cycle);
                }
                _ => {}
            }
            state[i] = 1;
            path.push(i);
            for &d in &deps[i] {
                visit(d, deps, state, path, order)?;
            }
            path.pop();
            state[i] = 2;
            order.push(i);
            Ok(())
        }
        for i in 0..n {
            let mut path = Vec::new();
            visit(i, &deps, &mut state, &mut path, &mut order).map_err(|cycle| {
                let names: Vec<&str> = cycle.iter().map(|&c| self.steps[c].name.as_str()).collect();
                SpecError::new(
                    "workflow",
                    format!("the steps form a cycle: {}", names.join(" ← ")),
                )
            })?;
        }
        Ok(order)
    }
}

/// Checks the components of a sequence (not whether they exist).
pub fn validate_components(components: &[String]) -> Result<Vec<FunctionRef>, SpecError> {
    if components.is_empty() {
        return Err(SpecError::new(
            "components",
            "a sequence needs at least one component",
        ));
    }
    if components.len() > MAX_COMPONENTS {
        return Err(SpecError::new(
            "components",
            format!("more than {MAX_COMPONENTS} components"),
        ));
    }
    components
        .iter()
        .map(|c| FunctionRef::parse(c).map_err(|m| SpecError::new("components", m)))
        .collect()
}

/// Where a workflow execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Steps are running (or will, after a restart).
    Running,
    /// Every step that had to run succeeded.
    Succeeded,
    /// A step failed every attempt.
    Failed,
}

impl ExecutionStatus {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "running",
            ExecutionStatus::Succeeded => "succeeded",
            ExecutionStatus::Failed => "failed",
        }
    }
}

/// One run of a workflow; its id is the workflow's activation id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// The workflow's activation id.
    pub id: ActivationId,
    /// Namespace.
    pub namespace: String,
    /// The workflow function.
    pub function: String,
    /// Its version that runs.
    pub version: u32,
    /// Where it is.
    pub status: ExecutionStatus,
    /// The workflow's input.
    pub input: Value,
    /// Its result, once succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Start (ms since epoch).
    pub start_ms: u64,
    /// End, once over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// The trigger that caused it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// How many times the engine took it up again after a restart.
    #[serde(default)]
    pub resumed: u32,
    /// The execution of the workflow whose step this one is, if any (such an execution is
    /// resumed by its parent's step, not on its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ActivationId>,
    /// The steps that ended, in order of their end (filled on reads only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
}

/// How a step (or one item of a map step) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// It ran and succeeded.
    Succeeded,
    /// It failed every attempt.
    Failed,
    /// Its condition did not hold, or every step it waits for was skipped.
    Skipped,
}

/// The durable record of a step that ended (a map step has one per item plus one for the step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's name.
    pub step: String,
    /// In a map step, the item's index; `None` for the step as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The function run, as the step names it.
    pub function: String,
    /// How it ended.
    pub status: StepStatus,
    /// The activation of its last attempt (none for a skipped step or a whole map step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_id: Option<ActivationId>,
    /// Attempts made.
    pub attempts: u32,
    /// Start of the first attempt (ms since epoch).
    pub start_ms: u64,
    /// End of the last attempt.
    pub end_ms: u64,
    /// Its output, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wf(v: Value) -> Result<WorkflowDef, String> {
        let d: WorkflowDef = serde_json::from_value(v).map_err(|e| e.to_string())?;
        d.validate().map_err(|e| e.to_string())?;
        Ok(d)
    }

    #[test]
    fn refs_parse() {
        assert_eq!(FunctionRef::parse("a@3").unwrap().version, Some(3));
        assert_eq!(FunctionRef::parse("a").unwrap().version, None);
        assert!(FunctionRef::parse("a@x").is_err());
        assert!(FunctionRef::parse("a@0").is_err());
        assert_eq!(
            parse_path("$.steps.a.b[2]").unwrap(),
            vec![
                PathSeg::Key("steps".into()),
                PathSeg::Key("a".into()),
                PathSeg::Key("b".into()),
                PathSeg::Index(2)
            ]
        );
        assert!(parse_path("$.nope").is_err());
        assert!(parse_path("$.steps").is_err());
        assert!(parse_path("$.input[x]").is_err());
    }

    #[test]
    fn templates_resolve() {
        let input = json!({"a": [1, 2, {"b": "x"}]});
        let mut steps = HashMap::new();
        steps.insert("s".to_string(), std::sync::Arc::new(json!({"n": 5})));
        let item = json!("it");
        let scope = Scope {
            input: &input,
            steps: &steps,
            item: Some((&item, 7)),
        };
        let t = json!({"x": "$.input.a[2].b", "n": "$.steps.s.n", "i": "$.item", "k": "$.index", "lit": "$$.input", "keep": 3});
        assert_eq!(
            resolve(&t, &scope).unwrap(),
            json!({"x": "x", "n": 5, "i": "it", "k": 7, "lit": "$.input", "keep": 3})
        );
        assert!(resolve(&json!("$.steps.none"), &scope).is_err());
        let c: Condition = serde_json::from_value(json!({"path": "$.steps.s.n", "gt": 4})).unwrap();
        assert!(c.holds(&scope).unwrap());
        let c: Condition =
            serde_json::from_value(json!({"path": "$.steps.s.m", "exists": false})).unwrap();
        assert!(c.holds(&scope).unwrap());
    }

    #[test]
    fn bad_workflows_are_refused() {
        let ok = wf(json!({"steps": [
            {"name": "split", "function": "splitter"},
            {"name": "count", "function": "wc@2", "map": "$.steps.split.chunks", "parallelism": 64},
            {"name": "total", "function": "sum"},
            {"name": "big", "function": "notify", "after": ["total"], "when": {"path": "$.steps.total", "gt": 10}}
        ]}))
        .unwrap();
        assert_eq!(ok.deps(2), vec![1]);
        for (bad, why) in [
            (json!({"steps": []}), "at least one"),
            (
                json!({"steps": [{"name": "a", "function": "f", "after": ["b"]}, {"name": "b", "function": "f", "after": ["a"]}]}),
                "cycle",
            ),
            (
                json!({"steps": [{"name": "a", "function": "f", "map": 5}]}),
                "map must be",
            ),
            (
                json!({"steps": [{"name": "a", "function": "f", "map": {"x": 1}}]}),
                "map must be",
            ),
            (
                json!({"steps": [{"name": "a", "function": "f"}, {"name": "a", "function": "g"}]}),
                "two steps",
            ),
            (
                json!({"steps": [{"name": "a", "function": "f", "after": ["zz"]}]}),
                "not a step",
            ),
            (
                json!({"steps": [{"name": "a", "function": "f", "input": "$.steps.b"}, {"name": "b", "function": "f"}]}),
                "does not run before",
            ),
            (
                json!({"steps": [{"name": "a", "function": "f", "input": "$.item"}]}),
                "only known in a map",
            ),
            (
                json!({"steps": [{"name": "a", "function": "f", "when": {"path": "$.input", "gt": 1, "lt": 2}}]}),
                "exactly one",
            ),
            (
                json!({"steps": [{"name": "a", "function": "f", "parallelism": 3}]}),
                "only for map",
            ),
            (
                json!({"steps": [{"name": "a", "function": "bad name"}]}),
                "function",
            ),
            (
                json!({"steps": [{"name": "a", "function": "f", "retries": 99}]}),
                "retries",
            ),
            (
                json!({"steps": [{"name": "a", "function": "f", "bogus": 1}]}),
                "bogus",
            ),
        ] {
            let e = wf(bad.clone()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
