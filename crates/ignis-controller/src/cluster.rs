//! What the controller does differently in cluster mode (docs/cluster.md): invocations go to
//! the cluster's invokers through a [`RemoteInvoker`], the background work (the async queue,
//! cron, topic deliveries, `nats` triggers, pruning) runs only on the node that holds the
//! cluster's lease, and the caches forget what other nodes changed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ignis_invoker::{Invocation, InvokeError, InvokeResult};

use crate::Controller;

/// Runs invocations somewhere else than this node's invoker.
pub trait RemoteInvoker: Send + Sync {
    /// Runs one invocation.
    fn invoke(
        &self,
        inv: Invocation,
    ) -> Pin<Box<dyn Future<Output = Result<InvokeResult, InvokeError>> + Send + 'static>>;
}

/// Whether this node holds the cluster's lease now.
pub type Leadership = Arc<dyn Fn() -> bool + Send + Sync>;

/// What `GET /v1/system/cluster` answers on a node of a cluster.
pub type ClusterStatus = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// How often leadership is looked at, to start the background work soon after taking it.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(250);

/// What another node changed, for this node's caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalChange {
    /// A namespace was created, deleted, or got new quotas.
    Namespace(String),
    /// A function got a version or was deleted.
    Function {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// Triggers or rules of a namespace changed.
    Triggers(String),
    /// Work was queued or published.
    Work,
}

impl Controller {
    /// Sends every invocation to `remote` instead of this node's invoker.
    pub fn set_remote_invoker(&self, remote: Arc<dyn RemoteInvoker>) {
        let _ = self.inner.remote.set(remote);
    }

    /// Runs the background work only while `leads` says so; wakes it when this node takes the
    /// lead.
    pub fn set_leadership(&self, leads: Leadership) {
        if self.inner.leadership.set(leads).is_err() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut was = false;
            loop {
                if this.closing() {
                    return;
                }
                let now = this.leads();
                if now && !was {
                    tracing::info!("this node runs the cluster's background work");
                    this.inner.queue.wake();
                    this.inner.topics.wake();
                    this.inner.nats.changed();
                } else if was && !now {
                    tracing::warn!("this node no longer runs the cluster's background work");
                    this.inner.nats.changed();
                }
                was = now;
                tokio::time::sleep(LEADERSHIP_CHECK).await;
            }
        });
    }

    /// Says what [`Controller::cluster_status`] answers.
    pub fn set_cluster_status(&self, status: ClusterStatus) {
        let _ = self.inner.cluster_status.set(status);
    }

    /// This node's view of its cluster: `None` for a single server.
    pub fn cluster_status(&self) -> Option<serde_json::Value> {
        self.inner.cluster_status.get().map(|f| f())
    }

    /// Whether this node runs the background work (always, outside a cluster).
    pub(crate) fn leads(&self) -> bool {
        self.inner.leadership.get().is_none_or(|leads| leads())
    }

    /// Runs an invocation on this node's invoker, or the cluster's.
    pub(crate) async fn invoke_on_invoker(
        &self,
        inv: Invocation,
    ) -> Result<InvokeResult, InvokeError> {
        match self.inner.remote.get() {
            Some(remote) => remote.invoke(inv).await,
            None => self.inner.invoker.invoke(inv).await,
        }
    }

    /// Forgets what another node changed. Reads the store: call it from a task, not from the
    /// store's applier.
    pub async fn external_change(&self, change: ExternalChange) {
        match change {
            ExternalChange::Namespace(ns) => {
                let name = ns.clone();
                match self
                    .blocking(move |i| Ok(i.store.get_namespace(&name)?))
                    .await
                {
                    Ok(Some(record)) => {
                        self.inner.registry.remember_namespace(&ns);
                        self.inner.quotas.set_own(&ns, record.quotas);
                    }
                    Ok(None) => {
                        // Its instances here are not stopped (their names went with it): they
                        // can no longer be invoked, lose their data access and idle out.
                        self.inner.registry.forget_namespace(&ns);
                        self.inner.quotas.forget(&ns);
                        self.inner.metrics.forget_namespace(&ns);
                        self.inner.invoker.tokens().revoke_namespace(&ns);
                    }
                    Err(e) => tracing::warn!(error = %e, "namespace change not read"),
                }
                self.inner.nats.changed();
            }
            ExternalChange::Function { namespace, name } => {
                self.inner.registry.forget(&namespace, &name);
            }
            ExternalChange::Triggers(_) => {
                self.inner.nats.changed();
                self.inner.topics.wake();
            }
            ExternalChange::Work => {
                self.inner.queue.wake();
                self.inner.topics.wake();
            }
        }
    }
}
