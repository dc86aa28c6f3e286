//! # clearbg-service
//!
//! The RemoveBGVideo-compatible HTTP API and the workers behind it. It knows jobs, keys, storage
//! and HTTP; it knows nothing of pixels — a worker hands each job to
//! [`clearbg_engine::remove_background`] and stores what comes back.
//!
//! - [`billing`]: credits — prices, what a job costs, when it is reserved, charged, refunded.
//! - [`config`]: every setting, with its `CLEARBG_*` twin and an embedded default.
//! - [`store`]: durable state in SQL — keys, uploads, jobs and their audit trail.
//! - [`storage`]: uploads and outputs in object storage, and the signed URLs that serve them.
//! - [`ids`]: the ids of jobs, uploads and keys, each its own type.
//! - [`jobs`]: what a job asks for, parsed and validated from the API's JSON forms.
//! - [`wire`]: a job as the routes and the webhooks show it, typed once (and described by it).
//! - [`http`]: the routes, one error shape, request ids.
//! - [`worker`]: claims queued jobs under a lease, runs the engine, stores the output.
//! - [`fetch`]: downloads `video_url`s without reaching private networks.
//! - [`sweeper`]: deletes inputs and outputs after the retention period.
//! - [`ratelimit`]: per-key request, start and authentication-failure limits.
//! - [`webhooks`]: signs and sends the job events queued in the database's outbox.
//! - [`health`], [`metrics`]: `/health`'s real checks and the Prometheus series at `/metrics`.
#![deny(missing_docs)]

pub mod billing;
pub mod config;
pub mod error;
pub mod fetch;
pub mod health;
pub mod http;
pub mod ids;
pub mod jobs;
pub mod metrics;
pub mod ratelimit;
pub mod storage;
pub mod store;
pub mod sweeper;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod webhooks;
pub mod wire;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::RngCore;
use tokio::sync::{watch, Notify};

pub use config::{Config, StoreConfig};
use fetch::Fetcher;
use storage::{Signer, Storage};
use store::Store;

/// Everything a request handler or a worker needs, shared.
#[derive(Clone)]
pub struct App {
    /// Settings.
    pub config: Arc<Config>,
    /// The database.
    pub store: Store,
    /// Object storage, and the links that download from it.
    pub storage: Storage,
    /// Downloads inputs.
    pub fetcher: Fetcher,
    /// Wakes idle workers when a job is queued.
    pub queued: Arc<Notify>,
    /// Per-key request and start limits.
    pub limits: Arc<ratelimit::RateLimits>,
}

impl App {
    /// Opens the database and storage named by `config`.
    pub async fn open(config: Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.store.data_dir)
            .with_context(|| format!("creating the data directory {}", config.store.data_dir.display()))?;
        std::fs::create_dir_all(config.work_dir())?;
        let store = Store::open(&config.store.database_url()).await.context("opening the database")?;
        let secret = match &config.signing_secret {
            Some(s) => s.clone(),
            // Generated once and kept in the database, so links survive restarts and every
            // process sharing the database signs alike.
            None => {
                store
                    .setting_or_insert("signing_secret", || {
                        let mut bytes = [0u8; 32];
                        rand::rng().fill_bytes(&mut bytes);
                        hex::encode(bytes)
                    })
                    .await?
            }
        };
        let signer = Signer::new(secret.as_bytes(), &config.public_url());
        let storage = Storage::open(&config.storage_url(), signer).context("opening object storage")?;
        let fetcher = Fetcher {
            allow_private: config.allow_private_urls,
            max_bytes: config.max_upload_bytes,
            timeout: config.fetch_timeout,
        };
        let limits = Arc::new(ratelimit::RateLimits::new(ratelimit::Rates {
            requests: config.rate_limit,
            starts: config.start_rate_limit,
            legacy: config.legacy_rate_limit,
            auth_failures: config.auth_failure_limit,
        }));
        Ok(App { config: Arc::new(config), store, storage, fetcher, queued: Arc::new(Notify::new()), limits })
    }

    /// How this server's job views sign their download links.
    pub fn links(&self) -> wire::Links<'_> {
        wire::Links { storage: &self.storage, ttl: self.config.url_ttl }
    }
}

/// What one process runs. Every process also runs the webhook delivery loop and the retention
/// sweeper: both claim their work in the database, so any number of processes share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The HTTP API and `config.workers` embedded workers (`clearbg serve`; with
    /// `--no-workers`, the API alone).
    Serve,
    /// `config.workers` workers and no API (`clearbg worker`), for hosts that only process;
    /// with an address, `/health` and `/metrics` are served there.
    Worker {
        /// Where to serve `/health` and `/metrics` (`--metrics-listen`), if anywhere.
        ops_listen: Option<std::net::SocketAddr>,
    },
}

/// Runs `role` until SIGINT or SIGTERM, then stops as [`Application::run_until`] says.
pub async fn run(config: Config, role: Role) -> anyhow::Result<()> {
    Application::build(config, role).await?.run_until(wait_for_signal()).await
}

/// A service ready to run: its socket bound, its database and object storage open. `clearbg
/// serve` and `clearbg worker` run one until a signal; the API tests run several in one process,
/// each until its test stops it.
pub struct Application {
    app: App,
    role: Role,
    listener: Option<tokio::net::TcpListener>,
}

impl Application {
    /// Binds the listening socket first (given port 0 the system picks a free one, and the links
    /// the service signs must name the port it got), then opens the database and storage.
    pub async fn build(mut config: Config, role: Role) -> anyhow::Result<Application> {
        let address = match role {
            Role::Serve => Some(config.listen),
            Role::Worker { ops_listen } => ops_listen,
        };
        let listener = match address {
            Some(addr) => {
                Some(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?)
            }
            None => None,
        };
        if let (Role::Serve, Some(listener)) = (role, &listener) {
            config.listen = listener.local_addr()?;
        }
        Ok(Application { app: App::open(config).await?, role, listener })
    }

    /// Where it serves HTTP (the API, or a worker's `/health` and `/metrics`), if anywhere.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// What its handlers and workers share.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Serves and works until `stop` resolves, then stops accepting requests, hands running jobs
    /// back to the queue and returns — within `shutdown_timeout` (and a moment), whatever is
    /// stuck: requests still open then are cut off, and ffmpeg children still running are killed.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application { app, role, listener } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let workers = worker::spawn_pool(app.clone(), app.config.workers, stop_rx.clone())?;
        let mut background = vec![
            tokio::spawn(sweeper::run(app.clone(), stop_rx.clone())),
            tokio::spawn(webhooks::run(app.clone(), stop_rx.clone())),
        ];
        if !workers.is_empty() && app.store.backend() == store::Backend::Postgres {
            background.push(tokio::spawn(worker::listen_for_jobs(app.clone(), stop_rx.clone())));
        }
        let stopper = tokio::spawn(async move {
            stop.await;
            tracing::info!("shutting down: finishing requests, handing running jobs back to the queue");
            let _ = stop_tx.send(true);
        });
        tracing::info!(
            database = %app.store.display_url(),
            storage = %app.storage.url(),
            workers = app.config.workers,
            role = ?role,
            "clearbg is running"
        );
        let drain = app.config.shutdown_timeout;
        let mut tasks = Vec::new();
        // The API, or a worker's /health and /metrics if it was given an address, else nothing.
        if let Some(listener) = listener {
            let router = match role {
                Role::Serve => http::router(app.clone()),
                Role::Worker { .. } => http::ops_router(app.clone()),
            };
            tracing::info!(listen = %listener.local_addr()?, public_url = %app.config.public_url(), "serving HTTP");
            let limits = http::server::ConnectionLimits {
                header_timeout: app.config.header_timeout,
                idle_timeout: app.config.idle_timeout,
                drain,
            };
            tasks.push(tokio::spawn(http::server::serve(listener, router, limits, stop_rx.clone())));
        }
        let _ = stop_rx.clone().wait_for(|stop| *stop).await;
        // Connections finish their requests and workers hand their jobs back, all at once; the
        // drain time bounds the wait (the server cuts its connections off at the same moment).
        tasks.extend(workers);
        tasks.extend(background);
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        let grace = drain + Duration::from_millis(500);
        if tokio::time::timeout(grace, futures_util::future::join_all(tasks)).await.is_err() {
            let killed = clearbg_engine::kill_running_tools();
            tracing::warn!(killed, "work still running after the drain time: stopped");
            aborts.iter().for_each(|a| a.abort());
        }
        stopper.abort();
        Ok(())
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
