//! Workers: each claims the oldest queued job under a lease, renews the lease while the engine
//! runs, and stores the output.
//!
//! A worker that dies (kill -9, a lost machine) simply stops renewing; once its lease expires
//! any worker puts the job back in the queue, up to `max_attempts` times. A worker asked to stop
//! (SIGTERM) cancels its engine run and hands the job back at once, without using an attempt.
//!
//! A job fails at once only for its own fault (its input, its options, its credits, a cancel).
//! Faults of this service (ffmpeg or a model missing here, storage or the database failing) hand
//! it back to wait out a backoff, so that another attempt, maybe on another host, can succeed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clearbg_engine::{Background, EngineError, Home, Progress, RemoveRequest, Runtime, Segmenter, Tier, VideoInfo};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::error::redact_paths;
use crate::ids::JobId;
use crate::jobs::{Billing, JobSpec};
use crate::store::{Advance, HandBack, JobRow, Output, StoreError};
use crate::App;

/// How often a running job reports progress, renews its lease and checks for a cancel.
const TICK: Duration = Duration::from_millis(500);
/// How often an idle worker looks for work when nobody wakes it.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// The longest wait between attempts of a job that failed for a reason of this service.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(300);

/// Starts `count` workers; they stop when `stop` turns true.
pub fn spawn_pool(app: App, count: usize, stop: watch::Receiver<bool>) -> anyhow::Result<Vec<JoinHandle<()>>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let home = Home::from_env();
    // Fail at start-up, not at the first job, when ONNX Runtime is missing.
    let runtime = Runtime::load_on(&home, app.config.threads, app.config.device)
        .with_context(|| format!("loading ONNX Runtime for {}", app.config.device))?;
    if app.config.human_model != Tier::Human {
        // Every `human` job would fail: refuse to start instead, saying how to install it.
        let tier = app.config.human_model;
        clearbg_engine::model::check_tier(&home, tier).map_err(|e| {
            let install = tier.install_command().map(|c| format!("; run `{c}`")).unwrap_or_default();
            anyhow::anyhow!("CLEARBG_HUMAN_MODEL={tier}, but that model is not usable here: {e}{install}")
        })?;
    }
    if app.config.device != clearbg_engine::Device::Cpu {
        // A GPU that cannot run models would fail every job it took: refuse to start instead.
        Segmenter::new(&runtime, &home, Tier::Light).context("trying the GPU with the light model")?;
    }
    let process = uuid::Uuid::new_v4().simple().to_string();
    Ok((0..count)
        .map(|n| {
            let worker = Worker {
                app: app.clone(),
                id: format!("w{n}-{}", &process[..8]),
                home: home.clone(),
                runtime: runtime.clone(),
                segmenters: Arc::new(Mutex::new(HashMap::new())),
            };
            let stop = stop.clone();
            tokio::spawn(async move { worker.run(stop).await })
        })
        .collect())
}

/// Wakes this process's idle workers whenever any process queues a job (PostgreSQL
/// `LISTEN`), so a job starts at once rather than at the next poll. Polling stays as the
/// safety net: a notification sent while the connection was down is simply missed.
pub async fn listen_for_jobs(app: App, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        match listen(&app, &mut stop).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "listening for queued jobs; polling until reconnected"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn listen(app: &App, stop: &mut watch::Receiver<bool>) -> sqlx::Result<()> {
    let mut listener = sqlx::postgres::PgListener::connect(app.store.url()).await?;
    listener.listen(crate::store::QUEUE_CHANNEL).await?;
    tracing::info!(channel = crate::store::QUEUE_CHANNEL, "listening for queued jobs");
    loop {
        tokio::select! {
            notification = listener.recv() => {
                notification?;
                app.queued.notify_waiters();
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

struct Worker {
    app: App,
    id: String,
    home: Home,
    runtime: Runtime,
    /// Loaded models, kept between jobs (loading ISNet takes seconds).
    segmenters: Arc<Mutex<HashMap<Tier, Segmenter>>>,
}

/// What the engine thread and the async side share about a running job.
#[derive(Default)]
struct Shared {
    total: AtomicU64,
    done: AtomicU64,
    cancel: AtomicBool,
    /// When the engine started on the frames (after fetching and probing).
    started: std::sync::OnceLock<std::time::Instant>,
}

impl Shared {
    /// Percent done, speed and time left, as a heartbeat reports them.
    fn advance(&self) -> Advance {
        let (total, done) = (self.total.load(Ordering::Relaxed), self.done.load(Ordering::Relaxed));
        let percent = if total == 0 { 0.0 } else { (done as f64 / total as f64 * 100.0).min(99.0) };
        let secs = self.started.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
        if done == 0 || secs <= 0.0 {
            return Advance { percent, fps: None, eta_seconds: None };
        }
        let fps = done as f64 / secs;
        let round = |v: f64| (v * 100.0).round() / 100.0;
        Advance { percent, fps: Some(round(fps)), eta_seconds: Some(round(total.saturating_sub(done) as f64 / fps)) }
    }
}

impl Progress for Shared {
    fn start(&self, _info: &VideoInfo, total_frames: u64) {
        self.total.store(total_frames.max(1), Ordering::Relaxed);
        let _ = self.started.set(std::time::Instant::now());
    }
    fn advance(&self, frames_done: u64) {
        self.done.store(frames_done, Ordering::Relaxed);
    }
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// How an attempt ended, when it did not produce an output.
enum Stop {
    /// The job's own fault, or a cancel: failed for good, with a code and message for the job.
    Failed(String, String),
    /// A fault of this service: queued again after a backoff, with a code and message for the
    /// job should this have been its last attempt.
    Retry(String, String),
    /// The worker is shutting down: give the job back.
    Shutdown,
    /// Another worker holds the job now: do nothing more.
    LeaseLost,
}

impl Worker {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!(worker = %self.id, "worker ready");
        while !*stop.borrow() {
            match self.app.store.recover_expired(self.app.config.max_attempts, self.app.links()).await {
                Ok(recovered) => recovered.iter().for_each(|id| self.remove_scratch(id)),
                Err(e) => tracing::warn!(worker = %self.id, error = %e, "recovering expired leases"),
            }
            match self.app.store.claim(&self.id, self.app.config.lease, self.app.links()).await {
                Ok(Some(job)) => {
                    let span = tracing::info_span!("job", job_id = %job.id, worker = %self.id, attempt = job.attempts);
                    self.process(job, stop.clone()).instrument(span).await;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.app.queued.notified() => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::error!(worker = %self.id, error = %e, "claiming a job");
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
        }
        tracing::info!(worker = %self.id, "worker stopped");
    }

    /// Deletes what a lost attempt left in the work directory (its scratch directory holds the
    /// downloaded input and the partial output).
    fn remove_scratch(&self, job_id: &JobId) {
        let Ok(entries) = std::fs::read_dir(self.app.config.work_dir()) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&format!("{job_id}-")) {
                match std::fs::remove_dir_all(entry.path()) {
                    Ok(()) => {
                        tracing::info!(%job_id, path = %entry.path().display(), "removed a lost attempt's scratch files")
                    }
                    Err(e) => tracing::warn!(%job_id, error = %e, "removing a lost attempt's scratch files"),
                }
            }
        }
    }

    async fn process(&self, job: JobRow, stop: watch::Receiver<bool>) {
        let spec = &job.spec;
        tracing::info!(model = %spec.model, format = %spec.output_format, "processing");
        let shared = Arc::new(Shared::default());
        let result = {
            let work = self.attempt(&job, spec, shared.clone());
            tokio::pin!(work);
            self.supervise(&job, &shared, stop, &mut work).await
        };
        let store = &self.app.store;
        let outcome = match result {
            Ok(output) => {
                let cost = self.app.config.prices.cost(spec.model, output.duration_seconds);
                store.complete(&job.id, &self.id, &output, cost, self.app.links()).await.map(|done| {
                    if done {
                        tokio::spawn(crate::metrics::job_charged(self.app.clone(), job.id.clone()));
                        tracing::info!(bytes = output.size_bytes, frames = output.frames, "completed");
                    } else {
                        tracing::warn!("finished, but the job was taken from this worker meanwhile; output discarded");
                    }
                })
            }
            Err(Stop::Failed(code, message)) => {
                tracing::warn!(error_code = %code, error = %message, "failed");
                store
                    .fail(
                        &job.id,
                        Some(&self.id),
                        crate::jobs::Status::Processing,
                        &code,
                        &message,
                        None,
                        self.app.links(),
                    )
                    .await
                    .map(|_| ())
            }
            Err(Stop::Retry(code, message)) => self.retry_later(&job, &code, &message).await,
            Err(Stop::Shutdown) => {
                tracing::info!("handing the job back to the queue (shutdown)");
                store.release(&job.id, &self.id, HandBack::Shutdown, "worker shut down; queued again").await.map(|_| ())
            }
            Err(Stop::LeaseLost) => {
                tracing::warn!("lease lost to another worker; stopped");
                Ok(())
            }
        };
        if let Err(e) = outcome {
            // The lease will expire and another attempt will run.
            tracing::error!(error = %e, "recording the job's outcome");
        }
    }

    /// After an attempt failed for a reason of this service: hands the job back to be tried
    /// again once a backoff has passed, or fails it with this error when it has used every
    /// attempt.
    async fn retry_later(&self, job: &JobRow, code: &str, message: &str) -> sqlx::Result<()> {
        let (store, max_attempts) = (&self.app.store, self.app.config.max_attempts);
        if job.attempts >= i64::from(max_attempts) {
            tracing::warn!(error_code = %code, error = %message, "failed on the server; every attempt used");
            let from = crate::jobs::Status::Processing;
            return store.fail(&job.id, Some(&self.id), from, code, message, None, self.app.links()).await.map(|_| ());
        }
        let base = self.app.config.retry_backoff;
        let wait = crate::webhooks::backoff(base, job.attempts).min(MAX_RETRY_BACKOFF.max(base));
        let retry_at = crate::store::now_ms() + wait.as_millis() as i64;
        let (at, wait) = (
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(retry_at as u64)),
            humantime::format_duration(wait),
        );
        tracing::warn!(error_code = %code, error = %message, retry_in = %wait, "handing the job back to be retried");
        let reason = format!(
            "{code}: {message}; attempt {} of {max_attempts} failed on the server, not for the job; \
             queued again, to be retried at {at} (in {wait})",
            job.attempts
        );
        store.release(&job.id, &self.id, HandBack::RetryAt(retry_at), &reason).await.map(|_| ())
    }

    /// Runs `work` while renewing the lease, reporting progress, and relaying cancels and
    /// shutdowns to the engine.
    async fn supervise(
        &self,
        job: &JobRow,
        shared: &Shared,
        mut stop: watch::Receiver<bool>,
        work: &mut (impl std::future::Future<Output = Result<Output, Stop>> + Unpin),
    ) -> Result<Output, Stop> {
        let mut tick = tokio::time::interval(TICK);
        let mut reason: Option<Stop> = None;
        loop {
            tokio::select! {
                result = &mut *work => {
                    return match (result, reason) {
                        (Ok(output), None) => Ok(output),
                        (_, Some(why)) => Err(why),
                        (Err(e), None) => Err(e),
                    };
                }
                _ = stop.changed(), if reason.is_none() => {
                    if *stop.borrow() {
                        shared.cancel.store(true, Ordering::Relaxed);
                        reason = Some(Stop::Shutdown);
                    }
                }
                _ = tick.tick() => {
                    match self.app.store.heartbeat(&job.id, &self.id, self.app.config.lease, shared.advance()).await {
                        Ok(Some(false)) => {}
                        Ok(Some(true)) if reason.is_none() => {
                            shared.cancel.store(true, Ordering::Relaxed);
                            reason = Some(Stop::Failed("cancelled".into(), "The job was cancelled".into()));
                        }
                        Ok(Some(true)) => {}
                        Ok(None) => {
                            shared.cancel.store(true, Ordering::Relaxed);
                            reason = Some(Stop::LeaseLost);
                        }
                        // A database hiccup: keep going; the lease has slack for a few misses.
                        Err(e) => tracing::warn!(error = %e, "heartbeat"),
                    }
                }
            }
        }
    }

    /// One attempt: fetch the input, run the engine, store the output.
    async fn attempt(&self, job: &JobRow, spec: &JobSpec, shared: Arc<Shared>) -> Result<Output, Stop> {
        let app = &self.app;
        let scratch = tempfile::Builder::new()
            .prefix(&format!("{}-", job.id))
            .tempdir_in(app.config.work_dir())
            .map_err(|e| internal("creating a scratch directory", e))?;
        // What the client calls each file, for messages (never this host's paths).
        let input_name = spec.input.object_key().unwrap_or(&spec.video_url).to_string();
        let input = match spec.input.object_key() {
            Some(object_key) => match app.storage.local_copy(object_key, scratch.path()).await {
                Ok(path) => path,
                Err(e) => {
                    let gone =
                        || Stop::Failed("input_missing".into(), format!("{object_key} could not be read from storage"));
                    return Err(self.unreadable(object_key, "reading the input", e, gone).await);
                }
            },
            None => {
                let path = scratch.path().join("input");
                let download = async {
                    app.fetcher
                        .download(&spec.video_url, &path)
                        .await
                        .map_err(|e| fetch_failure(e, "downloading the input", String::new()))
                };
                unless_cancelled(&shared, download).await?;
                path
            }
        };
        let background_path = scratch.path().join("background");
        // Files read in place from a local store are named by their object keys.
        let store_root = app.storage.local_path("").unwrap_or_default();
        let names = [
            (input.as_path(), input_name.as_str()),
            (background_path.as_path(), "bg_image_url"),
            (scratch.path(), "scratch"),
            (store_root.as_path(), ""),
        ];
        let engine_failure = |e: EngineError| {
            let message = redact_paths(&e.to_string(), &names);
            if e.is_input_error() {
                Stop::Failed(e.code().to_string(), message)
            } else {
                // ffmpeg or a model missing or crashing here, I/O: this host's fault.
                tracing::error!(error = %e, "the engine failed");
                Stop::Retry(e.code().to_string(), message)
            }
        };
        if job.billing_status == Some(Billing::Pending) {
            // Before a single frame is decoded: a key that cannot pay costs no more than a probe.
            let secs = crate::billing::probe_seconds(app, input.clone(), {
                let shared = shared.clone();
                move || shared.cancelled()
            })
            .await
            .map_err(engine_failure)?;
            self.reserve(job, spec, secs).await?;
        }
        let background = match (spec.background.kind.as_str(), &spec.background.image_url, spec.background.color) {
            ("image", Some(url), _) => {
                let fetch = self.fetch_image(url, spec.background.image_object_key.as_deref(), &background_path);
                Background::Image(unless_cancelled(&shared, fetch).await?)
            }
            ("color", _, Some(rgb)) => Background::from_unit_rgb(&rgb).map_err(engine_failure)?,
            _ => Background::Transparent,
        };
        let format = spec.output_format;
        let output = scratch.path().join(format!("output.{}", format.extension()));
        let request = RemoveRequest {
            input: input.clone(),
            output: output.clone(),
            format,
            background,
            composition: spec.composition(),
            limits: app.config.limits(),
            preview_secs: spec.preview_duration,
            keyframes: spec.keyframes.unwrap_or(app.config.keyframes),
        };
        let tier = app.config.serving_tier(spec.model);
        if tier != spec.model {
            tracing::info!(model = %spec.model, tier = %tier, "served by the --human-model tier");
        }
        let (home, runtime, segmenters) = (self.home.clone(), self.runtime.clone(), self.segmenters.clone());
        let precision = self.app.config.precision_in_force();
        let span = tracing::Span::current();
        let summary = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut segmenters = segmenters.lock().unwrap_or_else(|p| p.into_inner());
            let segmenter = match segmenters.entry(tier) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Segmenter::at_precision(&runtime, &home, tier, precision)?)
                }
            };
            clearbg_engine::remove_background(segmenter, &request, shared.as_ref())
        })
        .await
        .map_err(|e| internal("the engine thread", e))?
        .map_err(engine_failure)?;
        crate::metrics::engine_run(spec.model.name(), summary.frames, summary.wall);
        let key = format!("outputs/{}.{}", job.id, format.extension());
        let (size, sha256) =
            app.storage.put_file(&key, &output).await.map_err(|e| internal("storing the output", e))?;
        if sha256 != summary.sha256 {
            return Err(internal(
                "storing the output",
                format!("stored sha256 {sha256} differs from the engine's {}", summary.sha256),
            ));
        }
        let fps = summary.input.fps.as_f64();
        Ok(Output {
            key,
            sha256,
            size_bytes: size as i64,
            duration_seconds: if fps > 0.0 { summary.frames as f64 / fps } else { summary.input.duration_secs },
            frames: summary.frames as i64,
            fps: (summary.fps * 100.0).round() / 100.0,
            keyframes: summary.keyframes.keyframes as i64,
        })
    }

    /// Reserves the cost of a job whose input's duration was unknown at start (a URL), now that
    /// the input is here and probed (`secs`), billed as [`crate::billing`] says.
    async fn reserve(&self, job: &JobRow, spec: &JobSpec, secs: f64) -> Result<(), Stop> {
        let cost = self.app.config.prices.cost(spec.model, crate::billing::billable_seconds(spec, secs));
        match self.app.store.reserve_for_job(&job.id, &self.id, cost).await {
            Ok(_) => Ok(()),
            Err(e @ StoreError::InsufficientCredits { .. }) => {
                Err(Stop::Failed("insufficient_credits".into(), e.to_string()))
            }
            Err(StoreError::Db(e)) => Err(internal("reserving credits", e)),
            Err(StoreError::NotFound | StoreError::WrongState(_)) => Err(Stop::LeaseLost),
        }
    }

    /// The background picture at `dest`: read from storage when `object_key` (one of the key's
    /// own files, checked when the job was made), else downloaded from `url`.
    async fn fetch_image(&self, url: &str, object_key: Option<&str>, dest: &std::path::Path) -> Result<PathBuf, Stop> {
        if let Some(key) = object_key {
            let scratch = dest.parent().expect("the scratch directory");
            return match self.app.storage.local_copy(key, scratch).await {
                Ok(path) => Ok(path),
                Err(e) => {
                    let gone = || {
                        let message = format!("bg_image_url: {key} could not be read from storage");
                        Stop::Failed("invalid_background".into(), message)
                    };
                    Err(self.unreadable(key, "reading the background", e, gone).await)
                }
            };
        }
        self.app
            .fetcher
            .download(url, dest)
            .await
            .map_err(|e| fetch_failure(e, "downloading the background", "bg_image_url: ".into()))?;
        Ok(dest.to_path_buf())
    }

    /// Why storage could not read `object_key`: the job's fault (`gone`) when the database says
    /// the file was deleted, else storage failed, and another attempt may find it.
    async fn unreadable(
        &self,
        object_key: &str,
        context: &str,
        error: anyhow::Error,
        gone: impl FnOnce() -> Stop,
    ) -> Stop {
        match self.app.store.holds_file(object_key).await {
            Ok(false) => {
                tracing::warn!(error = %error, object_key, "{context}: the file was deleted");
                gone()
            }
            Ok(true) => internal(context, format!("{object_key}: {error:#}")),
            Err(db) => internal(context, format!("{object_key}: {error:#}; then the database: {db}")),
        }
    }
}

/// Runs a download, giving up as soon as the job is cancelled or the worker stops (the engine
/// checks the same flag between frames).
async fn unless_cancelled<T>(
    shared: &Shared,
    work: impl std::future::Future<Output = Result<T, Stop>>,
) -> Result<T, Stop> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if shared.cancelled() {
                    return Err(Stop::Failed("cancelled".into(), "The job was cancelled".into()));
                }
            }
        }
    }
}

/// A failure of this server, not of the job: the details (paths, driver messages) go to the
/// log, the job says what failed. Another attempt may succeed.
fn internal(context: &str, e: impl std::fmt::Display) -> Stop {
    tracing::error!(error = %e, "{context}");
    Stop::Retry("internal_error".into(), format!("{context} failed on the server; its log has the details"))
}

/// A failed download: the URL's fault (refused, unreachable, too large) fails the job, with
/// `prefix` before the message; this host's (writing the file) is retried.
fn fetch_failure(e: crate::fetch::FetchError, context: &str, prefix: String) -> Stop {
    if e.local {
        internal(context, e.message)
    } else {
        Stop::Failed(e.code.into(), prefix + &e.message)
    }
}
