//! Code blobs shared through the JetStream object store: a deploy on any node uploads the
//! code; an invoker that has never seen it downloads it once and keeps it on its disk.

use std::sync::Arc;

use async_nats::jetstream::object_store;
use ignis_store::BlobMirror;
use tokio::io::AsyncReadExt;

use crate::{Cluster, ClusterError};

/// The object store bucket of code blobs.
const BUCKET: &str = "ignis_code";

/// [`BlobMirror`] on the JetStream object store `ignis_code`.
pub struct CodeMirror {
    cluster: Arc<Cluster>,
    store: object_store::ObjectStore,
}

impl CodeMirror {
    /// Opens the bucket, creating it if the cluster has none.
    pub fn open(cluster: Arc<Cluster>) -> Result<Self, ClusterError> {
        let js = cluster.jetstream().clone();
        let replicas = cluster.replicas();
        let store = cluster
            .wait(async move {
                crate::until_formed(|| async {
                    match js.get_object_store(BUCKET).await {
                        Ok(s) => Ok(s),
                        Err(_) => {
                            js.create_object_store(object_store::Config {
                                bucket: BUCKET.into(),
                                description: Some("Ignis code blobs, by SHA-256".into()),
                                num_replicas: replicas,
                                storage: async_nats::jetstream::stream::StorageType::File,
                                ..Default::default()
                            })
                            .await
                        }
                    }
                })
                .await
            })
            .map_err(|e| ClusterError::Nats(format!("object store {BUCKET}: {e}")))?;
        Ok(CodeMirror { cluster, store })
    }
}

impl BlobMirror for CodeMirror {
    fn upload(&self, sha256: &str, bytes: &[u8]) -> std::io::Result<()> {
        let (store, name, bytes) = (self.store.clone(), sha256.to_string(), bytes.to_vec());
        self.cluster
            .wait(async move {
                if store.info(&name).await.is_ok() {
                    return Ok(());
                }
                store
                    .put(name.as_str(), &mut bytes.as_slice())
                    .await
                    .map(drop)
            })
            .map_err(|e| std::io::Error::other(format!("uploading code {sha256}: {e}")))
    }

    fn download(&self, sha256: &str) -> std::io::Result<Option<Vec<u8>>> {
        let (store, name) = (self.store.clone(), sha256.to_string());
        self.cluster
            .wait(async move {
                let mut object = match store.get(&name).await {
                    Ok(o) => o,
                    Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(std::io::Error::other(e.to_string())),
                };
                let mut bytes = Vec::new();
                object.read_to_end(&mut bytes).await?;
                Ok(Some(bytes))
            })
            .map_err(|e| std::io::Error::other(format!("downloading code {sha256}: {e}")))
    }
}
