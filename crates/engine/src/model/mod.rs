//! The neural models: which file serves which tier, how it is verified and loaded, and how a
//! frame becomes a foreground mask ([`Segmenter`]).
//!
//! | tier | model | good at | CPU cost (2 threads) |
//! |---|---|---|---|
//! | `light` | MediaPipe selfie segmentation, 256x256 | people; fastest; coarse edges | ~5 ms |
//! | `human` | MODNet portrait matting, short side 512 | people, real hair matte | ~0.5 s at 720p |
//! | `original` | ISNet (DIS), 1024x1024, int8 on a CPU ([`Precision`]) | any salient subject | ~0.4-1 s (fp32: ~0.75-2 s) |
//! | `pro` | ISNet 1024 fused with MODNet near the subject, finer edges | best quality | ~1-2.4 s |
//! | `video` (opt-in, GPL-3.0) | Robust Video Matting, recurrent, long side <= 512 | people in video, steady | see bench/RESULTS.md |

mod catalogue;
mod optimized;
mod recurrent;
mod runtime;
mod segmenter;

pub use catalogue::{ModelFile, ModelStatus, Precision, Tier, MODEL_FILES};
pub use runtime::{Device, Runtime};
pub use segmenter::{Interrupt, Segmenter};

use crate::error::EngineError;
use crate::home::Home;

/// Checks every model file: present, matching its pinned sha256, and loadable by ONNX Runtime
/// (when `runtime` is given). Never fails: problems are reported per file. An opt-in model that
/// was never installed is not a problem, only `installed: false`.
pub fn inspect(home: &Home, runtime: Option<&Runtime>) -> Vec<ModelStatus> {
    let dir = home.models_dir();
    MODEL_FILES
        .iter()
        .map(|model| {
            let path = dir.join(model.file);
            let installed = path.exists();
            let sha256 = catalogue::sha256_of(&path).ok();
            let problem = match catalogue::verify(&dir, model.file) {
                Err(_) if !installed && model.opt_in.is_some() => None,
                Err(EngineError::ModelMissing { reason, .. } | EngineError::ModelNotInstalled { reason, .. }) => {
                    Some(reason)
                }
                Err(other) => Some(other.to_string()),
                Ok(sha256) => match runtime {
                    None => Some("ONNX Runtime is not available".into()),
                    Some(rt) => rt.session(&path, &sha256, false).err().map(|e| format!("does not load: {e}")),
                },
            };
            ModelStatus { model: *model, sha256, problem, installed }
        })
        .collect()
}

/// Checks that every file `tier` needs is present and byte-identical to its pinned sha256: the
/// health check's question "can this model run here?". A matching hash means the very bytes
/// that the set-up step verified and the tests load, so a load failure could only come from
/// ONNX Runtime itself, which has its own check. Reads the whole file (about 0.1 s for the
/// 176 MB ISNet with the CPU's SHA instructions); callers cache the answer.
/// Every file with a problem is named, not only the first.
pub fn check_tier(home: &Home, tier: Tier) -> std::result::Result<(), String> {
    let dir = home.models_dir();
    let problems: Vec<String> = tier
        .files()
        .iter()
        .filter_map(|file| {
            catalogue::verify(&dir, file).err().map(|e| match e {
                EngineError::ModelMissing { reason, .. } | EngineError::ModelNotInstalled { reason, .. } => {
                    format!("{file}: {reason}")
                }
                other => format!("{file}: {other}"),
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Whether every file `tier` needs is on disk (not whether it is intact: [`check_tier`] says
/// that). An opt-in tier that is not installed is no fault of the install, only a choice.
pub fn is_installed(home: &Home, tier: Tier) -> bool {
    tier.files().iter().all(|file| home.models_dir().join(file).exists())
}
