//! Workflow executions in SQLite: one row per execution and one per ended step (a map step has
//! one per item). Rows hold the JSON of [`ExecutionRecord`] / [`StepRecord`]; the columns beside
//! are what queries filter on.

use ignis_core::{ActivationId, ExecutionRecord, StepRecord};
use rusqlite::{Connection, OptionalExtension, params};

use crate::Result;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    function TEXT NOT NULL,
    status TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS execution_steps (
    execution TEXT NOT NULL,
    namespace TEXT NOT NULL,
    step TEXT NOT NULL,
    idx INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (execution, step, idx)
);
CREATE INDEX IF NOT EXISTS executions_by_ns ON executions (namespace, start_ms DESC);
CREATE INDEX IF NOT EXISTS executions_running ON executions (status) WHERE status = 'running';
";

/// Inserts or replaces an execution (not its steps); one of a namespace that no longer exists
/// is dropped.
pub(crate) fn save(conn: &Connection, e: &ExecutionRecord) -> Result<()> {
    let summary = ExecutionRecord {
        steps: Vec::new(),
        ..e.clone()
    };
    conn.prepare_cached(
        "INSERT OR REPLACE INTO executions (id, namespace, function, status, start_ms, record)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM namespaces WHERE name = ?2)",
    )?
    .execute(params![
        e.id.to_string(),
        e.namespace,
        e.function,
        e.status.as_str(),
        e.start_ms as i64,
        serde_json::to_string(&summary)?,
    ])?;
    Ok(())
}

/// Stores ended steps, all in one transaction.
pub(crate) fn save_steps(
    conn: &mut Connection,
    steps: &[(ActivationId, String, StepRecord)],
) -> Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR REPLACE INTO execution_steps (execution, namespace, step, idx, end_ms, record)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM namespaces WHERE name = ?2)",
        )?;
        for (id, namespace, s) in steps {
            stmt.execute(params![
                id.to_string(),
                namespace,
                s.step,
                s.index.map_or(-1, i64::from),
                s.end_ms as i64,
                serde_json::to_string(s)?,
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// One execution with its steps, in order of their end.
pub(crate) fn get(
    conn: &Connection,
    namespace: &str,
    id: ActivationId,
) -> Result<Option<ExecutionRecord>> {
    let record: Option<String> = conn
        .query_row(
            "SELECT record FROM executions WHERE id = ?1 AND namespace = ?2",
            params![id.to_string(), namespace],
            |r| r.get(0),
        )
        .optional()?;
    let Some(record) = record else {
        return Ok(None);
    };
    let mut e: ExecutionRecord = serde_json::from_str(&record)?;
    e.steps = steps(conn, id)?;
    Ok(Some(e))
}

/// The ended steps of an execution, in order of their end.
pub(crate) fn steps(conn: &Connection, id: ActivationId) -> Result<Vec<StepRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT record FROM execution_steps WHERE execution = ?1 ORDER BY end_ms, step, idx",
    )?;
    let rows = stmt
        .query_map([id.to_string()], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.iter()
        .map(|r| serde_json::from_str(r).map_err(Into::into))
        .collect()
}

/// A namespace's executions, newest first, without steps; only those of `function` if given.
pub(crate) fn list(
    conn: &Connection,
    namespace: &str,
    function: Option<&str>,
    limit: usize,
) -> Result<Vec<ExecutionRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT record FROM executions WHERE namespace = ?1 AND (?2 IS NULL OR function = ?2)
         ORDER BY start_ms DESC, id DESC LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![namespace, function, limit as i64], |r| {
            r.get::<_, String>(0)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.iter()
        .map(|r| serde_json::from_str(r).map_err(Into::into))
        .collect()
}

/// Every execution still running, with its steps: those to take up again after a restart.
pub(crate) fn running(conn: &Connection) -> Result<Vec<ExecutionRecord>> {
    let mut stmt = conn.prepare_cached("SELECT record FROM executions WHERE status = 'running'")?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut e: ExecutionRecord = serde_json::from_str(&r)?;
        e.steps = steps(conn, e.id)?;
        out.push(e);
    }
    Ok(out)
}
