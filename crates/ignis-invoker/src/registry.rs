//! Every live instance of the invoker, for `GET /v1/system/instances`, and the memory account:
//! the sum of the memory limits of live instances may not pass the invoker's budget, nor those
//! of one namespace its quota. Touched when instances are created and destroyed, never on the
//! warm path (state changes are atomics).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use ignis_core::FunctionVersion;
use serde::Serialize;

/// What is known of one live instance.
pub(crate) struct InstanceMeta {
    pub name: String,
    pub function: Arc<FunctionVersion>,
    pub created: Instant,
    /// Invocations it is running now (at most its function's instance_concurrency).
    pub running: AtomicU32,
    pub served: AtomicU64,
}

/// One instance as `GET /v1/system/instances` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InstanceInfo {
    /// `<function>/<n>`.
    pub id: String,
    /// Namespace of its function.
    pub namespace: String,
    /// Its function.
    pub function: String,
    /// The version it runs.
    pub version: u32,
    /// `python`, `node`, `exec` or `wasm`.
    pub runtime: String,
    /// `idle` or `busy`.
    pub state: &'static str,
    /// Invocations it is running now.
    pub running: u32,
    /// Milliseconds since it was created.
    pub age_ms: u64,
    /// Invocations it has served.
    pub invocations: u64,
    /// Its memory limit.
    pub memory_mb: u32,
}

/// The registry and the memory account.
pub(crate) struct Registry {
    live: Mutex<HashMap<u64, Arc<InstanceMeta>>>,
    next: AtomicU64,
    used_mb: AtomicU64,
    budget_mb: u64,
    /// MiB reserved by each namespace's instances.
    by_namespace: Mutex<HashMap<String, u64>>,
}

/// Which limit a reservation ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Short {
    /// The invoker's budget.
    Budget,
    /// The namespace's quota.
    Namespace,
}

/// Memory reserved for an instance being created; given back when dropped unless it became
/// part of a [`Registered`] instance.
pub(crate) struct MemoryGrant {
    registry: Weak<Registry>,
    namespace: String,
    mb: u64,
}

impl Drop for MemoryGrant {
    fn drop(&mut self) {
        if let Some(r) = self.registry.upgrade() {
            let mut by_ns = r.by_namespace.lock().unwrap();
            if let Some(used) = by_ns.get_mut(&self.namespace) {
                *used -= self.mb.min(*used);
                if *used == 0 {
                    by_ns.remove(&self.namespace);
                }
            }
            r.used_mb.fetch_sub(self.mb, Ordering::AcqRel);
        }
    }
}

/// An instance's entry in the registry, removed (with its memory) when dropped.
pub(crate) struct Registered {
    pub meta: Arc<InstanceMeta>,
    id: u64,
    registry: Weak<Registry>,
    _memory: MemoryGrant,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(r) = self.registry.upgrade() {
            r.live.lock().unwrap().remove(&self.id);
        }
    }
}

impl Registry {
    pub fn new(budget_mb: u64) -> Self {
        Registry {
            live: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            used_mb: AtomicU64::new(0),
            budget_mb,
            by_namespace: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves `mb` for an instance of `namespace` if both the budget and the namespace's
    /// quota (`namespace_limit_mb`, 0 for none) have room.
    pub fn reserve(
        self: &Arc<Self>,
        mb: u64,
        namespace: &str,
        namespace_limit_mb: u64,
    ) -> Result<MemoryGrant, Short> {
        let mut by_ns = self.by_namespace.lock().unwrap();
        let ns_used = by_ns.get(namespace).copied().unwrap_or(0);
        if namespace_limit_mb > 0 && ns_used + mb > namespace_limit_mb {
            return Err(Short::Namespace);
        }
        let mut cur = self.used_mb.load(Ordering::Acquire);
        loop {
            if cur + mb > self.budget_mb {
                return Err(Short::Budget);
            }
            match self
                .used_mb
                .compare_exchange(cur, cur + mb, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        *by_ns.entry(namespace.to_string()).or_insert(0) += mb;
        Ok(MemoryGrant {
            registry: Arc::downgrade(self),
            namespace: namespace.to_string(),
            mb,
        })
    }

    /// MiB reserved by a namespace's instances.
    pub fn namespace_memory(&self, namespace: &str) -> u64 {
        let by_ns = self.by_namespace.lock().unwrap();
        by_ns.get(namespace).copied().unwrap_or(0)
    }

    /// Registers a new instance of `f`, holding `memory` for as long as it lives.
    pub fn register(self: &Arc<Self>, f: &Arc<FunctionVersion>, memory: MemoryGrant) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let meta = Arc::new(InstanceMeta {
            name: format!("{}/{id}", f.name),
            function: f.clone(),
            created: Instant::now(),
            running: AtomicU32::new(0),
            served: AtomicU64::new(0),
        });
        self.live.lock().unwrap().insert(id, meta.clone());
        Registered {
            meta,
            id,
            registry: Arc::downgrade(self),
            _memory: memory,
        }
    }

    /// Memory limits of live instances added up, and the budget.
    pub fn memory(&self) -> (u64, u64) {
        (self.used_mb.load(Ordering::Acquire), self.budget_mb)
    }

    /// Every live instance, oldest first.
    pub fn list(&self) -> Vec<InstanceInfo> {
        let live = self.live.lock().unwrap();
        let mut list: Vec<(u64, InstanceInfo)> = live
            .iter()
            .map(|(id, m)| {
                let running = m.running.load(Ordering::Relaxed);
                (
                    *id,
                    InstanceInfo {
                        id: m.name.clone(),
                        namespace: m.function.namespace.clone(),
                        function: m.function.name.clone(),
                        version: m.function.version,
                        runtime: m.function.spec.runtime.to_string(),
                        state: if running > 0 { "busy" } else { "idle" },
                        running,
                        age_ms: m.created.elapsed().as_millis() as u64,
                        invocations: m.served.load(Ordering::Relaxed),
                        memory_mb: m.function.spec.memory_mb,
                    },
                )
            })
            .collect();
        list.sort_by_key(|(id, _)| *id);
        list.into_iter().map(|(_, i)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_reserved_and_given_back() {
        let r = Arc::new(Registry::new(1000));
        let a = r.reserve(600, "a", 0).unwrap();
        assert_eq!(r.reserve(500, "b", 0).err(), Some(Short::Budget));
        // A namespace's quota is its own: "a" has no room, "b" has.
        assert_eq!(r.reserve(300, "a", 800).err(), Some(Short::Namespace));
        let b = r.reserve(400, "b", 400).unwrap();
        assert_eq!(r.memory(), (1000, 1000));
        assert_eq!(
            (r.namespace_memory("a"), r.namespace_memory("b")),
            (600, 400)
        );
        drop(a);
        assert_eq!(r.memory().0, 400);
        assert_eq!(r.namespace_memory("a"), 0);
        assert!(r.reserve(200, "a", 800).is_ok());
        let f = Arc::new(FunctionVersion {
            namespace: "default".into(),
            name: "f".into(),
            version: 1,
            spec: ignis_core::FunctionSpec::new(ignis_core::Runtime::Python, "app.h"),
            code: ignis_core::CodeRef {
                sha256: "0".repeat(64),
                size: 1,
                format: ignis_core::CodeFormat::File,
                filename: Some("app.py".into()),
            },
            created_ms: 0,
        });
        let reg = r.register(&f, b);
        assert_eq!(r.list().len(), 1);
        assert_eq!(r.list()[0].state, "idle");
        drop(reg);
        assert!(r.list().is_empty());
        assert_eq!(r.memory().0, 0);
    }
}
