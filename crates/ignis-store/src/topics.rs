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

#[cfg(test)]
mod tests {
    use ignis_core::{ActivationId, Firing, Trigger, TriggerKind, TriggerSpec};

    use crate::{SqliteStore, Store, StoreError, TopicMessage};

    fn topic_trigger(name: &str, topic: &str) -> Trigger {
        Trigger {
            namespace: "default".into(),
            name: name.into(),
            spec: TriggerSpec {
                kind: TriggerKind::Topic,
                topic: Some(topic.into()),
                ..Default::default()
            },
            created_ms: 1,
            last_scheduled_ms: None,
        }
    }

    fn message(topic: &str, n: u64) -> TopicMessage {
        TopicMessage {
            id: format!("m{n}"),
            namespace: "default".into(),
            topic: topic.into(),
            body: format!("{{\"n\":{n}}}").into_bytes(),
            published_ms: n,
        }
    }

    fn firing(trigger: &str) -> Firing {
        Firing {
            id: ActivationId::new(),
            namespace: "default".into(),
            trigger: trigger.into(),
            fired_ms: 1,
            scheduled_ms: None,
            activations: vec![],
        }
    }

    #[test]
    fn messages_wait_for_every_subscribed_trigger_then_go() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        s.put_trigger(&topic_trigger("a", "orders"), false).unwrap();
        s.put_trigger(&topic_trigger("b", "orders"), false).unwrap();
        s.put_trigger(&topic_trigger("c", "other"), false).unwrap();
        s.put_trigger(
            &Trigger {
                name: "plain".into(),
                spec: TriggerSpec::default(),
                ..topic_trigger("x", "orders")
            },
            false,
        )
        .unwrap();
        for n in 1..=3 {
            assert_eq!(s.publish(&message("orders", n)).unwrap(), 2);
        }
        assert_eq!(s.publish(&message("nobody", 9)).unwrap(), 0);
        let topics = s.list_topics("default").unwrap();
        let counts: Vec<_> = topics
            .iter()
            .map(|t| (t.name.as_str(), t.published, t.pending))
            .collect();
        assert_eq!(counts, [("nobody", 1, 0), ("orders", 3, 3)]);
        let pending = s.pending_deliveries().unwrap();
        assert_eq!(pending.len(), 2);
        assert!(pending.iter().all(|p| p.count == 3 && p.oldest_ms == 1));

        let first = s.next_deliveries("default", "a", 2).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].body, b"{\"n\":1}");
        let seqs: Vec<u64> = first.iter().map(|d| d.seq).collect();
        s.record_delivery(&firing("a"), &[], &seqs).unwrap();
        // Handed over once only: a second time writes nothing.
        assert!(matches!(
            s.record_delivery(&firing("a"), &[], &seqs),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.list_firings("default", "a", 10).unwrap().len(), 1);
        // "b" still waits for all three.
        assert_eq!(s.list_topics("default").unwrap()[1].pending, 3);
        assert_eq!(s.next_deliveries("default", "a", 10).unwrap().len(), 1);
        // Deleting "b" drops what only it waited for.
        assert!(s.delete_trigger("default", "b").unwrap());
        assert_eq!(s.list_topics("default").unwrap()[1].pending, 1);
        let rest: Vec<u64> = s
            .next_deliveries("default", "a", 10)
            .unwrap()
            .iter()
            .map(|d| d.seq)
            .collect();
        s.record_delivery(&firing("a"), &[], &rest).unwrap();
        assert_eq!(s.list_topics("default").unwrap()[1].pending, 0);
        assert!(s.pending_deliveries().unwrap().is_empty());
        // A trigger that stopped being a topic trigger lets go of its messages.
        assert_eq!(s.publish(&message("orders", 4)).unwrap(), 1);
        s.forget_deliveries("default", "a").unwrap();
        assert_eq!(s.list_topics("default").unwrap()[1].pending, 0);
        assert!(s.pending_deliveries().unwrap().is_empty());
    }
}
