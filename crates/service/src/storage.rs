//! Where uploads and outputs live: an [`object_store`] behind one small type, and the signed URLs
//! that hand them out.
//!
//! Keys are `uploads/<id>.<ext>` and `outputs/<job id>.<ext>`. Writes go through multipart
//! uploads, so a file is streamed in chunks and appears whole or not at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// The object store in use.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// The directory behind a `file://` store: files there are read in place, not copied.
    local_root: Option<PathBuf>,
    url: String,
}

impl Storage {
    /// Opens `file:///abs/dir` (created if missing).
    pub fn open(url: &str) -> anyhow::Result<Storage> {
        let Some(path) = url.strip_prefix("file://") else {
            anyhow::bail!("unsupported storage URL {url:?}: this build supports file:///absolute/dir");
        };
        let root = PathBuf::from(path);
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let root = root.canonicalize()?;
        let store = LocalFileSystem::new_with_prefix(&root)?;
        Ok(Storage { store: Arc::new(store), local_root: Some(root), url: url.to_string() })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Starts writing `key`; nothing is visible until [`ObjectWriter::finish`].
    pub async fn writer(&self, key: &str) -> anyhow::Result<ObjectWriter> {
        let upload = self.store.put_multipart(&ObjectPath::from(key)).await?;
        Ok(ObjectWriter { inner: WriteMultipart::new(upload), hasher: Sha256::new(), size: 0 })
    }

    /// Stores the file at `path` as `key`; returns its size and sha256.
    pub async fn put_file(&self, key: &str, path: &Path) -> anyhow::Result<(u64, String)> {
        use tokio::io::AsyncReadExt;
        let mut file = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
        let mut writer = self.writer(key).await?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => writer.write(&buf[..n]).await?,
                Err(e) => {
                    writer.abort().await;
                    return Err(e.into());
                }
            }
        }
        writer.finish().await
    }

    /// A local path holding `key`'s bytes: the file itself for local storage, else a copy in `scratch`.
    pub async fn local_copy(&self, key: &str, scratch: &Path) -> anyhow::Result<PathBuf> {
        if let Some(root) = &self.local_root {
            let path = root.join(key);
            anyhow::ensure!(path.is_file(), "{key} is no longer in storage");
            return Ok(path);
        }
        let target = scratch.join(key.replace('/', "_"));
        let mut out = tokio::fs::File::create(&target).await?;
        let mut stream = self.store.get(&ObjectPath::from(key)).await?.into_stream();
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?).await?;
        }
        out.flush().await?;
        Ok(target)
    }

    /// The file behind `key` when storage is local (for serving it with Range support).
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.local_root.as_ref().map(|root| root.join(key))
    }

    /// Deletes `key`; a missing key is not an error.
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// True when the store answers (a listing of one key).
    pub async fn check(&self) -> bool {
        let mut list = self.store.list(Some(&ObjectPath::from("outputs")));
        !matches!(list.next().await, Some(Err(_)))
    }
}

/// A file being written to storage, hashed as it goes.
pub struct ObjectWriter {
    inner: WriteMultipart,
    hasher: Sha256,
    size: u64,
}

impl ObjectWriter {
    /// Appends bytes (waits when too many parts are in flight, so memory stays bounded).
    pub async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.inner.wait_for_capacity(4).await?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.inner.write(bytes);
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes the object visible; returns its size and hex sha256.
    pub async fn finish(self) -> anyhow::Result<(u64, String)> {
        self.inner.finish().await?;
        Ok((self.size, hex::encode(self.hasher.finalize())))
    }

    /// Throws away what was written.
    pub async fn abort(self) {
        if let Err(e) = self.inner.abort().await {
            tracing::warn!(error = %e, "aborting a partial object");
        }
    }
}

/// Signs and checks `/files/…` URLs: HMAC-SHA256 over the key and the expiry.
#[derive(Clone)]
pub struct Signer {
    secret: Vec<u8>,
    public_url: String,
}

impl Signer {
    /// A signer for URLs under `public_url`.
    pub fn new(secret: &[u8], public_url: &str) -> Signer {
        Signer { secret: secret.to_vec(), public_url: public_url.trim_end_matches('/').to_string() }
    }

    fn mac(&self, key: &str, expires: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// A URL for `key` valid until `expires` (Unix seconds).
    pub fn url(&self, key: &str, expires: i64) -> String {
        let sig = hex::encode(self.mac(key, expires).finalize().into_bytes());
        format!("{}/files/{key}?expires={expires}&sig={sig}", self.public_url)
    }

    /// True when `sig` is the signature of `key` and `expires` (constant-time comparison).
    pub fn verify(&self, key: &str, expires: i64, sig: &str) -> bool {
        match hex::decode(sig) {
            Ok(bytes) => self.mac(key, expires).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_key_and_expiry() {
        let s = Signer::new(b"secret", "http://h:1/");
        let url = s.url("outputs/job_1.webm", 2_000_000_000);
        assert!(url.starts_with("http://h:1/files/outputs/job_1.webm?expires=2000000000&sig="));
        let sig = url.rsplit("sig=").next().unwrap();
        assert!(s.verify("outputs/job_1.webm", 2_000_000_000, sig));
        assert!(!s.verify("outputs/job_2.webm", 2_000_000_000, sig));
        assert!(!s.verify("outputs/job_1.webm", 2_000_000_001, sig));
        assert!(!Signer::new(b"other", "http://h:1").verify("outputs/job_1.webm", 2_000_000_000, sig));
        assert!(!s.verify("outputs/job_1.webm", 2_000_000_000, "zz"));
    }
}
