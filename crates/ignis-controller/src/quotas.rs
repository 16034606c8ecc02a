//! Per-namespace quotas on the run path: invocations running at once, and invocations started
//! per minute (a token bucket holding a minute's worth, refilled continuously). Every run —
//! blocking, asynchronous, fired by a trigger, from the Lambda API or a web function — is
//! admitted here before the invoker sees it; a refusal names the seconds to wait.
//!
//! Each namespace has its own counters, so one namespace at its limits never refuses another.
//! The retention quotas (days, count) are applied by the pruner task
//! ([`crate::Controller::start_pruner`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use ignis_store::NamespaceQuotas;

/// The server's quotas for namespaces that set none; `0` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct QuotaDefaults {
    /// Invocations of one namespace running at once.
    pub concurrency: u32,
    /// Invocations one namespace may start per minute.
    pub invocations_per_minute: u32,
    /// Days an activation is kept.
    pub activation_retention_days: u32,
    /// Activations one namespace keeps at most, the newest.
    pub activation_retention_count: u32,
    /// MiB the memory limits of one namespace's live instances may add up to.
    pub memory_mb: u32,
    /// Functions one namespace may have.
    pub functions: u32,
    /// MiB of one function's code as uploaded (Lambda's 50 MiB zip).
    pub code_mb: u32,
    /// MiB of one function's code once unpacked (Lambda's 250 MiB).
    pub code_unpacked_mb: u32,
}

impl Default for QuotaDefaults {
    fn default() -> Self {
        QuotaDefaults {
            concurrency: 1000,
            invocations_per_minute: 0,
            activation_retention_days: 0,
            activation_retention_count: 0,
            memory_mb: 0,
            functions: 1000,
            code_mb: 50,
            code_unpacked_mb: 250,
        }
    }
}

impl QuotaDefaults {
    /// These limits, but those that `own` sets.
    pub fn overridden_by(self, own: NamespaceQuotas) -> QuotaDefaults {
        QuotaDefaults {
            concurrency: own.concurrency.unwrap_or(self.concurrency),
            invocations_per_minute: own
                .invocations_per_minute
                .unwrap_or(self.invocations_per_minute),
            activation_retention_days: own
                .activation_retention_days
                .unwrap_or(self.activation_retention_days),
            activation_retention_count: own
                .activation_retention_count
                .unwrap_or(self.activation_retention_count),
            memory_mb: own.memory_mb.unwrap_or(self.memory_mb),
            functions: own.functions.unwrap_or(self.functions),
            code_mb: own.code_mb.unwrap_or(self.code_mb),
            code_unpacked_mb: own.code_unpacked_mb.unwrap_or(self.code_unpacked_mb),
        }
    }
}

/// A refused run: why, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRefusal {
    /// What was exceeded.
    pub message: String,
    /// Seconds until a retry may succeed (at least 1).
    pub retry_after_secs: u64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct Usage {
    running: AtomicU32,
    bucket: Mutex<Option<Bucket>>,
}

/// A run admitted by [`Quotas::admit`]; dropping it ends the run's share of the concurrency.
pub struct Admitted(Arc<Usage>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The quotas of every namespace and what each uses now.
#[derive(Default)]
pub struct Quotas {
    defaults: RwLock<QuotaDefaults>,
    own: RwLock<HashMap<String, NamespaceQuotas>>,
    usage: RwLock<HashMap<String, Arc<Usage>>>,
}

impl Quotas {
    /// Sets the server's defaults.
    pub fn set_defaults(&self, d: QuotaDefaults) {
        *self.defaults.write().unwrap() = d;
    }

    /// Sets a namespace's own quotas.
    pub fn set_own(&self, namespace: &str, q: NamespaceQuotas) {
        self.own.write().unwrap().insert(namespace.to_string(), q);
    }

    /// Forgets a deleted namespace.
    pub fn forget(&self, namespace: &str) {
        self.own.write().unwrap().remove(namespace);
        self.usage.write().unwrap().remove(namespace);
    }

    /// The limits in force for a namespace: its own, else the defaults.
    pub fn effective(&self, namespace: &str) -> QuotaDefaults {
        let own = self
            .own
            .read()
            .unwrap()
            .get(namespace)
            .copied()
            .unwrap_or_default();
        self.defaults.read().unwrap().overridden_by(own)
    }

    fn usage(&self, namespace: &str) -> Arc<Usage> {
        if let Some(u) = self.usage.read().unwrap().get(namespace) {
            return u.clone();
        }
        self.usage
            .write()
            .unwrap()
            .entry(namespace.to_string())
            .or_default()
            .clone()
    }

    /// Invocations of the namespace running now.
    pub fn running(&self, namespace: &str) -> u32 {
        let usage = self.usage.read().unwrap();
        usage
            .get(namespace)
            .map_or(0, |u| u.running.load(Ordering::Acquire))
    }

    /// Admits one run of the namespace, or says why not and for how long.
    pub fn admit(&self, namespace: &str) -> Result<Admitted, QuotaRefusal> {
        let limits = self.effective(namespace);
        let usage = self.usage(namespace);
        let running = usage.running.fetch_add(1, Ordering::AcqRel) + 1;
        let admitted = Admitted(usage.clone());
        if limits.concurrency > 0 && running > limits.concurrency {
            return Err(QuotaRefusal {
                message: format!(
                    "namespace {namespace:?} is at its quota of {} concurrent invocations",
                    limits.concurrency
                ),
                retry_after_secs: 1,
            });
        }
        if limits.invocations_per_minute > 0 {
            let per_minute = f64::from(limits.invocations_per_minute);
            let per_sec = per_minute / 60.0;
            let now = Instant::now();
            let mut bucket = usage.bucket.lock().unwrap();
            let b = bucket.get_or_insert(Bucket {
                tokens: per_minute,
                at: now,
            });
            b.tokens =
                (b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec).min(per_minute);
            b.at = now;
            if b.tokens < 1.0 {
                let wait = ((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64;
                return Err(QuotaRefusal {
                    message: format!(
                        "namespace {namespace:?} is at its quota of {} invocations per minute",
                        limits.invocations_per_minute
                    ),
                    retry_after_secs: wait,
                });
            }
            b.tokens -= 1.0;
        }
        Ok(admitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_is_counted_per_namespace_and_released() {
        let q = Quotas::default();
        q.set_defaults(QuotaDefaults {
            concurrency: 2,
            ..QuotaDefaults::default()
        });
        let a1 = q.admit("a").unwrap();
        let _a2 = q.admit("a").unwrap();
        let refused = q.admit("a").err().unwrap();
        assert_eq!(refused.retry_after_secs, 1);
        assert!(
            refused.message.contains("2 concurrent"),
            "{}",
            refused.message
        );
        // Another namespace is not affected.
        let _b = q.admit("b").unwrap();
        drop(a1);
        let _a3 = q.admit("a").unwrap();
        // A namespace's own quota wins over the default; 0 is no limit.
        q.set_own(
            "b",
            NamespaceQuotas {
                concurrency: Some(0),
                ..Default::default()
            },
        );
        let many: Vec<_> = (0..50).map(|_| q.admit("b").unwrap()).collect();
        assert_eq!(many.len(), 50);
    }

    #[test]
    fn the_rate_is_a_token_bucket_with_a_retry_after() {
        let q = Quotas::default();
        q.set_own(
            "a",
            NamespaceQuotas {
                invocations_per_minute: Some(6),
                ..Default::default()
            },
        );
        for _ in 0..6 {
            drop(q.admit("a").unwrap());
        }
        let refused = q.admit("a").err().unwrap();
        // One token comes back every 10 s.
        assert!(
            (9..=10).contains(&refused.retry_after_secs),
            "{}",
            refused.retry_after_secs
        );
        drop(q.admit("b").unwrap());
        q.forget("a");
        drop(q.admit("a").unwrap());
    }
}
