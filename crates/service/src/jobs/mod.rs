//! What a job is: its lifecycle ([`Status`], [`Billing`]) and what it asks for ([`JobSpec`]),
//! holding the engine's own types, stored as JSON and read back into them once.
//!
//! [`parse`] reads the API's JSON forms into a spec.

mod parse;

use clearbg_engine::{Composition, Keyframes, OutputFormat, Tier};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::ids::{JobId, UploadId};

pub use parse::{check_url, parse_composition, parse_spec, Mode, MAX_METADATA_BYTES, MODELS};

/// A job's lifecycle: `created` (draft) → `pending` (queued) → `processing` → `completed` | `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = JobStatus)]
pub enum Status {
    /// A draft (`auto_start: false`), waiting for `/start`.
    Created,
    /// Started and waiting for a worker.
    Pending,
    /// A worker is on it.
    Processing,
    /// The output is ready.
    Completed,
    /// Ended without output; `error` and `error_code` say why (cancellation included, so that
    /// SDK polling loops, which only stop on `completed` or `failed`, end).
    Failed,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 5] =
        [Status::Created, Status::Pending, Status::Processing, Status::Completed, Status::Failed];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Completed => "completed",
            Status::Failed => "failed",
        }
    }

    /// True once nothing more will happen.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed)
    }
}

impl std::str::FromStr for Status {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Status, UnknownName> {
        Status::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| UnknownName::new("job status", s))
    }
}

/// Where a job's credits stand: `pending` (a URL input: reserved once its duration is known) →
/// `reserved` → `charged` | `refunded`. Drafts and anonymous jobs have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Billing {
    /// Started on an input of unknown length: the worker reserves once it has probed it.
    Pending,
    /// Credits are held.
    Reserved,
    /// Completed: the reservation was released and the cost charged.
    Charged,
    /// Ended without output: the reservation was given back.
    Refunded,
}

impl Billing {
    /// The wire (and column) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Billing::Pending => "pending",
            Billing::Reserved => "reserved",
            Billing::Charged => "charged",
            Billing::Refunded => "refunded",
        }
    }
}

impl std::str::FromStr for Billing {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Billing, UnknownName> {
        [Billing::Pending, Billing::Reserved, Billing::Charged, Billing::Refunded]
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| UnknownName::new("billing status", s))
    }
}

/// Text that names none of an enum's values: from a client, a 422; from the database (written by
/// another version), an error that stops the read rather than a guess.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not a known {what}")]
pub struct UnknownName {
    what: &'static str,
    text: String,
}

impl UnknownName {
    fn new(what: &'static str, text: &str) -> UnknownName {
        UnknownName { what, text: text.to_string() }
    }
}

/// The background, normalised from either API form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackgroundSpec {
    /// `transparent`, `color` or `image`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The name the client used (`green`, `custom`, `color`…), echoed as `bg_type`.
    pub name: String,
    /// RGB floats in 0-1 for `color`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<[f64; 3]>,
    /// Picture URL for `image`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// When `image_url` names one of this service's own files: its object key, resolved (and
    /// its owner checked) when the job was made or started. The worker reads it from storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_object_key: Option<String>,
}

impl BackgroundSpec {
    fn transparent() -> BackgroundSpec {
        BackgroundSpec {
            kind: "transparent".into(),
            name: "transparent".into(),
            color: None,
            image_url: None,
            image_object_key: None,
        }
    }

    /// True for a transparent background.
    pub fn is_transparent(&self) -> bool {
        self.kind == "transparent"
    }
}

/// Where the input video comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputRef {
    /// A file uploaded to this service: read straight from storage.
    Upload {
        /// The upload's id.
        upload_id: UploadId,
        /// Its object key in storage.
        object_key: String,
    },
    /// The output of one of the same key's completed jobs: read straight from storage.
    Output {
        /// The job that made it.
        job_id: JobId,
        /// Its object key in storage.
        object_key: String,
    },
    /// Anything else: the worker downloads it.
    Url,
}

impl InputRef {
    /// The object key of an input this service stores itself.
    pub fn object_key(&self) -> Option<&str> {
        match self {
            InputRef::Upload { object_key, .. } | InputRef::Output { object_key, .. } => Some(object_key),
            InputRef::Url => None,
        }
    }
}

/// Everything a job was asked to do, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The `video_url` as given.
    pub video_url: String,
    /// How the worker gets the video.
    pub input: InputRef,
    /// Model tier.
    #[serde(with = "by_name")]
    pub model: Tier,
    /// Output format.
    #[serde(with = "by_name")]
    pub output_format: OutputFormat,
    /// Background.
    pub background: BackgroundSpec,
    /// The `composition` object, if any.
    pub composition: Option<CompositionSpec>,
    /// The `text_prompt` as given.
    pub text_prompt: Option<String>,
    /// The client's `metadata`, verbatim.
    pub metadata: Option<Value>,
    /// Where events will be delivered.
    pub webhook_url: Option<String>,
    /// Process only the first N seconds.
    pub preview_duration: Option<f64>,
    /// The `auto_start` flag as given.
    pub auto_start: bool,
    /// The `keyframes` option (an extension: `adaptive` or `every`); `None`: the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "by_name::optional")]
    pub keyframes: Option<Keyframes>,
}

/// The `composition` object as the client gave it (echoed back as it was) and what it means to
/// the engine, parsed once: on the way in, and when a stored spec is read (where a composition
/// this version cannot read fails the read, instead of a worker later).
#[derive(Debug, Clone, PartialEq)]
pub struct CompositionSpec {
    /// As given.
    pub given: Value,
    /// As the engine takes it.
    pub parsed: Composition,
}

impl Serialize for CompositionSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.given.serialize(s)
    }
}

impl<'de> Deserialize<'de> for CompositionSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CompositionSpec, D::Error> {
        let given = Value::deserialize(d)?;
        let parsed =
            parse_composition(&given).map_err(|e| serde::de::Error::custom(format!("{}: {}", e.field, e.message)))?;
        Ok(CompositionSpec { given, parsed })
    }
}

/// (De)serialises an engine type by the name the API gives it (`"original"`, `"webm"`), so a
/// stored spec reads the same as before the types, and a name this version does not know fails
/// the read.
mod by_name {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr<Err: Display>,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }

    /// The same for an optional value.
    pub mod optional {
        use super::*;

        pub fn serialize<T: Display, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
            match value {
                Some(v) => s.collect_str(v),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
        where
            T: FromStr<Err: Display>,
            D: Deserializer<'de>,
        {
            Option::<String>::deserialize(d)?.map(|s| s.parse().map_err(D::Error::custom)).transpose()
        }
    }
}

impl JobSpec {
    /// The engine's composition: the identity when none was asked for.
    pub fn composition(&self) -> Composition {
        self.composition.as_ref().map(|c| c.parsed).unwrap_or_default()
    }

    /// Warnings a client must see: options that were accepted but cannot be applied.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.text_prompt.as_deref().is_some_and(|p| !p.trim().is_empty()) {
            warnings.push(
                "text_prompt was not applied: no text-grounding model is installed (none ships in a registry package), so the whole foreground subject is kept"
                    .to_string(),
            );
        }
        warnings
    }
}
