//! The engine's one error type.
//!
//! Every variant has a stable machine-readable [`EngineError::code`] (the service stores it as a
//! failed job's `error_code`) and says whether the fault lies with the input or with us
//! ([`EngineError::is_input_error`]), so callers never have to parse messages.

use std::path::PathBuf;

/// Result alias used across the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Everything that can go wrong while removing a background.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input is not something we can read as a video (not a video, truncated, empty...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The input is a video we refuse on purpose (too large, too long, unsupported codec...).
    #[error("unsupported input: {0}")]
    UnsupportedInput(String),
    /// The options contradict each other or name something unknown.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// An external tool (ffmpeg, ffprobe) is not installed.
    #[error("{tool} not found: run `make setup` (or `scripts/setup.sh`) to install it")]
    ToolMissing {
        /// The program that could not be started.
        tool: String,
    },
    /// ONNX Runtime's shared library could not be loaded.
    #[error("ONNX Runtime could not be loaded from {path}: {reason}")]
    RuntimeMissing {
        /// Where we looked.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },
    /// A model file is missing or does not match its pinned sha256.
    #[error("model {file} is not usable: {reason}; run `make setup` to install it")]
    ModelMissing {
        /// The model's file name.
        file: String,
        /// Missing, wrong hash...
        reason: String,
    },
    /// An opt-in model (one whose licence asks for an explicit install) is not installed, or
    /// its file is not the one the install step verified.
    #[error("model {file} is not installed ({reason}): it is an opt-in install because of its licence; run `{install}` to install it")]
    ModelNotInstalled {
        /// The model's file name.
        file: String,
        /// Not found, wrong hash...
        reason: String,
        /// The command that installs it.
        install: &'static str,
    },
    /// The device asked for (a GPU) cannot run the models: no driver, no such GPU, missing
    /// CUDA libraries.
    #[error("{device} is not usable: {reason}")]
    DeviceUnavailable {
        /// `cuda:N`.
        device: String,
        /// What ONNX Runtime said.
        reason: String,
    },
    /// ONNX Runtime failed while loading or running a model.
    #[error("inference failed: {0}")]
    Inference(String),
    /// A child ffmpeg process failed.
    #[error("{stage} failed: {message}")]
    Ffmpeg {
        /// `probe`, `decode` or `encode`.
        stage: &'static str,
        /// The tool's own last words (stderr tail) or exit status.
        message: String,
    },
    /// The caller asked us to stop.
    #[error("cancelled")]
    Cancelled,
    /// A step that should take seconds did not finish in time (an input that keeps ffprobe
    /// reading or waiting); the tool was killed.
    #[error("{stage} took longer than {seconds} s and was stopped")]
    TimedOut {
        /// `probe`, usually.
        stage: &'static str,
        /// How long it was given.
        seconds: u64,
    },
    /// No stage made progress for too long (a hung child process); the job was stopped.
    #[error("no progress for {seconds} s: the job was stopped")]
    Stalled {
        /// The stall timeout that fired.
        seconds: u64,
    },
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    /// A stable, machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::InvalidInput(_) => "invalid_input",
            EngineError::UnsupportedInput(_) => "unsupported_input",
            EngineError::InvalidOptions(_) => "invalid_options",
            EngineError::ToolMissing { .. } => "ffmpeg_missing",
            EngineError::RuntimeMissing { .. } => "runtime_missing",
            EngineError::ModelMissing { .. } => "model_missing",
            EngineError::ModelNotInstalled { .. } => "model_not_installed",
            EngineError::DeviceUnavailable { .. } => "device_unavailable",
            EngineError::Inference(_) => "inference_failed",
            EngineError::Ffmpeg { stage: "encode", .. } => "encode_failed",
            EngineError::Ffmpeg { .. } => "decode_failed",
            EngineError::Cancelled => "cancelled",
            EngineError::TimedOut { .. } => "timed_out",
            EngineError::Stalled { .. } => "stalled",
            EngineError::Io { .. } => "io_error",
        }
    }

    /// True when retrying with the same input cannot help: the input or the options are at fault.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            EngineError::InvalidInput(_)
                | EngineError::UnsupportedInput(_)
                | EngineError::InvalidOptions(_)
                | EngineError::Ffmpeg { stage: "decode", .. }
                | EngineError::TimedOut { stage: "probe", .. }
        )
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
        let context = context.into();
        move |source| EngineError::Io { context, source }
    }
}

impl<R> From<ort::Error<R>> for EngineError {
    fn from(e: ort::Error<R>) -> Self {
        EngineError::Inference(e.message().to_string())
    }
}
