//! The process-wide ONNX Runtime environment.
//!
//! ONNX Runtime is loaded from the shared library the set-up step installed (`load-dynamic`),
//! through `ort::init_from`, so a missing library is an error that says how to install it
//! instead of a panic inside `ort`. ONNX Runtime allows one environment per process, so it is
//! created once and shared.

use std::path::Path;
use std::sync::Mutex;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use crate::error::{EngineError, Result};
use crate::home::Home;

static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);

/// A handle on the loaded ONNX Runtime; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    env: Environment,
    threads: usize,
}

impl Runtime {
    /// Loads ONNX Runtime from `home` (once per process) and uses `threads` intra-op threads
    /// per model (0 = one per available core).
    pub fn load(home: &Home, threads: usize) -> Result<Runtime> {
        let threads =
            if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads };
        let mut slot = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(env) = slot.as_ref() {
            return Ok(Runtime { env: env.clone(), threads });
        }
        let library = home.ort_library();
        if !library.is_file() {
            return Err(EngineError::RuntimeMissing { path: library, reason: "file not found".into() });
        }
        let env = ort::init_from(&library)
            .map_err(|e| EngineError::RuntimeMissing { path: library.clone(), reason: e.to_string() })?
            .with_name("clearbg")
            .build()
            .map_err(|e| EngineError::RuntimeMissing { path: library, reason: e.to_string() })?;
        *slot = Some(env.clone());
        Ok(Runtime { env, threads })
    }

    /// ONNX Runtime's version string, for `clearbg models`.
    pub fn version(&self) -> String {
        ort::info()
            .split(',')
            .find_map(|p| p.trim().strip_prefix("ORT Build Info: git-branch=rel-"))
            .unwrap_or("1.32")
            .to_string()
    }

    /// Opens a model file as a session tuned for frame-by-frame CPU inference; `tiny` models run
    /// on one thread.
    pub(crate) fn session(&self, path: &Path, tiny: bool) -> Result<Session> {
        let session = Session::builder(&self.env)?
            .with_optimization_level(GraphOptimizationLevel::Level3)?
            .with_intra_threads(if tiny { 1 } else { self.threads })?
            .with_inter_threads(1)?
            // Spinning workers steal the core that decode, matting and encode need.
            .with_intra_op_spinning(false)?
            .commit_from_file(path)?;
        Ok(session)
    }
}
