//! ONNX Runtime's optimised graph of each model, saved once and reused.
//!
//! Opening a model runs ONNX Runtime's graph optimisations (constant folding, fusions, the NCHWc
//! layout for the CPU's vector width) every time: about half a second of a one-frame `original`
//! run on 2 cores (bench/startup.sh, numbers in bench/RESULTS.md), paid by every `clearbg remove`
//! and by every worker process at its first job of a tier. The first session of a model saves
//! the optimised graph here; later ones load that file with optimisation off.
//!
//! The layout step makes the saved graph specific to the CPU and to the ONNX Runtime build
//! (ONNX Runtime warns so when it writes one), so a file's name carries a hash of both beside the
//! model's sha256: another CPU or a runtime upgrade finds no file, writes its own and removes the
//! stale one. A file is written under a temporary name and renamed, so a worker never reads one
//! half written by another; a file that does not load, or loads and then fails a model run, is
//! removed and made again. Only for the CPU: a GPU session assigns the graph's nodes to its
//! provider as it is made.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::home::Home;

/// The directory of saved graphs in one clearbg home.
#[derive(Debug, Clone)]
pub(crate) struct OptimizedGraphs {
    dir: PathBuf,
    /// [`machine_key`] of this process.
    machine: String,
}

impl OptimizedGraphs {
    /// The saved graphs in `home` for the ONNX Runtime whose build string is `runtime_build`.
    pub(crate) fn new(home: &Home, runtime_build: &str) -> OptimizedGraphs {
        OptimizedGraphs { dir: home.root().join("optimized"), machine: machine_key(runtime_build) }
    }

    /// Where the optimised graph of `model` (whose bytes hash to `sha256`) is kept for this CPU
    /// and this ONNX Runtime.
    pub(crate) fn path_for(&self, model: &Path, sha256: &str) -> PathBuf {
        let stem = model.file_stem().unwrap_or_default().to_string_lossy();
        let model_key = sha256.get(..16).unwrap_or(sha256);
        self.dir.join(format!("{stem}-{model_key}-{}.onnx", self.machine))
    }

    /// A temporary file beside `saved` for ONNX Runtime to write into, or `None` where the
    /// home cannot be written (a read-only image): then the model is optimised on each load.
    pub(crate) fn scratch_for(&self, saved: &Path) -> Option<tempfile::TempPath> {
        std::fs::create_dir_all(&self.dir).ok()?;
        let stem = saved.file_stem().unwrap_or_default().to_string_lossy();
        match tempfile::Builder::new().prefix(&format!(".{stem}-")).suffix(".tmp").tempfile_in(&self.dir) {
            Ok(file) => Some(file.into_temp_path()),
            Err(e) => {
                tracing::debug!(dir = %self.dir.display(), error = %e, "not saving optimised graphs here");
                None
            }
        }
    }

    /// Moves a freshly written graph into place and removes the same model's graphs for other
    /// CPUs, runtimes or model versions.
    pub(crate) fn keep(&self, scratch: tempfile::TempPath, saved: &Path) {
        // Readable by every user of the home, as the models beside it are (a temporary file is
        // made private).
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o644));
        if let Err(e) = scratch.persist(saved) {
            tracing::warn!(path = %saved.display(), error = %e.error, "saving an optimised graph");
            return;
        }
        let kept = saved.file_name().unwrap_or_default().to_string_lossy();
        // `{stem}-{model key}-{machine key}.onnx`: the stem may hold dashes of its own.
        let Some(stem) = kept.rsplitn(3, '-').nth(2) else { return };
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != kept && name.starts_with(&format!("{stem}-")) && name.ends_with(".onnx") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Removes a saved graph that failed to load or to run (`why`), so it is made again.
    pub(crate) fn discard(&self, saved: &Path, why: &str) {
        tracing::warn!(path = %saved.display(), why, "a saved optimised graph is no good; making it again");
        let _ = std::fs::remove_file(saved);
    }
}

/// A hash of what a saved graph depends on besides the model: the ONNX Runtime build and the
/// CPU (its model and instruction-set flags, and the vector instructions this process can use).
fn machine_key(runtime_build: &str) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let first = |field: &str| {
        cpuinfo.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_once(':')).map_or("", |(_, v)| v.trim())
    };
    let vectors = vector_features();
    let mut hasher = Sha256::new();
    for part in [runtime_build, std::env::consts::ARCH, first("model name"), first("flags"), vectors.as_str()] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// The vector instruction sets this process may use, as the CPU's CPUID and the kernel's
/// register state say: what ONNX Runtime reads to choose its kernels and the NCHWc block width
/// the saved layout is built for. The kernel's `/proc/cpuinfo` is not always the same (CPUID
/// hidden or changed under a process, as scripts/avx2_only.c does; `clearcpuid=`); a graph laid
/// out for AVX-512's 16-channel blocks then fails every inference on an AVX2 path.
#[cfg(target_arch = "x86_64")]
fn vector_features() -> String {
    let mut features = Vec::new();
    macro_rules! detect {
        ($($feature:tt),*) => {
            $(if std::arch::is_x86_feature_detected!($feature) { features.push($feature); })*
        };
    }
    detect!("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512vnni", "avxvnni", "avx512bf16");
    features.join(" ")
}

/// Off x86-64 nothing is detected here; the key keeps what `/proc/cpuinfo` says of the CPU.
#[cfg(not(target_arch = "x86_64"))]
fn vector_features() -> String {
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_is_named_by_model_hash_and_machine_and_stale_ones_are_removed() {
        let home = tempfile::tempdir().unwrap();
        let graphs = OptimizedGraphs::new(&Home::at(home.path()), "a runtime");
        let model = Path::new("/models/isnet_fp32_dyn.onnx");
        let saved = graphs.path_for(model, &"ab".repeat(32));
        let name = saved.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("isnet_fp32_dyn-abababababababab-") && name.ends_with(".onnx"), "{name}");
        assert_ne!(saved, graphs.path_for(model, &"cd".repeat(32)), "another model version, another file");
        let upgraded = OptimizedGraphs::new(&Home::at(home.path()), "another runtime");
        assert_ne!(saved, upgraded.path_for(model, &"ab".repeat(32)), "another runtime, another file");

        // An older version's graph of the same model goes; another model's stays.
        let dir = home.path().join("optimized");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("isnet_fp32_dyn-0000000000000000-1111111111111111.onnx"), "old").unwrap();
        std::fs::write(dir.join("modnet_photographic-0000000000000000-1111111111111111.onnx"), "other").unwrap();
        let scratch = graphs.scratch_for(&saved).unwrap();
        std::fs::write(&scratch, "graph").unwrap();
        graphs.keep(scratch, &saved);
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, [name.to_string(), "modnet_photographic-0000000000000000-1111111111111111.onnx".into()]);
        assert_eq!(std::fs::read_to_string(&saved).unwrap(), "graph");
    }
}
