//! The instances of one function version: idle ones, a count of live ones, and a bounded queue
//! of invocations waiting for one.
//!
//! Invariant: `live` counts every instance that exists or is being created (idle, busy or
//! starting). A [`Slot`] is the right to create one; a [`Lease`] holds a busy one. Both give
//! their place back when dropped, whatever path drops them, so `live` never leaks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ignis_core::FunctionVersion;
use tokio::sync::oneshot;

use crate::InstanceCounts;
use crate::instance::Instance;

/// The pools of every function version, keyed namespace → name → version so that finding one
/// allocates nothing.
#[derive(Default)]
pub(crate) struct PoolMap {
    map: HashMap<String, HashMap<String, HashMap<u32, Arc<Pool>>>>,
}

impl PoolMap {
    pub fn get(&self, f: &FunctionVersion) -> Option<&Arc<Pool>> {
        self.map.get(&f.namespace)?.get(&f.name)?.get(&f.version)
    }

    pub fn get_or_insert(&mut self, f: &Arc<FunctionVersion>, queue_cap: usize) -> Arc<Pool> {
        self.map
            .entry(f.namespace.clone())
            .or_default()
            .entry(f.name.clone())
            .or_default()
            .entry(f.version)
            .or_insert_with(|| Arc::new(Pool::new(f.clone(), queue_cap)))
            .clone()
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.map
            .values()
            .flat_map(|fns| fns.values())
            .flat_map(|vs| vs.values())
            .cloned()
            .collect()
    }

    /// Removes every version of a function; returns their pools.
    pub fn remove_function(&mut self, namespace: &str, name: &str) -> Vec<Arc<Pool>> {
        self.map
            .get_mut(namespace)
            .and_then(|fns| fns.remove(name))
            .map(|vs| vs.into_values().collect())
            .unwrap_or_default()
    }
}

enum Grant {
    Warm(Instance),
    Create,
}

struct State {
    idle: Vec<Instance>,
    live: usize,
    waiters: VecDeque<oneshot::Sender<Grant>>,
    closed: bool,
}

pub(crate) struct Pool {
    /// The version this pool runs.
    pub function: Arc<FunctionVersion>,
    max: usize,
    /// Instances kept even when idle past the keep-alive (provisioned concurrency).
    pub min: std::sync::atomic::AtomicUsize,
    queue_cap: usize,
    state: Mutex<State>,
}

/// What `acquire` got.
pub(crate) enum Acquired {
    /// An idle instance.
    Warm(Lease),
    /// The right to create one.
    Create(Slot),
}

/// A busy instance; released back to its pool (or dropped as dead) exactly once.
pub(crate) struct Lease {
    pool: Arc<Pool>,
    instance: Option<Instance>,
}

/// The right to create an instance; given back if unused.
pub(crate) struct Slot {
    pool: Arc<Pool>,
    used: bool,
}

impl Lease {
    pub fn instance(&mut self) -> &mut Instance {
        self.instance
            .as_mut()
            .expect("a lease holds its instance until released")
    }

    /// Gives the instance back: to a waiter or the idle list if `reusable`, else it is killed.
    pub fn release(mut self, reusable: bool) {
        if let Some(i) = self.instance.take() {
            self.pool.give_back(i, reusable);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Dropped mid-invocation: the instance is in an unknown state.
        if let Some(i) = self.instance.take() {
            self.pool.give_back(i, false);
        }
    }
}

impl Slot {
    pub fn fill(mut self, instance: Instance) -> Lease {
        self.used = true;
        Lease {
            pool: self.pool.clone(),
            instance: Some(instance),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.used {
            let mut st = self.pool.state.lock().unwrap();
            Pool::free_place(&mut st);
        }
    }
}

impl Pool {
    pub fn new(f: Arc<FunctionVersion>, queue_cap: usize) -> Self {
        Pool {
            max: f.spec.max_instances as usize,
            min: std::sync::atomic::AtomicUsize::new(0),
            function: f,
            queue_cap,
            state: Mutex::new(State {
                idle: Vec::new(),
                live: 0,
                waiters: VecDeque::new(),
                closed: false,
            }),
        }
    }

    /// A place (live count) is free: hand it to a waiter as the right to create, or count down.
    fn free_place(st: &mut State) {
        while let Some(w) = st.waiters.pop_front() {
            if w.send(Grant::Create).is_ok() {
                return;
            }
        }
        st.live -= 1;
    }

    fn give_back(&self, mut instance: Instance, reusable: bool) {
        let mut st = self.state.lock().unwrap();
        if reusable && !st.closed {
            instance.last_used = Instant::now();
            while let Some(w) = st.waiters.pop_front() {
                match w.send(Grant::Warm(instance)) {
                    Ok(()) => return,
                    Err(Grant::Warm(back)) => instance = back,
                    Err(Grant::Create) => unreachable!("sent a warm grant"),
                }
            }
            st.idle.push(instance);
            return;
        }
        Self::free_place(&mut st);
        drop(st);
        drop(instance); // kills its process group, outside the lock
    }

    /// Takes an idle instance, or the right to create one, or waits in the queue until
    /// `deadline`. `Err` means throttled: no instance, no room in the queue (or no grant in time).
    pub async fn acquire(self: &Arc<Self>, deadline: tokio::time::Instant) -> Result<Acquired, ()> {
        let mut rx = {
            let mut st = self.state.lock().unwrap();
            if let Some(i) = st.idle.pop() {
                return Ok(Acquired::Warm(self.lease(i)));
            }
            if st.live < self.max {
                st.live += 1;
                return Ok(Acquired::Create(Slot {
                    pool: self.clone(),
                    used: false,
                }));
            }
            st.waiters.retain(|w| !w.is_closed());
            if st.waiters.len() >= self.queue_cap {
                return Err(());
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(tx);
            rx
        };
        match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(Ok(grant)) => Ok(self.granted(grant)),
            Ok(Err(_)) => Err(()),
            Err(_) => {
                // A grant may have been sent just as the wait ended: take it and give it back.
                rx.close();
                if let Ok(grant) = rx.try_recv() {
                    match self.granted(grant) {
                        Acquired::Warm(lease) => lease.release(true),
                        Acquired::Create(slot) => drop(slot),
                    }
                }
                Err(())
            }
        }
    }

    fn lease(self: &Arc<Self>, i: Instance) -> Lease {
        Lease {
            pool: self.clone(),
            instance: Some(i),
        }
    }

    fn granted(self: &Arc<Self>, grant: Grant) -> Acquired {
        match grant {
            Grant::Warm(i) => Acquired::Warm(self.lease(i)),
            Grant::Create => Acquired::Create(Slot {
                pool: self.clone(),
                used: false,
            }),
        }
    }

    /// Kills idle instances unused for longer than `keep_alive`, keeping `min` alive.
    pub fn reap_idle(&self, keep_alive: Duration) {
        let min = self.min.load(std::sync::atomic::Ordering::Relaxed);
        let expired: Vec<Instance> = {
            let mut st = self.state.lock().unwrap();
            let mut spare = st.live.saturating_sub(min);
            // Oldest first: idle is kept in release order, newest last.
            let mut expired = Vec::new();
            let mut kept = Vec::with_capacity(st.idle.len());
            for i in std::mem::take(&mut st.idle) {
                if spare > 0 && i.last_used.elapsed() >= keep_alive {
                    spare -= 1;
                    expired.push(i);
                } else {
                    kept.push(i);
                }
            }
            st.idle = kept;
            st.live -= expired.len();
            expired
        };
        if !expired.is_empty() {
            tracing::debug!(count = expired.len(), "reclaimed idle instances");
        }
    }

    /// When this pool's least recently used idle instance was last used.
    pub fn oldest_idle(&self) -> Option<Instant> {
        let st = self.state.lock().unwrap();
        st.idle.iter().map(|i| i.last_used).min()
    }

    /// Removes the least recently used idle instance (to free memory for another function).
    pub fn evict_oldest(&self) -> Option<Instance> {
        let mut st = self.state.lock().unwrap();
        let pos = st
            .idle
            .iter()
            .enumerate()
            .min_by_key(|(_, i)| i.last_used)
            .map(|(pos, _)| pos)?;
        let inst = st.idle.swap_remove(pos);
        Self::free_place(&mut st);
        Some(inst)
    }

    /// The right to create an instance if the pool has room, without waiting.
    pub fn try_slot(self: &Arc<Self>) -> Option<Slot> {
        let mut st = self.state.lock().unwrap();
        if st.closed || st.live >= self.max {
            return None;
        }
        st.live += 1;
        Some(Slot {
            pool: self.clone(),
            used: false,
        })
    }

    /// Kills idle instances and refuses to keep any from now on.
    pub fn close(&self) {
        let idle = {
            let mut st = self.state.lock().unwrap();
            st.closed = true;
            st.waiters.clear();
            let idle = std::mem::take(&mut st.idle);
            st.live -= idle.len();
            idle
        };
        drop(idle);
    }

    pub fn counts(&self) -> InstanceCounts {
        let st = self.state.lock().unwrap();
        InstanceCounts {
            live: st.live,
            idle: st.idle.len(),
            queued: st.waiters.iter().filter(|w| !w.is_closed()).count(),
        }
    }
}
