//! Where uploads and outputs live: an [`object_store`] behind one small type, and the signed URLs
//! that hand them out.
//!
//! Keys are `uploads/<id>.<ext>` and `outputs/<job id>.<ext>`. Writes go through multipart
//! uploads, so a file is streamed in chunks and appears whole or not at all.
//!
//! Two kinds of store: a local directory (`file:///dir`, the default), whose files this service
//! serves itself under HMAC-signed `/files/…` links, and S3-compatible object storage
//! (`s3://bucket/prefix?endpoint=…&region=…`), whose links the storage presigns, so downloads go
//! straight to it and never through an API process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::FutureExt;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer as Presigner;
use object_store::{ObjectStore, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::ids::{JobId, UploadId};

/// S3 refuses presigned links that live longer than this (SigV4's limit).
const MAX_PRESIGNED: Duration = Duration::from_secs(7 * 24 * 3600);

/// The object store in use.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// The directory behind a `file://` store: files there are read in place, not copied.
    local_root: Option<PathBuf>,
    /// The S3 client, which presigns links to its objects.
    presigner: Option<Arc<dyn Presigner>>,
    /// Keys live under this prefix of the bucket (`s3://bucket/prefix`); empty for local stores.
    prefix: String,
    /// Signs `/files/…` links for a local store.
    signer: Signer,
    url: String,
}

impl Storage {
    /// Opens `file:///abs/dir` (created if missing) or `s3://bucket[/prefix]?endpoint=…&region=…`.
    /// S3 credentials come from the usual `AWS_*` variables (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, …); any other query parameter is an `object_store` S3 option
    /// (for example `virtual_hosted_style_request=true`). `signer` signs a local store's links.
    pub fn open(url: &str, signer: Signer) -> anyhow::Result<Storage> {
        if let Some(path) = url.strip_prefix("file://") {
            let root = PathBuf::from(path);
            std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
            let root = root.canonicalize()?;
            let store = LocalFileSystem::new_with_prefix(&root)?;
            return Ok(Storage {
                store: Arc::new(store),
                local_root: Some(root),
                presigner: None,
                prefix: String::new(),
                signer,
                url: url.to_string(),
            });
        }
        if url.starts_with("s3://") {
            let parsed = url::Url::parse(url).with_context(|| format!("parsing the storage URL {url:?}"))?;
            let bucket =
                parsed.host_str().filter(|b| !b.is_empty()).context("s3:// URLs name a bucket: s3://BUCKET")?;
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (name, value) in parsed.query_pairs() {
                builder = match name.as_ref() {
                    "endpoint" => builder.with_allow_http(value.starts_with("http://")).with_endpoint(value.as_ref()),
                    "region" => builder.with_region(value.as_ref()),
                    other => {
                        let key: AmazonS3ConfigKey =
                            other.parse().with_context(|| format!("unknown S3 option {other:?} in the storage URL"))?;
                        builder.with_config(key, value.as_ref())
                    }
                };
            }
            let s3 = Arc::new(builder.build().context("configuring S3 storage")?);
            let prefix = parsed.path().trim_matches('/').to_string();
            // The URL without its query: that may hold options one would rather not log.
            let shown = format!("s3://{bucket}/{prefix}");
            return Ok(Storage {
                store: s3.clone(),
                local_root: None,
                presigner: Some(s3),
                prefix,
                signer,
                url: shown,
            });
        }
        anyhow::bail!("unsupported storage URL {url:?}: use file:///absolute/dir or s3://bucket?endpoint=…&region=…")
    }

    /// The URL it was opened with (without S3 options).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    /// A link that downloads `key` for about `ttl`, and when it expires (Unix seconds): a
    /// presigned S3 URL (at most 7 days, S3's limit), or a signed `/files/…` URL of this service.
    pub fn download_url(&self, key: &str, ttl: Duration) -> (String, i64) {
        let now = chrono::Utc::now().timestamp();
        let Some(presigner) = &self.presigner else {
            let expires = now + ttl.as_secs() as i64;
            return (self.signer.url(key, expires), expires);
        };
        let ttl = ttl.min(MAX_PRESIGNED);
        let path = self.path(key);
        // With static credentials signing is pure computation and is ready at once; credentials
        // that must be fetched (instance metadata) are waited for on this thread.
        let mut signing = presigner.signed_url(axum::http::Method::GET, &path, ttl);
        let signed = match (&mut signing).now_or_never() {
            Some(result) => result,
            None => tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(signing)),
        };
        match signed {
            Ok(url) => (url.to_string(), now + ttl.as_secs() as i64),
            Err(e) => {
                // A link that fails cleanly beats a failed request: the next GET signs again.
                tracing::error!(error = %e, key, "presigning a storage URL");
                (String::new(), now)
            }
        }
    }

    /// True when `sig` signs `key` until `expires` (the `/files/…` links of a local store).
    pub fn verify_link(&self, key: &str, expires: i64, sig: &str) -> bool {
        self.signer.verify(key, expires, sig)
    }

    /// Starts writing `key`; nothing is visible until [`ObjectWriter::finish`].
    pub async fn writer(&self, key: &str) -> anyhow::Result<ObjectWriter> {
        let upload = self.store.put_multipart(&self.path(key)).await?;
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
        let mut stream = self.store.get(&self.path(key)).await?.into_stream();
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
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// True when the store answers (a listing of one key).
    pub async fn check(&self) -> bool {
        let mut list = self.store.list(Some(&self.path("outputs")));
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

/// An object of this service's storage named by a URL: an upload or a job's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredRef {
    /// `…/uploads/vid_<hex>.<ext>`: the upload's id.
    Upload(UploadId),
    /// `…/outputs/job_<hex>.<ext>`: the job's id.
    Output(JobId),
}

impl StoredRef {
    /// The object a URL names if its path has the shape of one of our keys — a `/files/…` link
    /// of a local store, or `…/<bucket>/[<prefix>/]…` presigned by S3 — *whatever its host*:
    /// links travel through proxies, CDNs and other names, and a host check would let a
    /// differently spelt link past the owner check its caller must make. The signature is not
    /// checked either; ownership is.
    pub fn from_url(url: &str) -> Option<StoredRef> {
        let parsed = url::Url::parse(url).ok()?;
        let mut segments = parsed.path_segments()?.rev();
        let name = segments.next()?;
        let folder = segments.next()?;
        let id = name.split('.').next()?;
        let (prefix, make): (&str, fn(String) -> StoredRef) = match folder {
            "uploads" => ("vid_", |id| StoredRef::Upload(id.into())),
            "outputs" => ("job_", |id| StoredRef::Output(id.into())),
            _ => return None,
        };
        let hex = id.strip_prefix(prefix)?;
        (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| make(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_keys_are_recognised_in_any_url_form() {
        let id = "vid_0123456789abcdef0123456789abcdef";
        for url in [
            format!("http://127.0.0.1:8080/files/uploads/{id}.mp4?expires=1&sig=2"),
            format!("https://elsewhere.example/files/uploads/{id}.mp4"),
            format!("http://s3.local:3900/bucket/prefix/uploads/{id}.webm?X-Amz-Signature=x"),
        ] {
            assert_eq!(StoredRef::from_url(&url), Some(StoredRef::Upload(id.into())), "{url}");
        }
        let job = "job_0123456789abcdef0123456789abcdef";
        assert_eq!(
            StoredRef::from_url(&format!("http://h/files/outputs/{job}.webm?expires=1&sig=2")),
            Some(StoredRef::Output(job.into()))
        );
        for other in [
            "https://example.com/videos/a.mp4".to_string(),
            format!("http://h/files/outputs/{id}.mp4"),
            "http://h/files/uploads/vid_123.mp4".into(),
            "not a url".into(),
        ] {
            assert_eq!(StoredRef::from_url(&other), None, "{other}");
        }
    }

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
