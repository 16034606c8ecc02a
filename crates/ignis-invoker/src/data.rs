//! How an instance reaches its namespace's data (docs/baas.md): the server's HTTP API, with a
//! token for its namespace, both in its environment (`IGNIS_API_URL`, `IGNIS_TOKEN`).
//!
//! - **python, node** (at INIT), **exec** (each process) and **lambda** (the bootstrap):
//!   through a listener the sandbox made at `127.0.0.1:9400` inside the instance's own network
//!   namespace (so `network: none` functions reach it too; a `lambda` instance's is a second
//!   listener beside its Runtime API's). Each connection accepted on it is relayed byte for
//!   byte to the server's own listening address.
//! - **wasm components**: `wasi:http/outgoing-handler` requests to that same URL are handed to
//!   the server's router in this process ([`ignis_wasm::DataApi`]); no socket at all.
//!
//! Either way the gateway then authenticates the token like any key. The token (and the
//! relay) live as long as the instance.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use ignis_core::data::{InstanceToken, InstanceTokens};
use ignis_wasm::{ApiService, DataApi};
use tokio::task::JoinSet;

/// The port of the data listener inside an instance's network namespace.
pub const DATA_PORT: u16 = 9400;

/// Bytes a relayed connection moves per read, each way (objects stream through it).
const RELAY_BUFFER: usize = 256 * 1024;

/// Connections one instance may have open to the API at once.
const MAX_CONNECTIONS: usize = 32;

/// The tokens of instances and where the API listens.
#[derive(Default)]
pub(crate) struct DataAccess {
    pub tokens: Arc<InstanceTokens>,
    endpoint: OnceLock<SocketAddr>,
    /// The API in this process, for wasm components.
    service: OnceLock<Arc<dyn ApiService>>,
}

impl std::fmt::Debug for DataAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataAccess")
            .field("endpoint", &self.endpoint.get())
            .field("in_process", &self.service.get().is_some())
            .finish_non_exhaustive()
    }
}

/// What one wasm instance slot holds for its data access: its token (revoked when dropped)
/// and what its component's outgoing requests may reach.
#[derive(Debug)]
pub(crate) struct WasmData {
    _token: InstanceToken,
    pub api: DataApi,
}

/// What one instance holds for its data access: its token (revoked when dropped) and the
/// relay task of its listener (stopped when dropped).
#[derive(Debug)]
pub(crate) struct InstanceData {
    _token: InstanceToken,
    endpoint: SocketAddr,
    relay: Option<tokio::task::AbortHandle>,
}

impl Drop for InstanceData {
    fn drop(&mut self) {
        if let Some(r) = &self.relay {
            r.abort();
        }
    }
}

impl InstanceData {
    /// Relays the connections of the instance's own listener (bound at [`DATA_PORT`] in its
    /// network namespace) to the API.
    pub fn serve(&mut self, listener: std::net::TcpListener) {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => self.relay = Some(tokio::spawn(relay(l, self.endpoint)).abort_handle()),
            Err(e) => tracing::error!(error = %e, "the data listener of an instance"),
        }
    }
}

impl DataAccess {
    /// Sets where the API listens (once, after the server bound its socket).
    pub fn set_endpoint(&self, addr: SocketAddr) {
        let addr = match addr.ip() {
            ip if ip.is_unspecified() && addr.is_ipv4() => {
                SocketAddr::from(([127, 0, 0, 1], addr.port()))
            }
            ip if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
            }
            _ => addr,
        };
        let _ = self.endpoint.set(addr);
    }

    /// Sets the API served in this process (once), which wasm components reach.
    pub fn set_service(&self, service: Arc<dyn ApiService>) {
        let _ = self.service.set(service);
    }

    /// Gives a wasm component of `namespace` its token and the API's URL in `env`, and what
    /// its outgoing requests may reach. Nothing when the server gave no in-process API.
    pub fn attach_wasm(
        &self,
        namespace: &str,
        env: &mut Vec<(String, String)>,
    ) -> Option<WasmData> {
        let service = self.service.get()?.clone();
        let token = match self.tokens.issue(namespace) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "no instance token");
                return None;
            }
        };
        let authority = format!("127.0.0.1:{DATA_PORT}");
        let api = DataApi::new(service, &authority, &token.token)?;
        env.retain(|(k, _)| k != "IGNIS_API_URL" && k != "IGNIS_TOKEN");
        env.push(("IGNIS_API_URL".into(), format!("http://{authority}")));
        env.push(("IGNIS_TOKEN".into(), token.token.clone()));
        Some(WasmData { _token: token, api })
    }

    /// Gives an instance of `namespace` its token and the API's URL in `env`: its own
    /// listener's with `own_network` (then [`InstanceData::serve`] it), else the server's
    /// address. Nothing when the server has no endpoint (an invoker without an API).
    pub fn attach(
        &self,
        namespace: &str,
        own_network: bool,
        env: &mut BTreeMap<String, String>,
    ) -> Option<InstanceData> {
        let endpoint = *self.endpoint.get()?;
        let token = match self.tokens.issue(namespace) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "no instance token");
                return None;
            }
        };
        let url = if own_network {
            format!("http://127.0.0.1:{DATA_PORT}")
        } else {
            format!("http://{endpoint}")
        };
        env.insert("IGNIS_API_URL".into(), url);
        env.insert("IGNIS_TOKEN".into(), token.token.clone());
        Some(InstanceData {
            _token: token,
            endpoint,
            relay: None,
        })
    }
}

/// Relays every connection accepted on `listener` to `endpoint`, at most [`MAX_CONNECTIONS`]
/// at once; the connections end with the task.
async fn relay(listener: tokio::net::TcpListener, endpoint: SocketAddr) {
    let mut open = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = open.join_next(), if !open.is_empty() => continue,
        };
        let Ok((mut from, _)) = accepted else {
            // Out of descriptors or similar: try again shortly rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        while open.len() >= MAX_CONNECTIONS {
            open.join_next().await;
        }
        open.spawn(async move {
            let Ok(mut to) = tokio::net::TcpStream::connect(endpoint).await else {
                return;
            };
            let _ = to.set_nodelay(true);
            let _ = from.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional_with_sizes(
                &mut from,
                &mut to,
                RELAY_BUFFER,
                RELAY_BUFFER,
            )
            .await;
        });
    }
}
