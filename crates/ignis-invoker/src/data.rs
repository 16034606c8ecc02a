//! How an instance (python, node, exec) reaches its namespace's data (docs/baas.md): the server's
//! HTTP API, through a listener the sandbox made at `127.0.0.1:9400` inside the instance's
//! own network namespace (so `network: none` functions reach it too), with a token for its
//! namespace. Both come in the environment of INIT: `IGNIS_API_URL`, `IGNIS_TOKEN`.
//!
//! Each connection accepted on the listener is relayed byte for byte to the server's own
//! listening address; the gateway then authenticates the token like any key. The token and
//! the relay live as long as the instance.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use ignis_core::data::{InstanceToken, InstanceTokens};
use tokio::task::JoinSet;

/// The port of the data listener inside an instance's network namespace.
pub const DATA_PORT: u16 = 9400;

/// Bytes a relayed connection moves per read, each way (objects stream through it).
const RELAY_BUFFER: usize = 256 * 1024;

/// Connections one instance may have open to the API at once.
const MAX_CONNECTIONS: usize = 32;

/// The tokens of instances and where the API listens.
#[derive(Debug, Default)]
pub(crate) struct DataAccess {
    pub tokens: Arc<InstanceTokens>,
    endpoint: OnceLock<SocketAddr>,
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
