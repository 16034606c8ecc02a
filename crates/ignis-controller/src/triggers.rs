//! Triggers and rules (OpenWhisk's model) and the cron scheduler.
//!
//! Firing a trigger queues one asynchronous invocation per enabled rule (durably, in the same
//! transaction as the firing record), so a firing is never half done. A cron trigger fires on
//! its schedule while the server runs; the scheduled time it fired for is stored with the
//! firing, so a restart never fires twice for one time, and times missed while the server was
//! down are skipped unless the trigger asks to catch up.

use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use ignis_core::{
    ActivationId, Caused, Firing, Rule, Trigger, TriggerKind, TriggerSpec, now_ms,
    validate_function_name,
};
use ignis_store::QueuedInvocation;

use crate::{Controller, ControllerError, Result};
use ignis_core::SpecError;

/// How late a scheduled time may be handled and still fire (beyond that it was missed).
const ON_TIME: Duration = Duration::from_secs(3);
/// How often the scheduler looks at cron triggers.
const TICK: Duration = Duration::from_millis(100);

/// A parsed cron schedule in its time zone.
#[derive(Debug)]
pub struct Schedule {
    cron: cron::Schedule,
    tz: chrono_tz::Tz,
}

/// Day-of-week numbers of standard cron (0 or 7 = Sunday) as names, which the `cron` crate
/// reads the same way (its numbers start at 1 = Sunday).
fn dow_names(field: &str) -> std::result::Result<String, String> {
    const NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    let mut out = Vec::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let mapped: Vec<String> = range
            .split('-')
            .map(|x| match x.parse::<usize>() {
                Ok(n) if n <= 7 => Ok(NAMES[n].to_string()),
                Ok(n) => Err(format!("day of week {n} is out of 0-7")),
                Err(_) => Ok(x.to_string()),
            })
            .collect::<std::result::Result<_, _>>()?;
        let mut p = mapped.join("-");
        // "5-7" is Friday to Sunday in standard cron; the crate wants SUN on its own.
        if step.is_none() && mapped.len() == 2 && mapped[1] == "SUN" && mapped[0] != "SUN" {
            p = format!("{}-SAT,SUN", mapped[0]);
        }
        if let Some(s) = step {
            p.push('/');
            p.push_str(s);
        }
        out.push(p);
    }
    Ok(out.join(","))
}

impl Schedule {
    /// Parses 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), in
    /// `timezone` (IANA name, default UTC).
    pub fn parse(expr: &str, timezone: Option<&str>) -> std::result::Result<Schedule, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let full = match fields.len() {
            5 => format!(
                "0 {} {} {} {} {}",
                fields[0],
                fields[1],
                fields[2],
                fields[3],
                dow_names(fields[4])?
            ),
            6 => format!(
                "{} {} {} {} {} {}",
                fields[0],
                fields[1],
                fields[2],
                fields[3],
                fields[4],
                dow_names(fields[5])?
            ),
            n => {
                return Err(format!(
                    "a schedule has 5 fields (minute hour day month weekday) or 6 (seconds first), not {n}"
                ));
            }
        };
        let cron = cron::Schedule::from_str(&full).map_err(|e| format!("{expr:?}: {e}"))?;
        let tz = match timezone {
            None => chrono_tz::UTC,
            Some(name) => name
                .parse::<chrono_tz::Tz>()
                .map_err(|_| format!("unknown time zone {name:?}"))?,
        };
        Ok(Schedule { cron, tz })
    }

    /// The first scheduled time strictly after `after_ms`.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after: DateTime<Utc> = Utc.timestamp_millis_opt(after_ms as i64).single()?;
        let local = after.with_timezone(&self.tz);
        self.cron
            .after(&local)
            .next()
            .map(|t| t.with_timezone(&Utc).timestamp_millis() as u64)
    }
}

/// Refuses a field set on a trigger of a kind that does not use it.
fn only_for(set: bool, field: &'static str, kind: &str) -> Result<()> {
    if set {
        return Err(SpecError::new(field, format!("only {kind} triggers have a {field}")).into());
    }
    Ok(())
}

/// Checks a trigger's spec; a spec with a `topic`, `nats` or `bucket` and no kind gets that
/// kind.
fn check_trigger_spec(spec: &mut TriggerSpec) -> Result<()> {
    if spec.kind == TriggerKind::Plain {
        if spec.topic.is_some() {
            spec.kind = TriggerKind::Topic;
        } else if spec.nats.is_some() {
            spec.kind = TriggerKind::Nats;
        } else if spec.bucket.is_some() {
            spec.kind = TriggerKind::Storage;
        }
    }
    let kind = spec.kind;
    if kind != TriggerKind::Cron {
        only_for(spec.schedule.is_some(), "schedule", "cron")?;
        only_for(spec.timezone.is_some(), "timezone", "cron")?;
    }
    if kind != TriggerKind::Topic {
        only_for(spec.topic.is_some(), "topic", "topic")?;
        only_for(spec.batch_size.is_some(), "batch_size", "topic")?;
        only_for(spec.batch_window_ms.is_some(), "batch_window_ms", "topic")?;
    }
    if kind != TriggerKind::Nats {
        only_for(spec.nats.is_some(), "nats", "nats")?;
    }
    if kind != TriggerKind::Storage {
        only_for(spec.bucket.is_some(), "bucket", "storage")?;
        only_for(!spec.events.is_empty(), "events", "storage")?;
        only_for(spec.prefix.is_some(), "prefix", "storage")?;
        only_for(spec.suffix.is_some(), "suffix", "storage")?;
    }
    match kind {
        TriggerKind::Plain => {}
        TriggerKind::Cron => {
            let Some(expr) = &spec.schedule else {
                return Err(SpecError::new("schedule", "required for a cron trigger").into());
            };
            Schedule::parse(expr, spec.timezone.as_deref()).map_err(|e| {
                SpecError::new(
                    if e.contains("time zone") {
                        "timezone"
                    } else {
                        "schedule"
                    },
                    e,
                )
            })?;
        }
        TriggerKind::Topic => crate::topics::check_topic_trigger(spec)?,
        TriggerKind::Nats => crate::nats::check_nats_source(spec.nats.as_ref())?,
        TriggerKind::Storage => {
            let Some(bucket) = &spec.bucket else {
                return Err(SpecError::new("bucket", "required for a storage trigger").into());
            };
            ignis_core::data::validate_bucket_name(bucket)
                .map_err(|e| SpecError::new("bucket", e.to_string()))?;
        }
    }
    Ok(())
}

/// A firing of `trigger` with `payload`: one queued invocation per rule (which must be the
/// trigger's enabled ones).
pub(crate) fn firing_of(
    trigger: &Trigger,
    rules: Vec<Rule>,
    payload: &[u8],
    scheduled_ms: Option<u64>,
) -> (Firing, Vec<QueuedInvocation>) {
    let now = now_ms();
    let mut caused = Vec::new();
    let mut queued = Vec::new();
    for r in rules {
        let id = ActivationId::new();
        caused.push(Caused {
            rule: r.name.clone(),
            function: r.function.clone(),
            activation_id: id,
        });
        queued.push(QueuedInvocation {
            id,
            namespace: trigger.namespace.clone(),
            function: r.function,
            version: None,
            event: payload.to_vec(),
            attempts: 0,
            next_attempt_ms: now,
            created_ms: now,
            idempotency_key: None,
            last_error: None,
            trigger: Some(trigger.name.clone()),
            callback: None,
            state: ignis_store::QueueState::Queued,
        });
    }
    let firing = Firing {
        id: ActivationId::new(),
        namespace: trigger.namespace.clone(),
        trigger: trigger.name.clone(),
        fired_ms: now,
        scheduled_ms,
        activations: caused,
    };
    (firing, queued)
}

impl Controller {
    /// Creates or replaces a trigger. True if new.
    pub async fn put_trigger(
        &self,
        namespace: &str,
        name: &str,
        mut spec: TriggerSpec,
        create_only: bool,
    ) -> Result<(Trigger, bool)> {
        self.check_namespace(namespace).await?;
        validate_function_name(name).map_err(|e| {
            ControllerError::InvalidSpec(SpecError::new(
                "name",
                e.to_string().replace("function", "trigger"),
            ))
        })?;
        check_trigger_spec(&mut spec)?;
        crate::nats::complete_nats_source(namespace, name, &mut spec);
        let (ns, n) = (namespace.to_string(), name.to_string());
        let trigger = self
            .blocking(move |i| {
                // A changed schedule starts from now: no firing for times before the change.
                let trigger = Trigger {
                    namespace: ns,
                    name: n,
                    spec,
                    created_ms: now_ms(),
                    last_scheduled_ms: Some(now_ms()),
                };
                let new = i.store.put_trigger(&trigger, create_only)?;
                Ok((trigger, new))
            })
            .await?;
        self.inner.nats.changed();
        self.inner.topics.wake();
        Ok(trigger)
    }

    /// One trigger.
    pub async fn get_trigger(&self, namespace: &str, name: &str) -> Result<Trigger> {
        self.check_namespace(namespace).await?;
        let (ns, n) = (namespace.to_string(), name.to_string());
        self.blocking(move |i| Ok(i.store.get_trigger(&ns, &n)?))
            .await?
            .ok_or_else(|| ControllerError::NotFound(format!("trigger {name:?}")))
    }

    /// The triggers of a namespace.
    pub async fn list_triggers(&self, namespace: &str) -> Result<Vec<Trigger>> {
        self.check_namespace(namespace).await?;
        let ns = namespace.to_string();
        self.blocking(move |i| Ok(i.store.list_triggers(&ns)?))
            .await
    }

    /// Deletes a trigger and its rules.
    pub async fn delete_trigger(&self, namespace: &str, name: &str) -> Result<()> {
        self.check_namespace(namespace).await?;
        let (ns, n) = (namespace.to_string(), name.to_string());
        let deleted = self
            .blocking(move |i| Ok(i.store.delete_trigger(&ns, &n)?))
            .await?;
        if !deleted {
            return Err(ControllerError::NotFound(format!("trigger {name:?}")));
        }
        self.inner.nats.changed();
        Ok(())
    }

    /// Creates or replaces a rule; its trigger and function must exist.
    pub async fn put_rule(
        &self,
        namespace: &str,
        name: &str,
        trigger: &str,
        function: &str,
        enabled: bool,
        create_only: bool,
    ) -> Result<(Rule, bool)> {
        self.check_namespace(namespace).await?;
        validate_function_name(name).map_err(|e| {
            ControllerError::InvalidSpec(SpecError::new(
                "name",
                e.to_string().replace("function", "rule"),
            ))
        })?;
        self.get_trigger(namespace, trigger).await?;
        self.get_function(namespace, function, None).await?;
        let rule = Rule {
            namespace: namespace.to_string(),
            name: name.to_string(),
            trigger: trigger.to_string(),
            function: function.to_string(),
            enabled,
            created_ms: now_ms(),
        };
        let r = rule.clone();
        let new = self
            .blocking(move |i| Ok(i.store.put_rule(&r, create_only)?))
            .await?;
        self.inner.topics.wake();
        Ok((rule, new))
    }

    /// One rule.
    pub async fn get_rule(&self, namespace: &str, name: &str) -> Result<Rule> {
        self.check_namespace(namespace).await?;
        let (ns, n) = (namespace.to_string(), name.to_string());
        self.blocking(move |i| Ok(i.store.get_rule(&ns, &n)?))
            .await?
            .ok_or_else(|| ControllerError::NotFound(format!("rule {name:?}")))
    }

    /// Enables or disables a rule.
    pub async fn set_rule_enabled(
        &self,
        namespace: &str,
        name: &str,
        enabled: bool,
    ) -> Result<Rule> {
        let mut rule = self.get_rule(namespace, name).await?;
        rule.enabled = enabled;
        let r = rule.clone();
        self.blocking(move |i| Ok(i.store.put_rule(&r, false)?))
            .await?;
        self.inner.topics.wake();
        Ok(rule)
    }

    /// The rules of a namespace.
    pub async fn list_rules(&self, namespace: &str) -> Result<Vec<Rule>> {
        self.check_namespace(namespace).await?;
        let ns = namespace.to_string();
        self.blocking(move |i| Ok(i.store.list_rules(&ns)?)).await
    }

    /// Deletes a rule.
    pub async fn delete_rule(&self, namespace: &str, name: &str) -> Result<()> {
        self.check_namespace(namespace).await?;
        let (ns, n) = (namespace.to_string(), name.to_string());
        if !self
            .blocking(move |i| Ok(i.store.delete_rule(&ns, &n)?))
            .await?
        {
            return Err(ControllerError::NotFound(format!("rule {name:?}")));
        }
        Ok(())
    }

    /// Firings of a trigger, newest first.
    pub async fn list_firings(
        &self,
        namespace: &str,
        trigger: &str,
        limit: usize,
    ) -> Result<Vec<Firing>> {
        self.get_trigger(namespace, trigger).await?;
        let (ns, t) = (namespace.to_string(), trigger.to_string());
        self.blocking(move |i| Ok(i.store.list_firings(&ns, &t, limit)?))
            .await
    }

    /// Fires a trigger with a payload: one queued invocation per enabled rule.
    pub async fn fire_trigger(
        &self,
        namespace: &str,
        name: &str,
        payload: Bytes,
    ) -> Result<Firing> {
        let trigger = self.get_trigger(namespace, name).await?;
        let payload = if payload.iter().all(|b| b.is_ascii_whitespace()) {
            Bytes::from_static(b"{}")
        } else {
            ignis_core::check_json(&payload)
                .map_err(|e| ControllerError::BadRequest(e.to_string()))?;
            payload
        };
        self.fire(trigger, payload, None).await
    }

    /// The enabled rules of a trigger.
    pub(crate) async fn rules_of(&self, trigger: &Trigger) -> Result<Vec<Rule>> {
        let (ns, name) = (trigger.namespace.clone(), trigger.name.clone());
        Ok(self
            .blocking(move |i| Ok(i.store.list_rules(&ns)?))
            .await?
            .into_iter()
            .filter(|r| r.trigger == name && r.enabled)
            .collect())
    }

    pub(crate) async fn fire(
        &self,
        trigger: Trigger,
        payload: Bytes,
        scheduled_ms: Option<u64>,
    ) -> Result<Firing> {
        let rules = self.rules_of(&trigger).await?;
        let (firing, queued) = firing_of(&trigger, rules, &payload, scheduled_ms);
        let f = firing.clone();
        self.blocking(move |i| Ok(i.store.record_firing(&f, &queued)?))
            .await?;
        self.inner.queue.wake();
        Ok(firing)
    }

    /// Starts the cron scheduler.
    pub fn start_scheduler(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                if !this.leads() {
                    continue;
                }
                if let Err(e) = this.schedule_tick().await {
                    tracing::error!(error = %e, "scheduler");
                }
            }
        });
    }

    /// Every trigger of one kind, in every namespace.
    pub(crate) async fn triggers_of_kind(&self, kind: TriggerKind) -> Result<Vec<Trigger>> {
        self.blocking(move |i| {
            let mut all = Vec::new();
            for ns in i.store.list_namespaces()? {
                all.extend(
                    i.store
                        .list_triggers(&ns)?
                        .into_iter()
                        .filter(|t| t.spec.kind == kind),
                );
            }
            Ok(all)
        })
        .await
    }

    async fn schedule_tick(&self) -> Result<()> {
        let triggers = self.triggers_of_kind(TriggerKind::Cron).await?;
        let now = now_ms();
        for t in triggers {
            let Some(expr) = t.spec.schedule.as_deref() else {
                continue;
            };
            let Ok(schedule) = Schedule::parse(expr, t.spec.timezone.as_deref()) else {
                continue;
            };
            let last = t.last_scheduled_ms.unwrap_or(t.created_ms);
            let Some(due) = schedule.next_after(last) else {
                continue;
            };
            if due > now {
                continue;
            }
            // The latest scheduled time that has passed.
            let mut latest = due;
            while let Some(n) = schedule.next_after(latest) {
                if n > now {
                    break;
                }
                latest = n;
            }
            let payload = Bytes::from(
                t.spec
                    .payload
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "{}".to_string()),
            );
            let at = if t.spec.catch_up {
                // One firing per tick for each missed time, oldest first.
                Some(due)
            } else if now - latest <= ON_TIME.as_millis() as u64 {
                Some(latest)
            } else {
                None
            };
            if let Some(at) = at {
                match self.fire(t, payload, Some(at)).await {
                    // Another scheduler of the cluster fired this time first.
                    Err(crate::ControllerError::Conflict(what)) => {
                        tracing::debug!(what, "scheduled time already fired")
                    }
                    other => {
                        other?;
                    }
                }
            } else {
                // Missed while the server was down: skip, do not burst.
                let (ns, name) = (t.namespace.clone(), t.name.clone());
                self.blocking(move |i| Ok(i.store.skip_scheduled(&ns, &name, latest)?))
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_step() {
        let s = Schedule::parse("*/5 * * * *", None).unwrap();
        // 2024-01-01T00:00:00Z
        let t0 = 1_704_067_200_000;
        assert_eq!(s.next_after(t0), Some(t0 + 5 * 60_000));
        let every_second = Schedule::parse("* * * * * *", None).unwrap();
        assert_eq!(every_second.next_after(t0), Some(t0 + 1000));
        // Monday 9:00 in Paris is 8:00 UTC in winter. 2024-01-01 is a Monday.
        let paris = Schedule::parse("0 9 * * 1", Some("Europe/Paris")).unwrap();
        assert_eq!(paris.next_after(t0), Some(t0 + 8 * 3_600_000));
        // 0 and 7 are Sunday, as in standard cron. 2024-01-07 is a Sunday.
        let sunday = Schedule::parse("0 0 * * 0", None).unwrap();
        assert_eq!(sunday.next_after(t0), Some(t0 + 6 * 86_400_000));
        assert_eq!(
            Schedule::parse("0 0 * * 7", None).unwrap().next_after(t0),
            Some(t0 + 6 * 86_400_000)
        );
    }

    #[test]
    fn bad_schedules_say_why() {
        assert!(
            Schedule::parse("* * *", None)
                .unwrap_err()
                .contains("5 fields")
        );
        assert!(Schedule::parse("61 * * * *", None).is_err());
        assert!(
            Schedule::parse("* * * * 9", None)
                .unwrap_err()
                .contains("out of 0-7")
        );
        assert!(
            Schedule::parse("* * * * *", Some("Mars/Olympus"))
                .unwrap_err()
                .contains("time zone")
        );
    }
}
