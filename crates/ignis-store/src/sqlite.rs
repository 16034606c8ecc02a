//! [`Store`] on one SQLite file in WAL mode: one connection for writes, one for reads.
//!
//! `synchronous=NORMAL` in WAL mode: a committed transaction survives the process being killed
//! (`kill -9`); the last transactions may be lost on power failure.

use std::path::Path;
use std::sync::Mutex;

use ignis_core::usage::UsageCell;
use ignis_core::{
    ActivationId, ActivationRecord, ExecutionRecord, Firing, FunctionVersion, LogLine, Rule,
    StepRecord, Trigger,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::clock::now_ms;
use crate::{
    ActivationFilter, ActivationPage, ApiKeyRecord, Cursor, NamespaceQuotas, NamespaceRecord,
    NewVersion, QueueState, QueuedInvocation, Result, Store, StoreError,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS namespaces (
    name TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS functions (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    latest_version INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS function_versions (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (namespace, name, version)
);
CREATE TABLE IF NOT EXISTS activations (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    function TEXT NOT NULL,
    status TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    record TEXT NOT NULL,
    logs TEXT NOT NULL,
    trigger TEXT
);
CREATE TABLE IF NOT EXISTS async_queue (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    function TEXT NOT NULL,
    version INTEGER,
    event BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    idempotency_key TEXT,
    dead INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    trigger TEXT,
    callback TEXT
);
CREATE TABLE IF NOT EXISTS triggers (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS rules (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    trigger TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS firings (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    trigger TEXT NOT NULL,
    fired_ms INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS topics (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    published INTEGER NOT NULL,
    last_published_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS topic_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    topic TEXT NOT NULL,
    body BLOB NOT NULL,
    published_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS topic_deliveries (
    namespace TEXT NOT NULL,
    trigger TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (namespace, trigger, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS topic_deliveries_by_seq ON topic_deliveries (seq);
CREATE INDEX IF NOT EXISTS topic_messages_by_topic ON topic_messages (namespace, topic);
CREATE INDEX IF NOT EXISTS firings_by_trigger ON firings (namespace, trigger, fired_ms DESC);
CREATE INDEX IF NOT EXISTS async_queue_due ON async_queue (dead, next_attempt_ms);
CREATE UNIQUE INDEX IF NOT EXISTS async_queue_idem ON async_queue (namespace, function, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS activations_by_ns ON activations (namespace, start_ms DESC, id DESC);
CREATE INDEX IF NOT EXISTS activations_by_fn ON activations (namespace, function, start_ms DESC, id DESC);
";

/// Whether `sql` (a `SELECT 1 …`) finds a row.
pub(crate) fn row_exists(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<bool> {
    Ok(conn
        .query_row(sql, params, |_| Ok(()))
        .optional()?
        .is_some())
}

/// Fails with `NotFound` unless the bucket exists.
pub(crate) fn require_bucket(conn: &Connection, namespace: &str, bucket: &str) -> Result<()> {
    let sql = "SELECT 1 FROM buckets WHERE namespace = ?1 AND name = ?2";
    if !row_exists(conn, sql, params![namespace, bucket])? {
        return Err(StoreError::NotFound(format!("bucket {bucket:?}")));
    }
    Ok(())
}

/// The SQLite store.
pub struct SqliteStore {
    write: Mutex<Connection>,
    read: Mutex<Connection>,
    /// Whether commits that must survive power loss sync to disk (`synchronous=FULL`); off
    /// for a replica that is rebuilt from a replicated log ([`SqliteStore::open_replica`]).
    sync_commits: bool,
}

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating) the database file and its schema; the `default` namespace exists.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, true)
    }

    /// Opens a replica: a database that is rebuilt from a replicated log at every start (cluster
    /// mode, where the log is what is durable), so its commits do not wait for the disk.
    pub fn open_replica(path: &Path) -> Result<Self> {
        Self::open_with(path, false)
    }

    /// Writes a consistent copy of the whole database to `path` (`VACUUM INTO`): a snapshot
    /// of a replica, from which another node starts instead of replaying the whole log.
    pub fn snapshot_to(&self, path: &Path) -> Result<()> {
        let target = path
            .to_str()
            .ok_or_else(|| std::io::Error::other("a snapshot path must be UTF-8"))?;
        self.r().execute("VACUUM INTO ?1", [target])?;
        Ok(())
    }

    fn open_with(path: &Path, sync_commits: bool) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let write = open_conn(path)?;
        write.execute_batch(SCHEMA)?;
        write.execute_batch(crate::executions::SCHEMA)?;
        write.execute_batch(crate::data::DATA_SCHEMA)?;
        write.execute_batch(crate::multipart::SCHEMA)?;
        // Added after the first release: namespaces' own quotas, JSON.
        if write
            .prepare("SELECT quotas FROM namespaces LIMIT 0")
            .is_err()
        {
            write.execute_batch("ALTER TABLE namespaces ADD COLUMN quotas TEXT")?;
        }
        write.execute(
            "INSERT OR IGNORE INTO namespaces (name, created_ms) VALUES (?1, ?2)",
            params![ignis_core::DEFAULT_NAMESPACE, now_ms() as i64],
        )?;
        if !sync_commits {
            write.pragma_update(None, "synchronous", "OFF")?;
        }
        let read = open_conn(path)?;
        Ok(SqliteStore {
            write: Mutex::new(write),
            read: Mutex::new(read),
            sync_commits,
        })
    }

    /// Runs `f` in one write transaction whose commit is synced to disk (`synchronous=FULL`):
    /// what it writes survives power loss, not only a killed process.
    pub(crate) fn synced<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.w();
        if !self.sync_commits {
            let tx = conn.transaction()?;
            let out = f(&tx)?;
            tx.commit()?;
            return Ok(out);
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        let result = (|| {
            let tx = conn.transaction()?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        result
    }

    pub(crate) fn w(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn r(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.read.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enqueue_in(
        conn: &mut Connection,
        item: &QueuedInvocation,
    ) -> Result<(QueuedInvocation, bool)> {
        let tx = conn.transaction()?;
        if let Some(key) = &item.idempotency_key {
            let existing = tx
                .query_row(
                    &format!(
                        "SELECT {QUEUE_COLUMNS} FROM async_queue
                         WHERE namespace = ?1 AND function = ?2 AND idempotency_key = ?3"
                    ),
                    params![item.namespace, item.function, key],
                    queue_row,
                )
                .optional()?;
            if let Some(e) = existing {
                return Ok((e, false));
            }
        }
        insert_queued(&tx, item)?;
        tx.commit()?;
        Ok((item.clone(), true))
    }
}

fn namespace_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NamespaceRecord> {
    let quotas: Option<String> = r.get(2)?;
    Ok(NamespaceRecord {
        name: r.get(0)?,
        created_ms: r.get::<_, i64>(1)? as u64,
        quotas: quotas
            .and_then(|q| serde_json::from_str(&q).ok())
            .unwrap_or_default(),
    })
}

fn decode_versions(rows: Vec<String>) -> Result<Vec<FunctionVersion>> {
    rows.iter()
        .map(|r| serde_json::from_str(r).map_err(StoreError::from))
        .collect()
}

const QUEUE_COLUMNS: &str = "id, namespace, function, version, event, attempts, next_attempt_ms, created_ms, idempotency_key, last_error, trigger, callback, dead";

fn queue_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueuedInvocation> {
    let id: String = r.get(0)?;
    Ok(QueuedInvocation {
        id: ActivationId::parse(&id).unwrap_or_default(),
        namespace: r.get(1)?,
        function: r.get(2)?,
        version: r.get(3)?,
        event: r.get(4)?,
        attempts: r.get(5)?,
        next_attempt_ms: r.get::<_, i64>(6)? as u64,
        created_ms: r.get::<_, i64>(7)? as u64,
        idempotency_key: r.get(8)?,
        last_error: r.get(9)?,
        trigger: r.get(10)?,
        callback: r.get(11)?,
        state: match r.get::<_, i64>(12)? {
            1 => QueueState::Dead,
            2 => QueueState::Done,
            _ => QueueState::Queued,
        },
    })
}

/// Adds a queued invocation inside a transaction.
pub(crate) fn insert_queued(tx: &rusqlite::Transaction<'_>, item: &QueuedInvocation) -> Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO async_queue ({QUEUE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0)"
        ),
        params![
            item.id.to_string(),
            item.namespace,
            item.function,
            item.version,
            item.event,
            item.attempts,
            item.next_attempt_ms as i64,
            item.created_ms as i64,
            item.idempotency_key,
            item.last_error,
            item.trigger,
            item.callback,
        ],
    )?;
    Ok(())
}

/// Adds a firing and the invocations it queued inside a transaction.
pub(crate) fn insert_firing(
    tx: &rusqlite::Transaction<'_>,
    firing: &Firing,
    queued: &[QueuedInvocation],
) -> Result<()> {
    tx.execute(
        "INSERT INTO firings (id, namespace, trigger, fired_ms, record) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            firing.id.to_string(),
            firing.namespace,
            firing.trigger,
            firing.fired_ms as i64,
            serde_json::to_string(firing)?
        ],
    )?;
    for item in queued {
        insert_queued(tx, item)?;
    }
    Ok(())
}

/// Tables of records named within a namespace, stored as JSON.
#[derive(Clone, Copy)]
enum Named {
    Trigger,
    Rule,
}

impl Named {
    fn table(self) -> &'static str {
        match self {
            Named::Trigger => "triggers",
            Named::Rule => "rules",
        }
    }
}

impl SqliteStore {
    /// Stores a record; with `create_only` an existing one is a conflict. True if new. Rules
    /// also store their trigger in a column (to delete them with it).
    fn put_named(
        &self,
        kind: Named,
        namespace: &str,
        name: &str,
        record: &str,
        trigger: Option<&str>,
        create_only: bool,
    ) -> Result<bool> {
        let table = kind.table();
        let conn = self.w();
        let exists = conn
            .query_row(
                &format!("SELECT 1 FROM {table} WHERE namespace = ?1 AND name = ?2"),
                params![namespace, name],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if exists && create_only {
            let what = &table[..table.len() - 1];
            return Err(StoreError::Conflict(format!("{what} {name:?}")));
        }
        match trigger {
            Some(t) => conn.execute(
                &format!("INSERT OR REPLACE INTO {table} (namespace, name, trigger, record) VALUES (?1, ?2, ?3, ?4)"),
                params![namespace, name, t, record],
            )?,
            None => conn.execute(
                &format!("INSERT OR REPLACE INTO {table} (namespace, name, record) VALUES (?1, ?2, ?3)"),
                params![namespace, name, record],
            )?,
        };
        Ok(!exists)
    }

    fn get_named<T: serde::de::DeserializeOwned>(
        &self,
        kind: Named,
        namespace: &str,
        name: &str,
    ) -> Result<Option<T>> {
        let row: Option<String> = self
            .r()
            .query_row(
                &format!(
                    "SELECT record FROM {} WHERE namespace = ?1 AND name = ?2",
                    kind.table()
                ),
                params![namespace, name],
                |r| r.get(0),
            )
            .optional()?;
        row.map(|r| serde_json::from_str(&r).map_err(StoreError::from))
            .transpose()
    }

    fn list_named<T: serde::de::DeserializeOwned>(
        &self,
        kind: Named,
        namespace: &str,
    ) -> Result<Vec<T>> {
        let conn = self.r();
        let mut stmt = conn.prepare(&format!(
            "SELECT record FROM {} WHERE namespace = ?1 ORDER BY name",
            kind.table()
        ))?;
        let rows = stmt
            .query_map([namespace], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.iter()
            .map(|r| serde_json::from_str(r).map_err(StoreError::from))
            .collect()
    }
}

/// Sets a trigger's last scheduled time inside a transaction.
fn set_last_scheduled(
    tx: &rusqlite::Transaction<'_>,
    namespace: &str,
    trigger: &str,
    at: u64,
) -> Result<()> {
    let row: Option<String> = tx
        .query_row(
            "SELECT record FROM triggers WHERE namespace = ?1 AND name = ?2",
            params![namespace, trigger],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(r) = row {
        let mut t: Trigger = serde_json::from_str(&r)?;
        t.last_scheduled_ms = Some(at);
        tx.execute(
            "UPDATE triggers SET record = ?3 WHERE namespace = ?1 AND name = ?2",
            params![namespace, trigger, serde_json::to_string(&t)?],
        )?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn namespace_exists(&self, namespace: &str) -> Result<bool> {
        Ok(self
            .r()
            .query_row(
                "SELECT 1 FROM namespaces WHERE name = ?1",
                [namespace],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn namespaces(&self) -> Result<Vec<NamespaceRecord>> {
        let conn = self.r();
        let mut stmt =
            conn.prepare("SELECT name, created_ms, quotas FROM namespaces ORDER BY name")?;
        let rows = stmt
            .query_map([], namespace_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn get_namespace(&self, namespace: &str) -> Result<Option<NamespaceRecord>> {
        Ok(self
            .r()
            .query_row(
                "SELECT name, created_ms, quotas FROM namespaces WHERE name = ?1",
                [namespace],
                namespace_row,
            )
            .optional()?)
    }

    fn create_namespace(&self, namespace: &str) -> Result<bool> {
        let n = self.w().execute(
            "INSERT OR IGNORE INTO namespaces (name, created_ms) VALUES (?1, ?2)",
            params![namespace, now_ms() as i64],
        )?;
        Ok(n == 1)
    }

    fn set_namespace_quotas(&self, namespace: &str, quotas: &NamespaceQuotas) -> Result<bool> {
        let n = self.w().execute(
            "UPDATE namespaces SET quotas = ?2 WHERE name = ?1",
            params![namespace, serde_json::to_string(quotas)?],
        )?;
        Ok(n == 1)
    }

    fn delete_namespace(&self, namespace: &str) -> Result<Option<Vec<String>>> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        if tx.execute("DELETE FROM namespaces WHERE name = ?1", [namespace])? == 0 {
            return Ok(None);
        }
        let functions = {
            let mut stmt = tx.prepare("SELECT name FROM functions WHERE namespace = ?1")?;
            stmt.query_map([namespace], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for table in [
            "functions",
            "function_versions",
            "triggers",
            "rules",
            "firings",
            "activations",
            "async_queue",
            "topics",
            "topic_messages",
            "topic_deliveries",
            "executions",
            "execution_steps",
        ]
        .into_iter()
        .chain(crate::data::DATA_TABLES)
        {
            tx.execute(
                &format!("DELETE FROM {table} WHERE namespace = ?1"),
                [namespace],
            )?;
        }
        // Keys hold their namespace inside the JSON record.
        tx.execute(
            "DELETE FROM api_keys WHERE json_extract(record, '$.namespace') = ?1",
            [namespace],
        )?;
        tx.commit()?;
        Ok(Some(functions))
    }

    fn put_key(&self, key: &ApiKeyRecord) -> Result<()> {
        self.w().execute(
            "INSERT OR REPLACE INTO api_keys (id, record) VALUES (?1, ?2)",
            params![key.id, serde_json::to_string(key)?],
        )?;
        Ok(())
    }

    fn list_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let conn = self.r();
        let mut stmt = conn.prepare("SELECT record FROM api_keys ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.iter()
            .map(|r| serde_json::from_str(r).map_err(StoreError::from))
            .collect()
    }

    fn delete_key(&self, id: &str) -> Result<bool> {
        Ok(self
            .w()
            .execute("DELETE FROM api_keys WHERE id = ?1", [id])?
            == 1)
    }

    fn put_version(&self, new: NewVersion, create_only: bool) -> Result<(FunctionVersion, bool)> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        // A namespace being deleted cannot get a function back.
        if tx
            .query_row(
                "SELECT 1 FROM namespaces WHERE name = ?1",
                [&new.namespace],
                |_| Ok(()),
            )
            .optional()?
            .is_none()
        {
            return Err(StoreError::NotFound(format!(
                "namespace {:?}",
                new.namespace
            )));
        }
        let latest: Option<u32> = tx
            .query_row(
                "SELECT latest_version FROM functions WHERE namespace = ?1 AND name = ?2",
                params![new.namespace, new.name],
                |r| r.get(0),
            )
            .optional()?;
        if create_only && latest.is_some() {
            return Err(StoreError::Conflict(format!(
                "function {}/{}",
                new.namespace, new.name
            )));
        }
        // Versions keep counting after a delete and re-create is handled by starting at 1:
        // deleting a function removes its versions.
        let version = latest.unwrap_or(0) + 1;
        let fv = FunctionVersion {
            namespace: new.namespace,
            name: new.name,
            version,
            spec: new.spec,
            code: new.code,
            created_ms: now_ms(),
        };
        tx.execute(
            "INSERT INTO function_versions (namespace, name, version, record) VALUES (?1, ?2, ?3, ?4)",
            params![fv.namespace, fv.name, version, serde_json::to_string(&fv)?],
        )?;
        tx.execute(
            "INSERT INTO functions (namespace, name, latest_version) VALUES (?1, ?2, ?3)
             ON CONFLICT (namespace, name) DO UPDATE SET latest_version = excluded.latest_version",
            params![fv.namespace, fv.name, version],
        )?;
        tx.commit()?;
        Ok((fv, latest.is_none()))
    }

    fn get_version(
        &self,
        namespace: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<FunctionVersion>> {
        let conn = self.r();
        let row: Option<String> = match version {
            Some(v) => conn
                .query_row(
                    "SELECT record FROM function_versions WHERE namespace = ?1 AND name = ?2 AND version = ?3",
                    params![namespace, name, v],
                    |r| r.get(0),
                )
                .optional()?,
            None => conn
                .query_row(
                    "SELECT v.record FROM functions f JOIN function_versions v
                     ON v.namespace = f.namespace AND v.name = f.name AND v.version = f.latest_version
                     WHERE f.namespace = ?1 AND f.name = ?2",
                    params![namespace, name],
                    |r| r.get(0),
                )
                .optional()?,
        };
        row.map(|r| serde_json::from_str(&r).map_err(StoreError::from))
            .transpose()
    }

    fn list_functions(&self, namespace: &str) -> Result<Vec<FunctionVersion>> {
        let conn = self.r();
        let mut stmt = conn.prepare(
            "SELECT v.record FROM functions f JOIN function_versions v
             ON v.namespace = f.namespace AND v.name = f.name AND v.version = f.latest_version
             WHERE f.namespace = ?1 ORDER BY f.name",
        )?;
        let rows = stmt
            .query_map([namespace], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        decode_versions(rows)
    }

    fn list_versions(&self, namespace: &str, name: &str) -> Result<Vec<FunctionVersion>> {
        let conn = self.r();
        let mut stmt = conn.prepare(
            "SELECT record FROM function_versions WHERE namespace = ?1 AND name = ?2 ORDER BY version",
        )?;
        let rows = stmt
            .query_map(params![namespace, name], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        decode_versions(rows)
    }

    fn delete_function(&self, namespace: &str, name: &str) -> Result<Option<u32>> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM functions WHERE namespace = ?1 AND name = ?2",
            params![namespace, name],
        )?;
        if n == 0 {
            return Ok(None);
        }
        let versions = tx.execute(
            "DELETE FROM function_versions WHERE namespace = ?1 AND name = ?2",
            params![namespace, name],
        )?;
        tx.commit()?;
        Ok(Some(versions as u32))
    }

    fn enqueue(&self, item: &QueuedInvocation) -> Result<(QueuedInvocation, bool)> {
        let mut conn = self.w();
        if !self.sync_commits {
            return Self::enqueue_in(&mut conn, item);
        }
        // An acknowledged async invocation must survive power loss, not only a process kill:
        // this commit syncs the log to disk (synchronous=FULL), others need not.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let result = Self::enqueue_in(&mut conn, item);
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        result
    }

    fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<QueuedInvocation>> {
        let conn = self.r();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {QUEUE_COLUMNS} FROM async_queue WHERE dead = 0 AND next_attempt_ms <= ?1
             ORDER BY next_attempt_ms, created_ms LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(params![now_ms as i64, limit as i64], queue_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn next_due(&self) -> Result<Option<u64>> {
        let next: Option<i64> = self.r().query_row(
            "SELECT MIN(next_attempt_ms) FROM async_queue WHERE dead = 0",
            [],
            |r| r.get(0),
        )?;
        Ok(next.map(|n| n as u64))
    }

    fn retry_later(
        &self,
        id: ActivationId,
        attempts: u32,
        next_attempt_ms: u64,
        error: &str,
    ) -> Result<()> {
        self.w().execute(
            "UPDATE async_queue SET attempts = ?2, next_attempt_ms = ?3, last_error = ?4 WHERE id = ?1",
            params![id.to_string(), attempts, next_attempt_ms as i64, error],
        )?;
        Ok(())
    }

    fn bury(&self, id: ActivationId, attempts: u32, error: &str) -> Result<()> {
        self.w().execute(
            "UPDATE async_queue SET dead = 1, attempts = ?2, last_error = ?3 WHERE id = ?1",
            params![id.to_string(), attempts, error],
        )?;
        Ok(())
    }

    fn dequeue(&self, id: ActivationId) -> Result<()> {
        self.w().execute(
            "UPDATE async_queue SET dead = 2, event = x'' WHERE id = ?1",
            params![id.to_string()],
        )?;
        Ok(())
    }

    fn dead_letters(&self, namespace: &str) -> Result<Vec<QueuedInvocation>> {
        let conn = self.r();
        let mut stmt = conn.prepare(&format!(
            "SELECT {QUEUE_COLUMNS} FROM async_queue WHERE dead = 1 AND namespace = ?1
             ORDER BY created_ms DESC"
        ))?;
        let rows = stmt
            .query_map(params![namespace], queue_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn revive(&self, namespace: &str, id: ActivationId) -> Result<bool> {
        let n = self.w().execute(
            "UPDATE async_queue SET dead = 0, attempts = 0, next_attempt_ms = ?3
             WHERE id = ?1 AND namespace = ?2 AND dead = 1",
            params![id.to_string(), namespace, now_ms() as i64],
        )?;
        Ok(n == 1)
    }

    fn put_trigger(&self, trigger: &Trigger, create_only: bool) -> Result<bool> {
        let record = serde_json::to_string(trigger)?;
        self.put_named(
            Named::Trigger,
            &trigger.namespace,
            &trigger.name,
            &record,
            None,
            create_only,
        )
    }

    fn get_trigger(&self, namespace: &str, name: &str) -> Result<Option<Trigger>> {
        self.get_named(Named::Trigger, namespace, name)
    }

    fn list_triggers(&self, namespace: &str) -> Result<Vec<Trigger>> {
        self.list_named(Named::Trigger, namespace)
    }

    fn delete_trigger(&self, namespace: &str, name: &str) -> Result<bool> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM triggers WHERE namespace = ?1 AND name = ?2",
            params![namespace, name],
        )?;
        tx.execute(
            "DELETE FROM rules WHERE namespace = ?1 AND trigger = ?2",
            params![namespace, name],
        )?;
        tx.execute(
            "DELETE FROM firings WHERE namespace = ?1 AND trigger = ?2",
            params![namespace, name],
        )?;
        crate::topics::forget_deliveries(&tx, namespace, name)?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn put_rule(&self, rule: &Rule, create_only: bool) -> Result<bool> {
        let record = serde_json::to_string(rule)?;
        self.put_named(
            Named::Rule,
            &rule.namespace,
            &rule.name,
            &record,
            Some(&rule.trigger),
            create_only,
        )
    }

    fn get_rule(&self, namespace: &str, name: &str) -> Result<Option<Rule>> {
        self.get_named(Named::Rule, namespace, name)
    }

    fn list_rules(&self, namespace: &str) -> Result<Vec<Rule>> {
        self.list_named(Named::Rule, namespace)
    }

    fn delete_rule(&self, namespace: &str, name: &str) -> Result<bool> {
        let n = self.w().execute(
            "DELETE FROM rules WHERE namespace = ?1 AND name = ?2",
            params![namespace, name],
        )?;
        Ok(n == 1)
    }

    fn record_firing(&self, firing: &Firing, queued: &[QueuedInvocation]) -> Result<()> {
        self.synced(|tx| {
            // A firing whose id is derived from its source (a JetStream message) may be
            // offered again after a redelivery: the second time is a conflict, not a repeat.
            if row_exists(
                tx,
                "SELECT 1 FROM firings WHERE id = ?1",
                [firing.id.to_string()],
            )? {
                return Err(StoreError::Conflict(format!("firing {}", firing.id)));
            }
            if let Some(at) = firing.scheduled_ms {
                // A scheduled time fires once: a second firing for it (two schedulers of a
                // cluster that both saw it due) is refused, writing nothing.
                let last: Option<String> = tx
                    .query_row(
                        "SELECT record FROM triggers WHERE namespace = ?1 AND name = ?2",
                        params![firing.namespace, firing.trigger],
                        |r| r.get(0),
                    )
                    .optional()?;
                let last = match last {
                    Some(r) => serde_json::from_str::<Trigger>(&r)?.last_scheduled_ms,
                    None => None,
                };
                if last.is_some_and(|last| last >= at) {
                    return Err(StoreError::Conflict(format!(
                        "the firing of trigger {:?} for {at}",
                        firing.trigger
                    )));
                }
            }
            insert_firing(tx, firing, queued)?;
            if let Some(at) = firing.scheduled_ms {
                set_last_scheduled(tx, &firing.namespace, &firing.trigger, at)?;
            }
            Ok(())
        })
    }

    fn publish(&self, message: &crate::TopicMessage) -> Result<usize> {
        self.synced(|tx| crate::topics::publish(tx, message))
    }

    fn list_topics(&self, namespace: &str) -> Result<Vec<crate::TopicInfo>> {
        crate::topics::list_topics(&self.r(), namespace)
    }

    fn pending_deliveries(&self) -> Result<Vec<crate::PendingDeliveries>> {
        crate::topics::pending_deliveries(&self.r())
    }

    fn next_deliveries(
        &self,
        namespace: &str,
        trigger: &str,
        limit: usize,
    ) -> Result<Vec<crate::Delivery>> {
        crate::topics::next_deliveries(&self.r(), namespace, trigger, limit)
    }

    fn forget_deliveries(&self, namespace: &str, trigger: &str) -> Result<()> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        crate::topics::forget_deliveries(&tx, namespace, trigger)?;
        tx.commit()?;
        Ok(())
    }

    fn record_delivery(
        &self,
        firing: &Firing,
        queued: &[QueuedInvocation],
        delivered: &[u64],
    ) -> Result<()> {
        self.synced(|tx| {
            crate::topics::delivered(tx, &firing.namespace, &firing.trigger, delivered)?;
            insert_firing(tx, firing, queued)
        })
    }

    fn skip_scheduled(&self, namespace: &str, trigger: &str, scheduled_ms: u64) -> Result<()> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        set_last_scheduled(&tx, namespace, trigger, scheduled_ms)?;
        tx.commit()?;
        Ok(())
    }

    fn list_firings(&self, namespace: &str, trigger: &str, limit: usize) -> Result<Vec<Firing>> {
        let conn = self.r();
        let mut stmt = conn.prepare(
            "SELECT record FROM firings WHERE namespace = ?1 AND trigger = ?2 ORDER BY fired_ms DESC, id DESC LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![namespace, trigger, limit as i64], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.iter()
            .map(|r| serde_json::from_str(r).map_err(StoreError::from))
            .collect()
    }

    fn insert_activations(&self, records: &[ActivationRecord]) -> Result<()> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        {
            // An activation of a namespace deleted meanwhile (a run that was in flight) is
            // dropped, so that a namespace made again under its name starts empty.
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO activations (id, namespace, function, status, start_ms, record, logs, trigger)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM namespaces WHERE name = ?2)",
            )?;
            for a in records {
                // Logs are stored apart so that listing never reads them.
                let summary = ActivationRecord {
                    logs: Vec::new(),
                    ..a.clone()
                };
                stmt.execute(params![
                    a.id.to_string(),
                    a.namespace,
                    a.function,
                    a.status.as_str(),
                    a.start_ms as i64,
                    serde_json::to_string(&summary)?,
                    serde_json::to_string(&a.logs)?,
                    a.trigger,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn prune_activations(&self, namespace: &str, before_ms: u64, keep: Option<u64>) -> Result<u64> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        let mut n = tx.execute(
            "DELETE FROM activations WHERE namespace = ?1 AND start_ms < ?2",
            params![namespace, before_ms.min(i64::MAX as u64) as i64],
        )?;
        if let Some(keep) = keep {
            // The oldest past the newest `keep`, in the order of the activations_by_ns index.
            let cut: Option<(i64, String)> = tx
                .query_row(
                    "SELECT start_ms, id FROM activations WHERE namespace = ?1
                     ORDER BY start_ms DESC, id DESC LIMIT 1 OFFSET ?2",
                    params![namespace, keep.min(i64::MAX as u64) as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((ms, id)) = cut {
                n += tx.execute(
                    "DELETE FROM activations WHERE namespace = ?1
                     AND (start_ms < ?2 OR (start_ms = ?2 AND id <= ?3))",
                    params![namespace, ms, id],
                )?;
            }
        }
        tx.commit()?;
        Ok(n as u64)
    }

    fn save_execution(&self, execution: &ExecutionRecord) -> Result<()> {
        crate::executions::save(&self.w(), execution)
    }

    fn save_steps(&self, steps: &[(ActivationId, String, StepRecord)]) -> Result<()> {
        crate::executions::save_steps(&mut self.w(), steps)
    }

    fn get_execution(&self, namespace: &str, id: ActivationId) -> Result<Option<ExecutionRecord>> {
        crate::executions::get(&self.r(), namespace, id)
    }

    fn list_executions(
        &self,
        namespace: &str,
        function: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>> {
        crate::executions::list(&self.r(), namespace, function, limit)
    }

    fn running_executions(&self) -> Result<Vec<ExecutionRecord>> {
        crate::executions::running(&self.r())
    }

    fn get_activation(
        &self,
        namespace: &str,
        id: ActivationId,
    ) -> Result<Option<ActivationRecord>> {
        let row: Option<(String, String)> = self
            .r()
            .query_row(
                "SELECT record, logs FROM activations WHERE id = ?1 AND namespace = ?2",
                params![id.to_string(), namespace],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((record, logs)) = row else {
            return Ok(None);
        };
        let mut a: ActivationRecord = serde_json::from_str(&record)?;
        a.logs = serde_json::from_str::<Vec<LogLine>>(&logs)?;
        Ok(Some(a))
    }

    fn list_activations(
        &self,
        namespace: &str,
        filter: &ActivationFilter,
    ) -> Result<ActivationPage> {
        let mut sql = String::from("SELECT record FROM activations WHERE namespace = ?1");
        let mut args: Vec<rusqlite::types::Value> = vec![namespace.to_string().into()];
        let mut add = |clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(f) = &filter.function {
            add(" AND function = ?", f.clone().into());
        }
        if let Some(s) = filter.status {
            add(" AND status = ?", s.as_str().to_string().into());
        }
        if let Some(t) = &filter.trigger {
            add(" AND trigger = ?", t.clone().into());
        }
        if let Some(since) = filter.since {
            add(" AND start_ms >= ?", (since as i64).into());
        }
        if let Some(until) = filter.until {
            add(" AND start_ms < ?", (until as i64).into());
        }
        if let Some(c) = filter.cursor {
            let ms = c.start_ms as i64;
            add(" AND (start_ms < ?", ms.into());
            add(" OR (start_ms = ?", ms.into());
            add(" AND id < ?))", c.id.to_string().into());
        }
        let limit = filter.limit.clamp(1, 1000);
        sql.push_str(&format!(
            " ORDER BY start_ms DESC, id DESC LIMIT {}",
            limit + 1
        ));
        let conn = self.r();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut activations = rows
            .iter()
            .map(|r| serde_json::from_str::<ActivationRecord>(r).map_err(StoreError::from))
            .collect::<Result<Vec<_>>>()?;
        let next = if activations.len() > limit {
            activations.truncate(limit);
            activations.last().map(|a| Cursor {
                start_ms: a.start_ms,
                id: a.id,
            })
        } else {
            None
        };
        for a in &mut activations {
            a.result = None;
        }
        Ok(ActivationPage { activations, next })
    }

    fn usage(&self, namespace: &str, from_ms: u64, to_ms: u64) -> Result<Vec<UsageCell>> {
        // Memory and billed time live in the record's JSON; the sums stay integers in SQLite.
        let conn = self.r();
        let mut stmt = conn.prepare_cached(
            "SELECT function, start_ms / 86400000 AS day, COUNT(*),
                    SUM(json_extract(record, '$.memory_mb') * json_extract(record, '$.billed_ms')),
                    SUM(json_extract(record, '$.billed_ms'))
             FROM activations WHERE namespace = ?1 AND start_ms >= ?2 AND start_ms < ?3
             GROUP BY function, day ORDER BY function, day",
        )?;
        let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
        let rows = stmt
            .query_map(params![namespace, clamp(from_ms), clamp(to_ms)], |r| {
                Ok(UsageCell {
                    function: r.get(0)?,
                    day: r.get::<_, i64>(1)? as u64,
                    requests: r.get::<_, i64>(2)? as u64,
                    mb_ms: r.get::<_, i64>(3)? as u64,
                    billed_ms: r.get::<_, i64>(4)? as u64,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn async_backlog(&self) -> Result<Vec<(String, u64)>> {
        let conn = self.r();
        let mut stmt = conn.prepare_cached(
            "SELECT namespace, COUNT(*) FROM async_queue WHERE dead = 0 GROUP BY namespace",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::suite::{activation, key, new_version};
    use ignis_core::Status;

    /// A store in a temporary directory.
    pub(crate) fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("ignis.db")).unwrap();
        (dir, s)
    }

    /// A store that dereferences to itself and keeps its directory.
    pub(crate) struct TempStore {
        store: SqliteStore,
        _dir: tempfile::TempDir,
    }

    impl std::ops::Deref for TempStore {
        type Target = SqliteStore;
        fn deref(&self) -> &SqliteStore {
            &self.store
        }
    }

    crate::store_suite!({
        let (_dir, store) = store();
        Some(TempStore { store, _dir })
    });

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ignis.db");
        let a = activation("f", 5, Status::Success);
        {
            let s = SqliteStore::open(&path).unwrap();
            s.put_version(new_version("f"), false).unwrap();
            s.insert_activations(std::slice::from_ref(&a)).unwrap();
            s.put_key(&key("ik_1", None)).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert!(s.get_version("default", "f", None).unwrap().is_some());
        assert_eq!(s.get_activation("default", a.id).unwrap().unwrap(), a);
        assert_eq!(s.list_keys().unwrap().len(), 1);
    }
}
