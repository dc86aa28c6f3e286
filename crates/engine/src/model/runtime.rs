//! The process-wide ONNX Runtime environment.
//!
//! ONNX Runtime is loaded from the shared library the set-up step installed (`load-dynamic`),
//! through `ort::init_from`, so a missing library is an error that says how to install it
//! instead of a panic inside `ort`. ONNX Runtime allows one environment per process, so it is
//! created once and shared.
//!
//! Models run on the CPU, or on an NVIDIA GPU through ONNX Runtime's CUDA execution provider
//! when the crate is built with the `cuda` feature and the GPU build of ONNX Runtime is installed
//! (`make setup-cuda`, see docs/deploy.md). The device is chosen when the runtime is loaded,
//! because the CPU and GPU builds are different libraries.

use std::path::Path;
use std::sync::Mutex;

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

use super::optimized::OptimizedGraphs;
use crate::error::{EngineError, Result};
use crate::home::Home;

static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);

/// Where models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The CPU (the default; needs nothing but the CPU build of ONNX Runtime).
    #[default]
    Cpu,
    /// An NVIDIA GPU by index, through the CUDA execution provider.
    Cuda(i32),
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Device, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<i32>) {
                Some(Ok(n)) if n >= 0 => Ok(Device::Cuda(n)),
                _ => Err(format!("{s:?} is not a device: use cpu, cuda or cuda:N")),
            },
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// An opened model, and where its graph came from.
pub(crate) struct ModelSession {
    pub(crate) session: Session,
    /// Loaded from a saved optimised graph (not optimised from the model in this process): if
    /// it misbehaves, [`Runtime::session_remade`] makes it again from the model.
    pub(crate) from_saved_graph: bool,
}

/// A handle on the loaded ONNX Runtime; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    env: Environment,
    threads: usize,
    device: Device,
    optimized: OptimizedGraphs,
}

impl Runtime {
    /// Loads ONNX Runtime from `home` (once per process) and uses `threads` intra-op threads
    /// per model (0 = one per available core).
    pub fn load(home: &Home, threads: usize) -> Result<Runtime> {
        Runtime::load_on(home, threads, Device::Cpu)
    }

    /// [`Runtime::load`] for models that run on `device`. A process uses one device: the
    /// first load picks the library.
    pub fn load_on(home: &Home, threads: usize, device: Device) -> Result<Runtime> {
        if device != Device::Cpu && !cfg!(feature = "cuda") {
            return Err(EngineError::RuntimeMissing {
                path: home.ort_library_for(device),
                reason: format!(
                    "this build of clearbg runs on the CPU only; build it with `--features cuda` to use {device}"
                ),
            });
        }
        let threads =
            if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads };
        let env = environment(home, device)?;
        Ok(Runtime { env, threads, device, optimized: OptimizedGraphs::new(home, ort::info()) })
    }

    /// Where its models run.
    pub fn device(&self) -> Device {
        self.device
    }

    /// ONNX Runtime's version string, for `clearbg models`.
    pub fn version(&self) -> String {
        ort::info()
            .split(',')
            .find_map(|p| p.trim().strip_prefix("ORT Build Info: git-branch=rel-"))
            .unwrap_or("1.32")
            .to_string()
    }

    /// Opens a model file (whose bytes hash to `sha256`) as a session tuned for frame-by-frame
    /// inference; `tiny` models run on one thread. On the CPU the optimised graph is saved on
    /// the first open and loaded from then on (see [`super::optimized`]).
    pub(crate) fn session(&self, path: &Path, sha256: &str, tiny: bool) -> Result<ModelSession> {
        if self.device != Device::Cpu {
            let session =
                self.builder(tiny)?.with_optimization_level(GraphOptimizationLevel::Level3)?.commit_from_file(path)?;
            return Ok(ModelSession { session, from_saved_graph: false });
        }
        let saved = self.optimized.path_for(path, sha256);
        if saved.is_file() {
            match self.builder(tiny)?.with_optimization_level(GraphOptimizationLevel::Disable)?.commit_from_file(&saved)
            {
                Ok(session) => return Ok(ModelSession { session, from_saved_graph: true }),
                Err(e) => self.optimized.discard(&saved, &format!("it did not load: {e}")),
            }
        }
        self.optimised_session(path, &saved, tiny).map(|session| ModelSession { session, from_saved_graph: false })
    }

    /// The same model opened afresh from its file, after its saved graph (which loaded) failed
    /// at inference with `why`: the saved graph goes, and a new one is optimised and saved.
    pub(crate) fn session_remade(&self, path: &Path, sha256: &str, tiny: bool, why: &EngineError) -> Result<Session> {
        let saved = self.optimized.path_for(path, sha256);
        self.optimized.discard(&saved, &format!("a model run on it failed: {why}"));
        self.optimised_session(path, &saved, tiny)
    }

    /// Optimises the model online, saving the optimised graph at `saved` where the home allows.
    fn optimised_session(&self, path: &Path, saved: &Path, tiny: bool) -> Result<Session> {
        let online = || -> Result<SessionBuilder> {
            Ok(self.builder(tiny)?.with_optimization_level(GraphOptimizationLevel::Level3)?)
        };
        let Some(scratch) = self.optimized.scratch_for(saved) else { return Ok(online()?.commit_from_file(path)?) };
        // ONNX Runtime warns that a graph saved at this level fits only this machine: the file
        // name carries the machine's key for exactly that reason.
        let mut saving =
            online()?.with_log_level(ort::logging::LogLevel::Error)?.with_optimized_model_path(&scratch)?;
        match saving.commit_from_file(path) {
            Ok(session) => {
                self.optimized.keep(scratch, saved);
                Ok(session)
            }
            // Not a reason to fail the model: it may be the saving (a full disk) that failed.
            Err(e) => {
                tracing::warn!(error = %e, "optimising with the graph saved failed; optimising without");
                Ok(online()?.commit_from_file(path)?)
            }
        }
    }

    /// A session builder on this runtime's device, with the threading the pipeline wants.
    fn builder(&self, tiny: bool) -> Result<SessionBuilder> {
        let builder = Session::builder(&self.env)?;
        #[cfg(feature = "cuda")]
        let builder = match self.device {
            Device::Cpu => builder,
            // error_on_failure: a GPU that cannot be used is an error, not a silent CPU fallback.
            Device::Cuda(id) => builder
                .with_execution_providers([ort::ep::CUDA::default().with_device_id(id).build().error_on_failure()])?,
        };
        Ok(builder
            .with_intra_threads(if tiny { 1 } else { self.threads })?
            .with_inter_threads(1)?
            // Spinning workers steal the core that decode, matting and encode need.
            .with_intra_op_spinning(false)?)
    }
}

/// The process's ONNX Runtime environment, created from `home`'s library for `device` on first use.
fn environment(home: &Home, device: Device) -> Result<Environment> {
    let mut slot = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(env) = slot.as_ref() {
        return Ok(env.clone());
    }
    let library = home.ort_library_for(device);
    let install = if device == Device::Cpu { "make setup" } else { "make setup-cuda" };
    if !library.is_file() {
        return Err(EngineError::RuntimeMissing {
            path: library,
            reason: format!("file not found; run `{install}` to install it"),
        });
    }
    let env = ort::init_from(&library)
        .map_err(|e| EngineError::RuntimeMissing { path: library.clone(), reason: format!("{e}; run `{install}`") })?
        .with_name("clearbg")
        .build()
        .map_err(|e| EngineError::RuntimeMissing { path: library, reason: e.to_string() })?;
    *slot = Some(env.clone());
    Ok(env)
}
