//! Adaptive keyframes on real footage, end to end through the pipeline: the model runs on a
//! fraction of the frames, the matte stays close to the every-frame one, a scene cut forces a
//! keyframe, the cheap tier opts out, and a stretch of keyframes is the every-frame matte.

mod common;

use std::path::{Path, PathBuf};

use clearbg_engine::keyframes::{Keyframer, Rules};
use clearbg_engine::matte::{shipped_mode, Matter};
use clearbg_engine::{Background, Keyframes, OutputFormat, Tier};
use common::*;

/// The first `seconds` of carphone (a man talking in a car, 176x144).
fn carphone_clip(dir: &Path, seconds: &str) -> PathBuf {
    let clip = dir.join(format!("carphone-{seconds}s.mp4"));
    ffmpeg(
        &["-i", carphone().to_str().unwrap(), "-t", seconds, "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18"]
            .into_iter()
            .chain([clip.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    clip
}

/// Runs `tier` on `clip` in `mode`; returns the summary and each frame's alpha plane.
fn matte(tier: Tier, clip: &Path, mode: Keyframes, dir: &Path) -> (clearbg_engine::Summary, Vec<Vec<u8>>) {
    let out = dir.join(format!("{tier}-{mode}.zip"));
    let mut req = request(clip, &out, OutputFormat::PngSequence, Background::Transparent);
    req.keyframes = mode;
    let summary = run(&mut segmenter(tier), &req).unwrap();
    let decoded = decode_png_zip(&out, &dir.join(format!("{tier}-{mode}")));
    let alphas = (0..decoded.frames.len()).map(|i| decoded.alpha(i)).collect();
    (summary, alphas)
}

fn iou(a: &[u8], b: &[u8]) -> f64 {
    let (mut inter, mut union) = (0u64, 0u64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x >= 128, y >= 128);
        inter += (x && y) as u64;
        union += (x || y) as u64;
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// `human` on two seconds of a talking head: the model runs on a fraction of the frames, and
/// every frame's matte overlaps the every-frame matte closely.
#[test]
fn adaptive_keyframes_run_the_model_less_and_keep_the_matte() {
    let dir = tempfile::tempdir().unwrap();
    let clip = carphone_clip(dir.path(), "2");
    let (every, reference) = matte(Tier::Human, &clip, Keyframes::Every, dir.path());
    let (adaptive, alphas) = matte(Tier::Human, &clip, Keyframes::Adaptive, dir.path());
    assert_eq!(every.frames, 60);
    assert_eq!(every.keyframes.keyframes, 60, "every: the model on each frame");
    assert_eq!(adaptive.frames, 60);
    let ran = adaptive.keyframes.keyframes;
    assert!((2..=30).contains(&ran), "adaptive: the model on a fraction of the frames, ran on {ran}");
    assert_eq!(alphas.len(), reference.len());
    let ious: Vec<f64> = alphas.iter().zip(&reference).map(|(a, b)| iou(a, b)).collect();
    let mean = ious.iter().sum::<f64>() / ious.len() as f64;
    let worst = ious.iter().cloned().fold(1.0, f64::min);
    assert!(mean >= 0.95 && worst >= 0.85, "IoU against every-frame: mean {mean:.3}, worst {worst:.3}");
}

/// A cut to another shot is a keyframe, whatever the gap; `light` (a 5 ms model) always runs.
#[test]
fn a_scene_cut_forces_a_keyframe_and_light_runs_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let joined = two_shots_clip(dir.path());
    let (human, _) = matte(Tier::Human, &joined, Keyframes::Adaptive, dir.path());
    assert_eq!(human.frames, 24);
    assert!(human.keyframes.cuts >= 1, "the cut ran the model: {:?}", human.keyframes);
    assert!(human.keyframes.keyframes < 24, "{:?}", human.keyframes);
    let (light, _) = matte(Tier::Light, &joined, Keyframes::Adaptive, dir.path());
    assert_eq!(light.keyframes.keyframes, 24, "light opts out: {:?}", light.keyframes);
}

/// Where the planner runs the model on every frame anyway (here its gap bound is one frame; on
/// footage where keyframes keep finding the carried mask wrong it gets there by itself), the
/// shipped matte is the every-frame matte byte for byte: the stabiliser is handed the motion it
/// would have measured itself.
#[test]
fn a_stretch_of_keyframes_is_the_every_frame_matte() {
    let dir = tempfile::tempdir().unwrap();
    let frames = frames_of(&carphone_clip(dir.path(), "0.5"));
    let mattes = |rules: Option<Rules>| {
        let (mut seg, mut planner) = (segmenter(Tier::Human), Keyframer::with_rules(rules, 30.0));
        let mut matter = Matter::new(Tier::Human, shipped_mode(Tier::Human));
        let mut alphas = Vec::new();
        for frame in frames.iter().cloned() {
            for (frame, segmented) in planner.push(&mut seg, frame).unwrap() {
                alphas.push(matter.alpha_of(&frame, segmented));
            }
        }
        assert!(planner.finish().is_empty(), "every frame settled at once");
        (planner.stats().keyframes, alphas)
    };
    let (ran, every) = mattes(None);
    let (ran_adaptive, adaptive) = mattes(Some(Rules { max_gap_frames: 1, ..Rules::default() }));
    let n = frames.len() as u64;
    assert!(n >= 10, "{n} frames decoded");
    assert_eq!((ran, ran_adaptive), (n, n), "the model on each frame");
    assert!(adaptive == every, "the same alpha on every frame");
}
