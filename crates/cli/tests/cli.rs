//! Black-box tests of the built `clearbg` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/mod.rs"]
mod common;

use common::{run, sha256_of, video_model_installed, video_size};

fn clearbg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clearbg")).args(args).output().expect("clearbg runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A clearbg home in `dir` with the set-up's runtime and models but its own saved graphs.
fn home_of_its_own(dir: &Path) -> PathBuf {
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    for sub in ["lib", "models"] {
        std::os::unix::fs::symlink(common::clearbg_home().join(sub), home.join(sub)).unwrap();
    }
    home
}

/// `clearbg remove INPUT -o OUT --model MODEL --format matte` with `home` as its home and
/// `preload` as LD_PRELOAD (empty: none).
fn matte_in(home: &Path, preload: &Path, input: &Path, out: &Path, model: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clearbg"))
        .env("CLEARBG_HOME", home)
        .env("LD_PRELOAD", preload)
        .args(["remove", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--model", model])
        .args(["--format", "matte", "-q"])
        .output()
        .unwrap()
}

/// Half a second of ffmpeg's test pattern with a tone: fast to make and to process.
fn clip(dir: &Path) -> PathBuf {
    let path = dir.join("in.mp4");
    let pattern = "testsrc2=size=96x64:rate=10:duration=0.5";
    let codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"];
    let inputs =
        ["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", pattern, "-f", "lavfi", "-i", "sine=duration=0.5"];
    run("ffmpeg", &[&inputs[..], &codecs, &[path.to_str().unwrap()]].concat());
    path
}

#[test]
fn remove_writes_the_format_its_extension_names_and_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path());
    let out = dir.path().join("cut.gif");
    let ran = clearbg(&["remove", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--model", "light"]);
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    let stdout = text(&ran.stdout);
    let summary = stdout.lines().last().unwrap();
    assert!(summary.starts_with("5 frames, "), "{summary}");
    assert!(summary.contains(&format!("sha256 {}", sha256_of(&out))), "{summary}");
    assert!(summary.contains(&format!("{} bytes", std::fs::metadata(&out).unwrap().len())), "{summary}");
    assert!(summary.ends_with("(gif, light, model on 5 frames)"), "{summary}");
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(text(&probe.stdout).trim(), "gif");
}

#[test]
fn composition_flags_place_the_subject_on_a_coloured_canvas() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path());
    let out = dir.path().join("placed.mp4");
    let ran = clearbg(&[
        "remove",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--model",
        "light",
        "--bg",
        "#ff0000",
        "--canvas",
        "320x240",
        "--anchor",
        "top-left",
        "--scale",
        "0.5",
        "--offset",
        "-10,20",
    ]);
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    assert_eq!(video_size(&out), (320, 240));
}

#[test]
fn bad_input_fails_with_one_line_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("notes.mp4");
    std::fs::write(&input, "not a video").unwrap();
    let out = dir.path().join("out.webm");
    let ran = clearbg(&["remove", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--model", "light"]);
    assert_eq!(ran.status.code(), Some(1));
    let stderr = text(&ran.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("clearbg: invalid input: not a readable video file"), "{stderr}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the input is left");
}

#[test]
fn contradictory_or_unknown_options_are_refused_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path());
    let input = input.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["-o", "x.mp4"], "mp4 cannot carry transparency"),
        (&["-o", "x.webm", "--model", "turbo"], "unknown model \"turbo\""),
        (&["-o", "x.avi"], "cannot tell the output format"),
        (&["-o", "x.webm", "--format", "mkv"], "unknown output format \"mkv\""),
        (&["-o", "x.webm", "--anchor", "upper-left"], "unknown anchor"),
    ];
    for (flags, reason) in cases {
        let mut args = vec!["remove", input];
        args.extend_from_slice(flags);
        let ran = clearbg(&args);
        assert_eq!(ran.status.code(), Some(1), "{flags:?}");
        assert!(text(&ran.stderr).contains(reason), "{flags:?}: {}", text(&ran.stderr));
    }
}

#[test]
fn models_lists_every_tier_and_that_it_loads() {
    let ran = clearbg(&["models"]);
    assert!(ran.status.success(), "{}{}", text(&ran.stdout), text(&ran.stderr));
    let stdout = text(&ran.stdout);
    for (tier, file) in [
        ("light", "mp_selfie_256.onnx"),
        ("human", "modnet_photographic.onnx"),
        ("original", "isnet_fp32_dyn.onnx"),
        ("original", "isnet_int8_dyn.onnx"),
        ("pro", "isnet_fp32_dyn.onnx"),
        ("pro", "isnet_int8_dyn.onnx"),
        ("pro", "modnet_photographic.onnx"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(tier) && l.contains(file))
            .unwrap_or_else(|| panic!("{tier} {file}:\n{stdout}"));
        assert!(line.contains(" yes "), "{line}");
        assert!(line.contains("Apache-2.0") || line.contains("MIT"), "{line}");
    }
    // The opt-in GPL model: listed either way; only installed, it loads.
    let line = stdout.lines().find(|l| l.starts_with("video") && l.contains("rvm_mnv3.onnx")).expect(&stdout);
    assert!(line.contains("GPL-3.0"), "{line}");
    if video_model_installed() {
        assert!(line.contains(" yes "), "{line}");
    } else {
        assert!(
            stdout.contains("rvm_mnv3.onnx: not installed") && stdout.contains("make setup-video-matting"),
            "{stdout}"
        );
    }
}

#[test]
fn a_missing_runtime_is_an_error_that_names_the_setup_command() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path());
    let out = dir.path().join("out.webm");
    let empty_home = dir.path().join("no-home");
    let ran = Command::new(env!("CARGO_BIN_EXE_clearbg"))
        .env("CLEARBG_HOME", &empty_home)
        .args(["remove", input.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(ran.status.code(), Some(1), "an error, not a panic");
    let stderr = text(&ran.stderr);
    assert!(stderr.contains("ONNX Runtime could not be loaded") && stderr.contains("make setup"), "{stderr}");
    let models =
        Command::new(env!("CARGO_BIN_EXE_clearbg")).env("CLEARBG_HOME", &empty_home).arg("models").output().unwrap();
    assert_eq!(models.status.code(), Some(1));
    assert!(text(&models.stdout).contains("make setup"));
}

/// ONNX Runtime's saved optimised graph is laid out for the vector width of the CPU it was made
/// on. A process that sees other vector instructions (here this CPU with AVX-512 and VNNI hidden
/// from CPUID by scripts/avx2_only.c, as an AVX2-only CPU would show it) must make its own
/// graph, not load that one and fail every inference. It did, when the graph's name was keyed
/// on `/proc/cpuinfo`, which the library does not change.
#[cfg(target_arch = "x86_64")]
#[test]
fn a_process_that_sees_other_vector_instructions_makes_its_own_optimised_graph() {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        eprintln!("SKIPPED: this CPU has no AVX-512 to hide");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shim = dir.path().join("avx2_only.so");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/avx2_only.c");
    run("gcc", &["-O2", "-shared", "-fPIC", source.to_str().unwrap(), "-o", shim.to_str().unwrap()]);
    let faulting = Command::new("true").env("LD_PRELOAD", &shim).status().unwrap();
    if !faulting.success() {
        eprintln!("SKIPPED: no CPUID faulting on this machine, so nothing can be hidden");
        return;
    }
    let home = home_of_its_own(dir.path());
    let input = clip(dir.path());
    let out = dir.path().join("matte.mp4");
    let saved_graph = || {
        let names: Vec<_> =
            std::fs::read_dir(home.join("optimized")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        names[0].clone()
    };
    let mut graphs = Vec::new();
    for preload in [Path::new(""), &shim] {
        let ran = matte_in(&home, preload, &input, &out, "human");
        assert!(ran.status.success(), "LD_PRELOAD={preload:?}: {}", text(&ran.stderr));
        graphs.push(saved_graph());
    }
    assert_ne!(graphs[0], graphs[1], "the AVX2 path's own graph replaced the AVX-512 one");
}

#[test]
fn a_saved_graph_that_loads_but_fails_to_run_is_made_again_and_the_job_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_of_its_own(dir.path());
    let input = clip(dir.path());
    let remove = |model: &str, out: &Path| {
        let ran = matte_in(&home, Path::new(""), &input, out, model);
        assert!(ran.status.success(), "{model}: {}", text(&ran.stderr));
    };
    let saved_graph = |stem: &str| {
        let entries = std::fs::read_dir(home.join("optimized")).unwrap();
        let names: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        let mut found = names.iter().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(stem));
        found.next().unwrap_or_else(|| panic!("no saved graph of {stem} in {names:?}")).clone()
    };
    let (first, again) = (dir.path().join("first.mp4"), dir.path().join("again.mp4"));
    remove("light", &dir.path().join("light.mp4"));
    remove("human", &first);
    // The selfie model's graph under MODNet's name: a valid graph with the same input and output
    // names, so it loads, and fixed at 256x256, so it fails on MODNet's input. A graph laid out
    // for vector instructions this process lacks did the same before the name held them.
    let (selfie, modnet) = (saved_graph("mp_selfie_256-"), saved_graph("modnet_photographic-"));
    std::fs::copy(&selfie, &modnet).unwrap();
    remove("human", &again);
    assert_eq!(sha256_of(&again), sha256_of(&first), "the same matte as with the graph made in the first place");
    assert_ne!(std::fs::read(&modnet).unwrap(), std::fs::read(&selfie).unwrap(), "MODNet's graph was saved again");
}

#[test]
fn a_device_this_build_cannot_use_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let worker = |device: &str| {
        Command::new(env!("CARGO_BIN_EXE_clearbg"))
            .env("CLEARBG_DATA_DIR", dir.path().join("data"))
            .args(["worker", "--device", device])
            .output()
            .unwrap()
    };
    let bad = worker("gpu");
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    assert!(text(&bad.stderr).contains("use cpu, cuda or cuda:N"), "{}", text(&bad.stderr));
    // Without the `cuda` feature the worker says so and how to get one; with it, on a machine
    // without that GPU, it says the device is not usable. Either way it exits, taking no job.
    let cuda = worker("cuda:1");
    assert_eq!(cuda.status.code(), Some(1), "an error, not a panic or a worker that runs on");
    let stderr = text(&cuda.stderr);
    let how = if cfg!(feature = "cuda") { "cuda:1" } else { "--features cuda" };
    assert!(stderr.contains("cuda:1") && stderr.contains(how), "{stderr}");
}
