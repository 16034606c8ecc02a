//! Code blobs shared through the JetStream object store: a deploy on any node uploads the
//! code; an invoker that has never seen it downloads it once and keeps it on its disk.

use std::sync::Arc;

use async_nats::jetstream::object_store;
use ignis_store::BlobMirror;
use tokio::io::AsyncReadExt;

use crate::{Cluster, ClusterError};

/// The object store bucket of code blobs.
const BUCKET: &str = "ignis_code";

/// A JetStream object store bucket, created if the cluster has none.
pub(crate) fn object_bucket(
    cluster: &Cluster,
    bucket: &'static str,
    description: &'static str,
) -> Result<object_store::ObjectStore, ClusterError> {
    let js = cluster.jetstream().clone();
    let replicas = cluster.replicas();
    cluster
        .wait(async move {
            crate::until_formed(|| async {
                match js.get_object_store(bucket).await {
                    Ok(s) => Ok(s),
                    Err(_) => {
                        js.create_object_store(object_store::Config {
                            bucket: bucket.into(),
                            description: Some(description.into()),
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
        .map_err(|e| ClusterError::Nats(format!("object store {bucket}: {e}")))
}

/// [`BlobMirror`] on the JetStream object store `ignis_code`.
pub struct CodeMirror {
    cluster: Arc<Cluster>,
    store: object_store::ObjectStore,
}

impl CodeMirror {
    /// Opens the bucket, creating it if the cluster has none.
    pub fn open(cluster: Arc<Cluster>) -> Result<Self, ClusterError> {
        let store = object_bucket(&cluster, BUCKET, "Ignis code blobs, by SHA-256")?;
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

/// The object store bucket of object bodies (the data services' objects), named
/// `<namespace>/<file>`.
const BODIES: &str = "ignis_objects";

/// [`BodyMirror`] on the JetStream object store `ignis_objects`: object bodies written on any
/// node can be read through every node.
pub struct BodyStore {
    cluster: Arc<Cluster>,
    store: object_store::ObjectStore,
}

impl BodyStore {
    /// Opens the bucket, creating it if the cluster has none.
    pub fn open(cluster: Arc<Cluster>) -> Result<Self, ClusterError> {
        let store = object_bucket(&cluster, BODIES, "Ignis object bodies")?;
        Ok(BodyStore { cluster, store })
    }
}

impl ignis_store::BodyMirror for BodyStore {
    fn upload(&self, namespace: &str, file: &str, path: &std::path::Path) -> std::io::Result<()> {
        let (store, name, path) = (
            self.store.clone(),
            format!("{namespace}/{file}"),
            path.to_path_buf(),
        );
        self.cluster
            .wait(async move {
                let mut body = tokio::fs::File::open(&path).await?;
                store
                    .put(name.as_str(), &mut body)
                    .await
                    .map(drop)
                    .map_err(std::io::Error::other)
            })
            .map_err(|e| std::io::Error::other(format!("sharing an object body: {e}")))
    }

    fn download(
        &self,
        namespace: &str,
        file: &str,
        dest: &std::path::Path,
    ) -> std::io::Result<bool> {
        let (store, name, dest) = (
            self.store.clone(),
            format!("{namespace}/{file}"),
            dest.to_path_buf(),
        );
        self.cluster.wait(async move {
            let mut object = match store.get(&name).await {
                Ok(o) => o,
                Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            };
            let mut out = tokio::fs::File::create(&dest).await?;
            tokio::io::copy(&mut object, &mut out).await?;
            out.sync_all().await?;
            Ok(true)
        })
    }

    fn remove(&self, namespace: &str, file: &str) {
        let (store, name) = (self.store.clone(), format!("{namespace}/{file}"));
        let _ = self.cluster.wait(async move { store.delete(&name).await });
    }

    fn remove_namespace(&self, namespace: &str) {
        let (store, prefix) = (self.store.clone(), format!("{namespace}/"));
        self.cluster.wait(async move {
            use futures_util::StreamExt;
            let mut names = Vec::new();
            if let Ok(mut list) = store.list().await {
                while let Some(Ok(info)) = list.next().await {
                    if info.name.starts_with(&prefix) {
                        names.push(info.name);
                    }
                }
            }
            for n in names {
                let _ = store.delete(&n).await;
            }
        });
    }
}
