//! `GET /health`: real checks of everything a job needs, each answered now or from a short cache.
//!
//! | check | how | cached |
//! |---|---|---|
//! | `api` | this answer | – |
//! | `database` | a row read from every table | no |
//! | `storage` | writes, reads back and deletes a small object | no |
//! | `ffmpeg` | `ffmpeg -version` and `ffprobe -version` run | 10 s |
//! | `onnx_runtime` | the shared library loads ([`Runtime::load`]) (with workers) | once loaded |
//! | `model_<tier>` | every file of the tier present and matching its pinned sha256 (with workers) | per file size and mtime |
//!
//! An opt-in tier (`video`: its GPL-3.0 model is installed only on request) is checked when it
//! is installed, or when it serves `human` (`CLEARBG_HUMAN_MODEL`); otherwise it has no check, so
//! a default install is not `degraded` for lacking what it never promised.
//!
//! Each check is a boolean in `checks` (the contract's object, whose `api` is kept), so
//! `all(checks.values())` is the verdict; `details` says what is wrong with each failing one.
//! A process that runs no worker (`CLEARBG_WORKERS=0`, an API node) never loads a model, so it
//! leaves out `onnx_runtime` and the models: an API node without them is not unhealthy.
//! The service knows no pixels: the model check asks the engine ([`model::check_tier`]).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use clearbg_engine::{model, Home, Runtime, Tier};
use std::collections::BTreeMap;

use crate::App;

/// How long an ffmpeg answer is reused: `/health` may be polled every second.
const FFMPEG_TTL: Duration = Duration::from_secs(10);
/// Longest a single check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of every check.
pub struct Report {
    /// True when every check passed.
    pub healthy: bool,
    /// Check name → passed.
    pub checks: BTreeMap<String, bool>,
    /// Check name → what is wrong, for the failing ones.
    pub details: BTreeMap<String, String>,
}

impl Report {
    fn record(&mut self, name: &str, result: Result<(), String>) {
        self.checks.insert(name.to_string(), result.is_ok());
        if let Err(why) = result {
            self.healthy = false;
            self.details.insert(name.to_string(), why);
        }
    }
}

/// Runs every check (concurrently where they are independent).
pub async fn report(app: &App) -> Report {
    let mut report = Report { healthy: true, checks: BTreeMap::new(), details: BTreeMap::new() };
    report.record("api", Ok(()));
    let engine = app.config.workers > 0;
    let (database, storage, ffmpeg, runtime, models) = tokio::join!(
        database(app),
        storage(app),
        ffmpeg(),
        async {
            if engine {
                Some(onnx_runtime().await)
            } else {
                None
            }
        },
        async {
            if engine {
                models(app.config.human_model).await
            } else {
                Vec::new()
            }
        },
    );
    report.record("database", database);
    report.record("storage", storage);
    report.record("ffmpeg", ffmpeg);
    if let Some(runtime) = runtime {
        report.record("onnx_runtime", runtime);
    }
    for (tier, result) in models {
        report.record(&format!("model_{}", tier.name()), result);
    }
    report
}

async fn timed<T>(what: &str, work: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(CHECK_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(format!("{what} did not answer within {}s", CHECK_TIMEOUT.as_secs())))
}

async fn database(app: &App) -> Result<(), String> {
    timed("the database", async {
        app.store.check_tables().await.map_err(|e| format!("the database cannot be read: {e}"))
    })
    .await
}

/// Lists are not enough: a read-only or full disk still lists. A real write, read and delete is.
async fn storage(app: &App) -> Result<(), String> {
    timed("object storage", async {
        let key = format!("health/probe-{}", uuid::Uuid::new_v4().simple());
        let fail =
            |step: &str, e: anyhow::Error| format!("object storage at {}: {step} failed: {e:#}", app.storage.url());
        let mut writer = app.storage.writer(&key).await.map_err(|e| fail("opening a write", e))?;
        if let Err(e) = writer.write(b"clearbg health probe").await {
            writer.abort().await;
            return Err(fail("writing", e));
        }
        let (size, _) = writer.finish().await.map_err(|e| fail("writing", e))?;
        let deleted = app.storage.delete(&key).await.map_err(|e| fail("deleting", e));
        if size != 20 {
            return Err(format!("object storage at {}: wrote 20 bytes, stored {size}", app.storage.url()));
        }
        deleted
    })
    .await
}

static FFMPEG: Mutex<Option<(Instant, Result<(), String>)>> = Mutex::new(None);

async fn ffmpeg() -> Result<(), String> {
    if let Some((at, result)) = FFMPEG.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        if at.elapsed() < FFMPEG_TTL {
            return result.clone();
        }
    }
    let mut result = Ok(());
    for tool in ["ffmpeg", "ffprobe"] {
        let run = async {
            let out = tokio::process::Command::new(tool)
                .arg("-version")
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| format!("{tool} does not run ({e}); install it (make setup)"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("`{tool} -version` exited with {}", out.status))
            }
        };
        if let Err(e) = timed(tool, run).await {
            result = Err(e);
            break;
        }
    }
    *FFMPEG.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), result.clone()));
    result
}

async fn onnx_runtime() -> Result<(), String> {
    tokio::task::spawn_blocking(|| Runtime::load(&Home::from_env(), 1).map(|_| ()).map_err(|e| e.to_string()))
        .await
        .unwrap_or_else(|e| Err(format!("checking ONNX Runtime: {e}")))
}

/// What a file looked like when its tier was checked: a new size or mtime means a new check.
type Identity = Vec<(PathBuf, Option<(u64, SystemTime)>)>;

/// A tier's last answer, and the files it was given for.
type Checked = (Tier, Identity, Result<(), String>);

static MODELS: Mutex<Vec<Checked>> = Mutex::new(Vec::new());

fn identity(home: &Home, tier: Tier) -> Identity {
    tier.files()
        .iter()
        .map(|f| {
            let path = home.models_dir().join(f);
            let meta = std::fs::metadata(&path).ok().and_then(|m| Some((m.len(), m.modified().ok()?)));
            (path, meta)
        })
        .collect()
}

/// Hashes a tier's files only when they changed since the last check: the first `/health`
/// hashes about 200 MB (well under a second), later ones only stat the files. `serving_human`
/// is the tier that runs `human` jobs, which is checked even if it is an opt-in one.
async fn models(serving_human: Tier) -> Vec<(Tier, Result<(), String>)> {
    tokio::task::spawn_blocking(move || {
        let home = Home::from_env();
        let mut cache = MODELS.lock().unwrap_or_else(|p| p.into_inner());
        Tier::ALL
            .into_iter()
            .filter(|&tier| {
                tier.install_command().is_none() || tier == serving_human || model::is_installed(&home, tier)
            })
            .map(|tier| {
                let now = identity(&home, tier);
                if let Some((_, _, result)) = cache.iter().find(|(t, id, _)| *t == tier && *id == now) {
                    return (tier, result.clone());
                }
                let result = model::check_tier(&home, tier).map_err(|e| format!("model {}: {e}", tier.name()));
                cache.retain(|(t, _, _)| *t != tier);
                cache.push((tier, now, result.clone()));
                (tier, result)
            })
            .collect()
    })
    .await
    .unwrap_or_else(|e| Tier::ALL.into_iter().map(|t| (t, Err(format!("checking the models: {e}")))).collect())
}
