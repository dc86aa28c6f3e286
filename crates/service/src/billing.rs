//! Credits: prices, what a job costs, and how amounts are written.
//!
//! **Unit.** Every amount is an integer number of *millicredits* (1 credit = 1000). Prices are
//! credits per minute (`original` 60, `light` 45, `human` 45, `pro` 180, `video` 45 by default), so a
//! second of `light` is 45/60 credit = 750 millicredits: exact, with no floating point in a
//! balance. The API shows credits as decimal numbers (`0.75`), exact to three decimals.
//!
//! **What a job costs.** `ceil(seconds) × price_per_minute / 60`, rounded up to a whole
//! millicredit, where `seconds` is the duration processed: the input's, cut to
//! `preview_duration` when set (and to `CLEARBG_MAX_DURATION`).
//!
//! **When.** Starting a job *reserves* its cost (the balance drops at once, conditionally, so it
//! never goes below zero and no credit is spent twice); completion *charges* the real cost of
//! the output (never more than was reserved) and releases the reservation; a failure or a
//! cancel *refunds* the reservation. An upload's duration is probed when a job is made from it,
//! so its start reserves (or answers 402 `insufficient_credits`, running nothing). A `video_url`
//! elsewhere is only known once downloaded: its start needs a positive balance, and the worker
//! reserves after downloading and probing it (before decoding a frame), failing the job with
//! `insufficient_credits` if the balance is short. Anonymous jobs of the legacy key-less
//! `/api/process` are not billed (and are limited per client address instead).
//!
//! **Trusted numbers only.** The duration reserved is the one the engine's probe reads from a
//! real container (the demuxer its bytes name, never a playlist or list of files); an input
//! whose duration cannot be established is refused. The engine then decodes at most what that
//! duration holds ([`clearbg_engine::VideoInfo::frame_cap`]), and the charge is computed from
//! the frames actually decoded, never above the reservation.

use std::fmt;
use std::str::FromStr;

use clearbg_engine::Tier;

use crate::error::{redact_paths, ApiError, ApiResult, FieldError};
use crate::ids::KeyFingerprint;
use crate::jobs::{InputRef, JobSpec, MODELS};
use crate::store::{Credits, Reservation, MILLIS};
use crate::App;

/// The default prices, credits per minute: RemoveBGVideo's for its four models, and `video` at
/// `human`'s price. It serves the same clips (people), an operator may serve `human` with it
/// (`CLEARBG_HUMAN_MODEL=video`), which should not change what a client pays, and it costs less
/// CPU per frame than `human`, so the price covers it.
pub const DEFAULT_PRICES: &str = "original=60,light=45,human=45,pro=180,video=45";

/// Credits per minute of each model, in millicredits per minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices(Vec<(Tier, i64)>);

impl Prices {
    /// Millicredits per minute of `model` (every tier has a price: [`Prices`] is made from
    /// [`MODELS`]).
    pub fn per_minute(&self, model: Tier) -> i64 {
        self.0.iter().find(|(m, _)| *m == model).map(|(_, p)| *p).unwrap_or(0)
    }

    /// Every model and its price, in the order of [`MODELS`].
    pub fn iter(&self) -> impl Iterator<Item = (Tier, i64)> + '_ {
        self.0.iter().copied()
    }

    /// Millicredits for `seconds` of `model`: `ceil(seconds) × per_minute / 60`, rounded up.
    pub fn cost(&self, model: Tier, seconds: f64) -> i64 {
        // A hair of tolerance: 30 frames at 30 fps is one second, not two.
        let whole = if seconds.is_finite() && seconds > 0.0 { (seconds - 1e-6).ceil().max(1.0) as i64 } else { 0 };
        let total = whole.saturating_mul(self.per_minute(model));
        (total + 59) / 60
    }
}

impl Default for Prices {
    fn default() -> Prices {
        DEFAULT_PRICES.parse().expect("the default prices parse")
    }
}

impl FromStr for Prices {
    type Err = String;

    /// `model=credits_per_minute,…`; models left out keep their default price.
    fn from_str(s: &str) -> Result<Prices, String> {
        let mut prices: Vec<(Tier, i64)> = MODELS.iter().map(|&m| (m, default_per_minute(m) * MILLIS)).collect();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (model, value) =
                part.split_once('=').ok_or_else(|| format!("{part:?} is not model=credits_per_minute"))?;
            let (model, value) = (model.trim(), value.trim());
            let slot = prices
                .iter_mut()
                .find(|(m, _)| m.name() == model)
                .ok_or_else(|| format!("{model:?} is not a model ({})", MODELS.map(|m| m.name()).join(", ")))?;
            slot.1 = parse_credits(value).filter(|p| *p >= 0).ok_or_else(|| {
                format!("{value:?} is not a price for {model}: a number of credits per minute, 0 or more, at most 3 decimals")
            })?;
        }
        Ok(Prices(prices))
    }
}

impl fmt::Display for Prices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.iter().map(|(m, p)| format!("{m}={}", Credits(p))).collect();
        write!(f, "{}", parts.join(","))
    }
}

fn default_per_minute(model: Tier) -> i64 {
    match model {
        Tier::Pro => 180,
        Tier::Original => 60,
        Tier::Light | Tier::Human | Tier::Video => 45,
    }
}

/// Parses a number of credits (`12`, `0.75`, `-3`) into millicredits; `None` if it is not a
/// number, has more than three decimals, or is absurdly large.
pub fn parse_credits(s: &str) -> Option<i64> {
    let x: f64 = s.parse().ok()?;
    credits_from_f64(x)
}

/// Credits as a JSON number → millicredits, under the rules of [`parse_credits`].
pub fn credits_from_f64(x: f64) -> Option<i64> {
    if !x.is_finite() || x.abs() > 1e12 {
        return None;
    }
    let millis = (x * MILLIS as f64).round();
    ((x * MILLIS as f64 - millis).abs() < 1e-6).then_some(millis as i64)
}

/// The seconds a job will process when its input lasts `input_secs`: cut to
/// `preview_duration`.
pub fn billable_seconds(spec: &JobSpec, input_secs: f64) -> f64 {
    match spec.preview_duration {
        Some(p) if p < input_secs => p,
        _ => input_secs,
    }
}

/// What starting `spec` for `owner` holds: its cost now when its input is one of our own files
/// (an upload, probed once, the first time a job is made from it; or an earlier output), else
/// [`Reservation::Later`] (a URL: the worker reserves once it has downloaded and probed it);
/// nothing for anonymous jobs. A stored input that breaks a limit, or whose duration cannot be
/// established, is refused here, before anything runs: 422 naming `video_url`.
pub async fn reservation(app: &App, spec: &JobSpec, owner: Option<&KeyFingerprint>) -> ApiResult<Reservation> {
    let secs = match spec.input.object_key() {
        None => None,
        Some(key) => Some(stored_seconds(app, &spec.input, key).await?),
    };
    Ok(match (owner, secs) {
        (None, _) => Reservation::None,
        (Some(_), Some(secs)) => Reservation::Now(app.config.prices.cost(spec.model, billable_seconds(spec, secs))),
        (Some(_), None) => Reservation::Later,
    })
}

/// The duration of an input in our own storage, probed with the engine under the service's
/// limits (an upload's is kept with the upload, so it is probed once).
async fn stored_seconds(app: &App, input: &InputRef, key: &str) -> ApiResult<f64> {
    if let InputRef::Upload { upload_id, .. } = input {
        if let Some(secs) = app.store.upload_duration(upload_id).await? {
            return Ok(secs);
        }
    }
    let scratch = tempfile::Builder::new()
        .prefix("probe-")
        .tempdir_in(app.config.work_dir())
        .map_err(|e| ApiError::internal("making a scratch directory", e))?;
    let path =
        app.storage.local_copy(key, scratch.path()).await.map_err(|e| ApiError::internal("reading the input", e))?;
    let secs = probe_seconds(app, path.clone(), || false).await.map_err(|e| {
        let message = redact_paths(&e.to_string(), &[(&path, key)]);
        if e.is_input_error() {
            ApiError::invalid(vec![FieldError::new("video_url", message)])
        } else {
            ApiError::unavailable(format!("the video could not be read now: {message}"))
        }
    })?;
    if let InputRef::Upload { upload_id, .. } = input {
        if let Err(e) = app.store.set_upload_duration(upload_id, secs).await {
            tracing::warn!(error = %e, %upload_id, "recording an upload's duration");
        }
    }
    Ok(secs)
}

/// Probes a local video with the engine under the service's limits: its duration in seconds.
/// `cancelled` is asked while ffprobe runs (it is killed when the answer is yes).
pub async fn probe_seconds(
    app: &App,
    path: std::path::PathBuf,
    cancelled: impl Fn() -> bool + Send + 'static,
) -> clearbg_engine::Result<f64> {
    let limits = app.config.limits();
    tokio::task::spawn_blocking(move || {
        clearbg_engine::probe(&path, &limits, &cancelled).map(|info| info.duration_secs)
    })
    .await
    .unwrap_or_else(|e| Err(clearbg_engine::EngineError::InvalidInput(format!("probe thread: {e}"))))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_second_of_light_is_three_quarters_of_a_credit() {
        let p = Prices::default();
        assert_eq!(p.cost(Tier::Light, 1.0), 750);
        assert_eq!(p.cost(Tier::Light, 0.5), 750, "a started second is billed whole");
        assert_eq!(p.cost(Tier::Light, 1.000_000_1), 750, "frame arithmetic noise is not a second");
        assert_eq!(p.cost(Tier::Light, 1.2), 1500);
        assert_eq!(p.cost(Tier::Original, 60.0), 60_000);
        assert_eq!(p.cost(Tier::Pro, 10.0), 30_000);
        assert_eq!(p.cost(Tier::Light, 0.0), 0);
    }

    #[test]
    fn prices_parse_partially_and_refuse_nonsense() {
        let p: Prices = "light=30, pro=100.5".parse().unwrap();
        assert_eq!(
            (p.per_minute(Tier::Light), p.per_minute(Tier::Pro), p.per_minute(Tier::Original)),
            (30_000, 100_500, 60_000)
        );
        assert_eq!(p.cost(Tier::Light, 1.0), 500);
        // 7 credits a minute: 116.67 millicredits a second, rounded up.
        assert_eq!("light=7".parse::<Prices>().unwrap().cost(Tier::Light, 1.0), 117);
        assert!("huge=1".parse::<Prices>().is_err());
        assert!("light=-1".parse::<Prices>().is_err());
        assert!("light".parse::<Prices>().is_err());
        assert!("light=0.0001".parse::<Prices>().is_err());
        assert_eq!(Prices::default().to_string(), "original=60,light=45,pro=180,human=45,video=45");
        // The defaults are written twice (the flag's default text, and what a partial list
        // starts from): they must agree.
        assert_eq!("".parse::<Prices>().unwrap(), Prices::default());
    }

    #[test]
    fn credits_show_exactly() {
        assert_eq!(json!(Credits(100_000_000)), json!(100000));
        assert_eq!((json!(Credits(750)), Credits(750).to_string()), (json!(0.75), "0.75".to_string()));
        assert_eq!(parse_credits("0.75"), Some(750));
        assert_eq!(parse_credits("-2"), Some(-2000));
        assert_eq!(parse_credits("0.0005"), None);
    }
}
