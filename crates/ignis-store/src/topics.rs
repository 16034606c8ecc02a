//! Topics on SQLite: `topics` counts what was published, `topic_messages` holds a message while
//! a topic trigger still has to get it, and `topic_deliveries` says which trigger waits for
//! which message (one row per trigger and message).
//!
//! A message is stored only if a trigger subscribes to its topic when it is published; it
//! leaves the store when its last delivery is handed to the async queue (in the transaction
//! that queues its invocations), so a message is always in one of the two, never in neither.

use rusqlite::{Connection, Transaction, params};

use crate::{Delivery, PendingDeliveries, Result, StoreError, TopicInfo, TopicMessage};

/// Stores a message for every topic trigger subscribed to its topic and counts it. Returns the
/// number of triggers.
pub(crate) fn publish(tx: &Transaction<'_>, m: &TopicMessage) -> Result<usize> {
    tx.execute(
        "INSERT INTO topics (namespace, name, published, last_published_ms) VALUES (?1, ?2, 1, ?3)
         ON CONFLICT (namespace, name) DO UPDATE SET published = published + 1,
             last_published_ms = excluded.last_published_ms",
        params![m.namespace, m.topic, m.published_ms as i64],
    )?;
    // Triggers are JSON records; a topic trigger has kind "topic" and its topic beside it.
    let triggers: Vec<String> = {
        let mut stmt = tx.prepare_cached(
            "SELECT name FROM triggers WHERE namespace = ?1
             AND json_extract(record, '$.kind') = 'topic' AND json_extract(record, '$.topic') = ?2",
        )?;
        stmt.query_map(params![m.namespace, m.topic], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    if triggers.is_empty() {
        return Ok(0);
    }
    tx.execute(
        "INSERT INTO topic_messages (id, namespace, topic, body, published_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![m.id, m.namespace, m.topic, m.body, m.published_ms as i64],
    )?;
    let seq = tx.last_insert_rowid();
    let mut stmt = tx.prepare_cached(
        "INSERT INTO topic_deliveries (namespace, trigger, seq) VALUES (?1, ?2, ?3)",
    )?;
    for t in &triggers {
        stmt.execute(params![m.namespace, t, seq])?;
    }
    Ok(triggers.len())
}

/// The topics of a namespace with their counts.
pub(crate) fn list_topics(conn: &Connection, namespace: &str) -> Result<Vec<TopicInfo>> {
    let mut stmt = conn.prepare(
        "SELECT t.name, t.published, t.last_published_ms,
                (SELECT COUNT(*) FROM topic_messages m WHERE m.namespace = t.namespace AND m.topic = t.name)
         FROM topics t WHERE t.namespace = ?1 ORDER BY t.name",
    )?;
    let rows = stmt
        .query_map([namespace], |r| {
            Ok(TopicInfo {
                name: r.get(0)?,
                published: r.get::<_, i64>(1)? as u64,
                last_published_ms: r.get::<_, i64>(2)? as u64,
                pending: r.get::<_, i64>(3)? as u64,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Every trigger with messages waiting, with their number and the age of the oldest.
pub(crate) fn pending_deliveries(conn: &Connection) -> Result<Vec<PendingDeliveries>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.namespace, d.trigger, COUNT(*), MIN(m.published_ms)
         FROM topic_deliveries d JOIN topic_messages m ON m.seq = d.seq
         GROUP BY d.namespace, d.trigger",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(PendingDeliveries {
                namespace: r.get(0)?,
                trigger: r.get(1)?,
                count: r.get::<_, i64>(2)? as u64,
                oldest_ms: r.get::<_, i64>(3)? as u64,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// The oldest messages waiting for a trigger.
pub(crate) fn next_deliveries(
    conn: &Connection,
    namespace: &str,
    trigger: &str,
    limit: usize,
) -> Result<Vec<Delivery>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.seq, m.body FROM topic_deliveries d JOIN topic_messages m ON m.seq = d.seq
         WHERE d.namespace = ?1 AND d.trigger = ?2 ORDER BY d.seq LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![namespace, trigger, limit as i64], |r| {
            Ok(Delivery {
                seq: r.get::<_, i64>(0)? as u64,
                body: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Removes delivered messages of a trigger, and the messages no trigger waits for any more.
pub(crate) fn delivered(
    tx: &Transaction<'_>,
    namespace: &str,
    trigger: &str,
    seqs: &[u64],
) -> Result<()> {
    let mut gone = tx.prepare_cached(
        "DELETE FROM topic_deliveries WHERE namespace = ?1 AND trigger = ?2 AND seq = ?3",
    )?;
    let mut drop_message = tx.prepare_cached(
        "DELETE FROM topic_messages WHERE seq = ?1
         AND NOT EXISTS (SELECT 1 FROM topic_deliveries d WHERE d.seq = ?1)",
    )?;
    for &seq in seqs {
        if gone.execute(params![namespace, trigger, seq as i64])? != 1 {
            return Err(StoreError::Conflict(format!("delivery {seq} of {trigger}")));
        }
        drop_message.execute([seq as i64])?;
    }
    Ok(())
}

/// Forgets what a deleted trigger was waiting for (and the messages only it waited for).
pub(crate) fn forget_deliveries(
    tx: &Transaction<'_>,
    namespace: &str,
    trigger: &str,
) -> Result<()> {
    tx.execute(
        "DELETE FROM topic_deliveries WHERE namespace = ?1 AND trigger = ?2",
        params![namespace, trigger],
    )?;
    tx.execute(
        "DELETE FROM topic_messages WHERE namespace = ?1
         AND NOT EXISTS (SELECT 1 FROM topic_deliveries d WHERE d.seq = topic_messages.seq)",
        [namespace],
    )?;
    Ok(())
}
