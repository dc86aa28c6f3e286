//! Settings: every one is a `clearbg serve` flag with a `CLEARBG_*` environment twin, and every
//! one has an embedded default, so `clearbg serve` alone runs a complete service under `./data`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Where the state lives: all that `clearbg keys` needs.
#[derive(Args, Debug, Clone)]
pub struct StoreConfig {
    /// Directory for the database, local object storage and scratch files.
    #[arg(long, env = "CLEARBG_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Database URL (default: a SQLite file in the data directory).
    #[arg(long, env = "CLEARBG_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl StoreConfig {
    /// The database URL in use.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.data_dir.join("clearbg.db").display()))
    }
}

/// Settings of the service.
#[derive(Args, Debug, Clone)]
pub struct Config {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub store: StoreConfig,
    /// Address to listen on.
    #[arg(long, env = "CLEARBG_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Object storage URL (default: file://<data dir>/objects).
    #[arg(long, env = "CLEARBG_STORAGE_URL")]
    pub storage_url: Option<String>,
    /// Base of the URLs handed out (default: http://<listen>).
    #[arg(long, env = "CLEARBG_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Token for the /v1/admin routes (X-Admin-Token); unset disables them.
    #[arg(long, env = "CLEARBG_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Embedded workers (each runs one job at a time).
    #[arg(long, env = "CLEARBG_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Allow video_url / bg_image_url on private, loopback and link-local addresses.
    #[arg(long, env = "CLEARBG_ALLOW_PRIVATE_URLS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub allow_private_urls: bool,
    /// Secret for signed download URLs (default: generated once and kept in the database).
    #[arg(long, env = "CLEARBG_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: Option<String>,
    /// Largest accepted upload or downloaded input, in bytes.
    #[arg(long, env = "CLEARBG_MAX_UPLOAD_BYTES", default_value_t = 500 * 1000 * 1000)]
    pub max_upload_bytes: u64,
    /// Longest accepted input video.
    #[arg(long, env = "CLEARBG_MAX_DURATION", default_value = "3h", value_parser = humantime::parse_duration)]
    pub max_duration: Duration,
    /// How long signed URLs stay valid.
    #[arg(long, env = "CLEARBG_URL_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub url_ttl: Duration,
    /// How long uploads and outputs are kept before the sweeper deletes them.
    #[arg(long, env = "CLEARBG_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// How long a worker's claim on a job lasts without a heartbeat (a dead worker's job is
    /// taken up again after this).
    #[arg(long, env = "CLEARBG_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// Attempts per job before it fails for good (an attempt ends when its worker is lost or it
    /// fails for a reason of this service, such as ffmpeg missing or storage failing).
    #[arg(long, env = "CLEARBG_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// The wait before a job whose attempt failed for a reason of this service is tried again;
    /// it doubles with each attempt, up to 5 minutes.
    #[arg(long, env = "CLEARBG_RETRY_BACKOFF", default_value = "5s", value_parser = humantime::parse_duration)]
    pub retry_backoff: Duration,
    /// Time limit for downloading a video_url or bg_image_url.
    #[arg(long, env = "CLEARBG_FETCH_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub fetch_timeout: Duration,
    /// Key for signing webhooks (`X-Webhook-Signature`); unset: webhooks are sent unsigned.
    #[arg(long, env = "CLEARBG_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Wait before the first retry of a failed webhook delivery; it doubles for each retry after.
    #[arg(long, env = "CLEARBG_WEBHOOK_RETRY_BASE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub webhook_retry_base: Duration,
    /// Attempts per webhook delivery before it is marked failed.
    #[arg(long, env = "CLEARBG_WEBHOOK_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_max_attempts: u32,
    /// Where workers run the models: `cpu`, or `cuda` / `cuda:N` in a build with the `cuda`
    /// feature and the GPU libraries of `make setup-cuda`.
    #[arg(long, env = "CLEARBG_DEVICE", default_value = "cpu")]
    pub device: clearbg_engine::Device,
    /// ISNet's number format (original, pro): `int8` or `fp32`; unset: int8 on a CPU (about 2x
    /// faster), fp32 on a GPU.
    #[arg(long, env = "CLEARBG_PRECISION")]
    pub precision: Option<clearbg_engine::Precision>,
    /// Inference threads per worker (0: one per core).
    #[arg(long, env = "CLEARBG_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// A job with no frame progress for this long is stopped.
    #[arg(long, env = "CLEARBG_STALL_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub stall_timeout: Duration,
    /// Requests per API key on /v1 (a full burst, then a steady rate): 1200/min, 10/s, 5000/h.
    #[arg(long, env = "CLEARBG_RATE_LIMIT", default_value = "1200/min")]
    pub rate_limit: crate::ratelimit::Rate,
    /// Job starts per API key (POST /v1/jobs with auto_start, POST /v1/jobs/{id}/start).
    #[arg(long, env = "CLEARBG_START_RATE_LIMIT", default_value = "120/min")]
    pub start_rate_limit: crate::ratelimit::Rate,
    /// Credits granted to each new key (read in millicredits; see [`crate::billing`]).
    #[arg(long, env = "CLEARBG_INITIAL_CREDITS", default_value = "100000", value_parser = parse_grant)]
    pub initial_credits: i64,
    /// The model that runs jobs asked for `human`: `human` (MODNet) or `video` (Robust Video
    /// Matting, `make setup-video-matting`), so clients that only know the four tiers get video
    /// matting. Workers only; a worker refuses to start when the model is not installed.
    #[arg(long, env = "CLEARBG_HUMAN_MODEL", default_value = "human", value_parser = parse_human_model)]
    pub human_model: clearbg_engine::Tier,
    /// Where the heavy models run when a job does not say (its `keyframes` option): `adaptive`
    /// (on keyframes only, the mask carried along the motion in between) or `every` (on every
    /// frame). light and video always run every frame. Workers only.
    #[arg(long, env = "CLEARBG_KEYFRAMES", default_value = "adaptive")]
    pub keyframes: clearbg_engine::Keyframes,
    /// Credits per minute of output per model: `model=credits,…` (models left out keep their default).
    #[arg(long, env = "CLEARBG_PRICES", default_value = crate::billing::DEFAULT_PRICES, value_parser = clap::value_parser!(crate::billing::Prices))]
    pub prices: crate::billing::Prices,
    /// Largest frame area accepted, as `WxH` or a number of pixels: of an input, of a
    /// background image, and of what a composition makes (canvas, scaled subject). Memory per
    /// frame follows it.
    #[arg(long, env = "CLEARBG_MAX_FRAME_PIXELS", default_value = "4096x4096", value_parser = parse_pixels)]
    pub max_frame_pixels: u64,
    /// Time allowed to read a small input's facts (ffprobe); larger files get a second more per 32 MiB.
    #[arg(long, env = "CLEARBG_PROBE_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub probe_timeout: Duration,
    /// Serve the key-less legacy `/api/upload` and `/api/process` (RemoveBGVideo's old routes:
    /// anyone who reaches the server can run unbilled jobs through them).
    #[arg(long, env = "CLEARBG_LEGACY_API", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub legacy_api: bool,
    /// Requests to `/api/upload` and `/api/process` per client address.
    #[arg(long, env = "CLEARBG_LEGACY_RATE_LIMIT", default_value = "60/h")]
    pub legacy_rate_limit: crate::ratelimit::Rate,
    /// Failed authentications (a wrong API key or admin token) per client address; past it,
    /// every `/v1` request from that address is refused until the budget refills.
    #[arg(long, env = "CLEARBG_AUTH_FAILURE_LIMIT", default_value = "30/min")]
    pub auth_failure_limit: crate::ratelimit::Rate,
    /// A connection that has not sent a whole request head within this long is closed.
    #[arg(long, env = "CLEARBG_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// A connection with no request in flight and no traffic for this long is closed.
    #[arg(long, env = "CLEARBG_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// On SIGTERM, how long requests and running jobs get to finish or be handed back before
    /// the process exits anyway (killing any ffmpeg it still runs).
    #[arg(long, env = "CLEARBG_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
}

/// `4096x4096` or `16777216` → pixels.
pub fn parse_pixels(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a frame area: use WxH (4096x4096) or a number of pixels");
    let s = s.trim();
    let pixels = match s.split_once(['x', 'X']) {
        Some((w, h)) => w.trim().parse::<u64>().map_err(|_| bad())? * h.trim().parse::<u64>().map_err(|_| bad())?,
        None => s.parse::<u64>().map_err(|_| bad())?,
    };
    if pixels == 0 {
        return Err(bad());
    }
    Ok(pixels)
}

/// A number of credits, 0 or more, at most three decimals → millicredits.
pub fn parse_grant(s: &str) -> Result<i64, String> {
    crate::billing::parse_credits(s.trim())
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("{s:?} is not a number of credits (0 or more, at most 3 decimals)"))
}

fn parse_human_model(s: &str) -> Result<clearbg_engine::Tier, String> {
    match s.trim() {
        "human" => Ok(clearbg_engine::Tier::Human),
        "video" => Ok(clearbg_engine::Tier::Video),
        other => Err(format!("{other:?} cannot serve `human`: use human or video")),
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (use 1/0, true/false)")),
    }
}

impl Config {
    /// ISNet's number format in force: `--precision` where given, else the device's default.
    pub fn precision_in_force(&self) -> clearbg_engine::Precision {
        self.precision.unwrap_or_else(|| clearbg_engine::Precision::for_device(self.device))
    }

    /// The object storage URL in use.
    pub fn storage_url(&self) -> String {
        self.storage_url.clone().unwrap_or_else(|| {
            let dir = self.store.data_dir.join("objects");
            let abs = std::path::absolute(&dir).unwrap_or(dir);
            format!("file://{}", abs.display())
        })
    }

    /// The public base URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen)).trim_end_matches('/').to_string()
    }

    /// The engine tier that runs a job asked for `asked`: `human` may be served by another
    /// (`--human-model`); every other tier is itself.
    pub fn serving_tier(&self, asked: clearbg_engine::Tier) -> clearbg_engine::Tier {
        match asked {
            clearbg_engine::Tier::Human => self.human_model,
            tier => tier,
        }
    }

    /// Where workers keep their scratch files.
    pub fn work_dir(&self) -> PathBuf {
        self.store.data_dir.join("work")
    }

    /// The engine's input limits under these settings: what an API node checks at job creation
    /// and what a worker enforces, alike.
    pub fn limits(&self) -> clearbg_engine::Limits {
        clearbg_engine::Limits {
            max_pixels: self.max_frame_pixels,
            max_duration_secs: self.max_duration.as_secs_f64(),
            stall_timeout: self.stall_timeout,
            probe_timeout: self.probe_timeout,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_areas_parse_as_sizes_or_counts() {
        assert_eq!(parse_pixels("4096x4096"), Ok(16_777_216));
        assert_eq!(parse_pixels(" 1920X1080 "), Ok(2_073_600));
        assert_eq!(parse_pixels("1000000"), Ok(1_000_000));
        assert!(parse_pixels("0").is_err());
        assert!(parse_pixels("big").is_err());
        assert!(parse_pixels("4096x").is_err());
    }
}
