//! How a python or node instance reaches its namespace's data (docs/baas.md): the server's
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
    relay: Option<tokio::task::AbortHandle>,
}

impl Drop for InstanceData {
    fn drop(&mut self) {
        if let Some(r) = &self.relay {
            r.abort();
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

    /// Gives an instance of `namespace` its token and, through `listener` (the instance's
    /// own, or `None` for one on the host's network), the API: adds both to `env`. Nothing
    /// when the server has no endpoint (an invoker without an API).
    pub fn attach(
        &self,
        namespace: &str,
        listener: Option<std::net::TcpListener>,
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
        let relay = match listener {
            Some(l) => match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    env.insert(
                        "IGNIS_API_URL".into(),
                        format!("http://127.0.0.1:{DATA_PORT}"),
                    );
                    Some(tokio::spawn(relay(l, endpoint)).abort_handle())
                }
                Err(e) => {
                    tracing::error!(error = %e, "the data listener of an instance");
                    None
                }
            },
            None => {
                env.insert("IGNIS_API_URL".into(), format!("http://{endpoint}"));
                None
            }
        };
        env.insert("IGNIS_TOKEN".into(), token.token.clone());
        Some(InstanceData {
            _token: token,
            relay,
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
