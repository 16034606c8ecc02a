//! The instances of one function version: idle ones, a count of live ones, and a bounded queue
//! of invocations waiting for one.
//!
//! Invariant: `live` counts every instance that exists or is being created (idle, busy or
//! starting). A [`Slot`] is the right to create one; a [`Lease`] holds a busy one. Both give
//! their place back when dropped, whatever path drops them, so `live` never leaks.
//!
//! An instance that runs several invocations at once (`instance_concurrency` = c > 1) is in
//! the pool as c handles, one per place: leases and the idle list hold handles, and the
//! instance counts once in `live`. Handles of one instance share its `Arc<Registered>`, so
//! its strong count is how many handles exist; handles are only created or dropped under the
//! pool's lock (except the last one of an instance, which kills it), so counts read there are
//! exact. An instance is idle when all its handles are; it is retired as a whole.

use std::collections::{HashMap, VecDeque};
use std::ptr;
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
    /// Puts the new instance in the pool: the caller gets a lease on it, and a shared
    /// instance's other handles go to waiters or the idle list.
    pub fn fill(mut self, instance: Instance) -> Lease {
        self.used = true;
        let places = self.pool.function.spec.instance_concurrency as usize;
        for handle in instance.more_handles(places.saturating_sub(1)) {
            self.pool.give_back(handle, true);
        }
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
        if reusable && !st.closed && !instance.is_dead() {
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
        let gone = Self::retire(&mut st, instance);
        drop(st);
        drop(gone); // kills its process group, outside the lock
    }

    /// Takes an instance (or a handle of a shared one, with its idle siblings) out of the pool.
    /// Its place is freed with its last handle; what is returned is to be dropped outside
    /// the lock (dropping the last handle kills the process).
    fn retire(st: &mut State, instance: Instance) -> Vec<Instance> {
        let key = Arc::as_ptr(&instance.meta);
        let mut gone = vec![instance];
        if Arc::strong_count(&gone[0].meta) > 1 {
            let (same, others): (Vec<_>, Vec<_>) = std::mem::take(&mut st.idle)
                .into_iter()
                .partition(|i| ptr::eq(Arc::as_ptr(&i.meta), key));
            st.idle = others;
            gone.extend(same);
        }
        if Arc::strong_count(&gone[0].meta) == gone.len() {
            Self::free_place(st);
            gone
        } else {
            drop(gone); // handles still leased elsewhere: the last of them frees the place
            Vec::new()
        }
    }

    /// The idle instances: for each, the positions of its handles in `idle` and when it was
    /// last used. A shared instance with a handle still leased is not idle.
    fn idle_instances(idle: &[Instance]) -> Vec<(Vec<usize>, Instant)> {
        let mut groups: Vec<(Vec<usize>, Instant)> = Vec::new();
        let mut at: HashMap<*const crate::registry::Registered, usize> = HashMap::new();
        for (pos, i) in idle.iter().enumerate() {
            let key = Arc::as_ptr(&i.meta);
            match at.get(&key) {
                Some(&g) => {
                    groups[g].0.push(pos);
                    groups[g].1 = groups[g].1.max(i.last_used);
                }
                None => {
                    at.insert(key, groups.len());
                    groups.push((vec![pos], i.last_used));
                }
            }
        }
        groups.retain(|(handles, _)| Arc::strong_count(&idle[handles[0]].meta) == handles.len());
        groups
    }

    /// Removes the handles at `positions` (sorted) from `idle`.
    fn take_handles(idle: &mut Vec<Instance>, positions: &[usize]) -> Vec<Instance> {
        let mut taken = Vec::with_capacity(positions.len());
        for &pos in positions.iter().rev() {
            taken.push(idle.remove(pos));
        }
        taken
    }

    /// Takes an idle instance, or the right to create one, or waits in the queue until
    /// `deadline`. `Err` means throttled: no instance, no room in the queue (or no grant in time).
    pub async fn acquire(self: &Arc<Self>, deadline: tokio::time::Instant) -> Result<Acquired, ()> {
        let mut rx = {
            let mut st = self.state.lock().unwrap();
            while let Some(i) = st.idle.pop() {
                if !i.is_dead() {
                    return Ok(Acquired::Warm(self.lease(i)));
                }
                let gone = Self::retire(&mut st, i);
                if !gone.is_empty() {
                    drop(st);
                    drop(gone);
                    st = self.state.lock().unwrap();
                }
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
            let mut groups = Self::idle_instances(&st.idle);
            groups.sort_by_key(|(_, used)| *used); // oldest first
            let mut doomed: Vec<usize> = Vec::new();
            for (handles, used) in groups {
                if spare == 0 || used.elapsed() < keep_alive {
                    break;
                }
                spare -= 1;
                st.live -= 1;
                doomed.extend(handles);
            }
            doomed.sort_unstable();
            Self::take_handles(&mut st.idle, &doomed)
        };
        if !expired.is_empty() {
            tracing::debug!(count = expired.len(), "reclaimed idle instances");
        }
    }

    /// When this pool's least recently used idle instance was last used.
    pub fn oldest_idle(&self) -> Option<Instant> {
        let st = self.state.lock().unwrap();
        Self::idle_instances(&st.idle)
            .into_iter()
            .map(|(_, used)| used)
            .min()
    }

    /// Removes the least recently used idle instance (to free memory for another function).
    pub fn evict_oldest(&self) -> Option<Vec<Instance>> {
        let mut st = self.state.lock().unwrap();
        let (handles, _) = Self::idle_instances(&st.idle)
            .into_iter()
            .min_by_key(|(_, used)| *used)?;
        let gone = Self::take_handles(&mut st.idle, &handles);
        Self::free_place(&mut st);
        Some(gone)
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
            let mut whole: Vec<usize> = Vec::new();
            for (handles, _) in Self::idle_instances(&st.idle) {
                st.live -= 1;
                whole.extend(handles);
            }
            whole.sort_unstable();
            let idle = Self::take_handles(&mut st.idle, &whole);
            // Idle handles of instances still running something go now, under the lock; the
            // last leased handle frees the place when it comes back.
            st.idle.clear();
            idle
        };
        drop(idle);
    }

    pub fn counts(&self) -> InstanceCounts {
        let st = self.state.lock().unwrap();
        InstanceCounts {
            live: st.live,
            idle: Self::idle_instances(&st.idle).len(),
            queued: st.waiters.iter().filter(|w| !w.is_closed()).count(),
        }
    }
}
