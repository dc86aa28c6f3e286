//! The opt-in `video` tier (Robust Video Matting, recurrent): a real clip end to end, its memory
//! reset on a scene cut, and the error when it is not installed. The tests that need the model
//! skip, saying so, where it is not installed (`make setup-video-matting` installs it; CI does).

mod common;

use clearbg_engine::{matte, model, Background, Home, OutputFormat, Runtime, Segmenter, Tier};
use common::*;

/// The video tier's segmenter, or `None` (with a note on stderr) when it is not installed.
fn video_segmenter(test: &str) -> Option<Segmenter> {
    if !model::is_installed(&home(), Tier::Video) {
        eprintln!(
            "SKIPPED {test}: the video tier's model is not installed here (opt-in, GPL-3.0: make setup-video-matting)"
        );
        return None;
    }
    Some(segmenter(Tier::Video))
}

#[test]
fn the_video_tier_mattes_a_person_in_real_footage() {
    let Some(mut seg) = video_segmenter("the_video_tier_mattes_a_person_in_real_footage") else { return };
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("carphone-1s.mp4");
    ffmpeg(&[
        "-i",
        carphone().to_str().unwrap(),
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        clip.to_str().unwrap(),
    ]);
    let out = dir.path().join("video.zip");
    let summary = run(&mut seg, &request(&clip, &out, OutputFormat::PngSequence, Background::Transparent)).unwrap();
    assert_eq!(summary.tier, Tier::Video);
    let decoded = decode_png_zip(&out, dir.path());
    assert_eq!(decoded.frames.len() as u64, summary.frames);
    let (w, h) = (decoded.width as usize, decoded.height as usize);
    for (i, frame) in decoded.frames.iter().enumerate().step_by(5) {
        let alpha: Vec<f64> = frame.chunks_exact(4).map(|p| p[3] as f64 / 255.0).collect();
        let total: f64 = alpha.iter().sum();
        let coverage = total / alpha.len() as f64;
        assert!((0.25..0.8).contains(&coverage), "frame {i}: coverage {coverage:.2}");
        let cx = alpha.iter().enumerate().map(|(k, a)| (k % w) as f64 * a).sum::<f64>() / total / w as f64;
        assert!((0.35..0.65).contains(&cx), "frame {i}: matte centred at x={cx:.2}");
        // Background (the car's roof lining, top left) is clear, the face (upper middle) opaque.
        let mean_over = |xs: std::ops::Range<usize>, ys: std::ops::Range<usize>| {
            let n = xs.len() * ys.len();
            ys.flat_map(|y| xs.clone().map(move |x| y * w + x)).map(|k| alpha[k]).sum::<f64>() / n as f64
        };
        let corner = mean_over(0..w / 6, 0..h / 6);
        assert!(corner < 0.05, "frame {i}: top-left background alpha {corner:.2}");
        let face = mean_over(w * 4 / 10..w * 6 / 10, h * 3 / 10..h * 5 / 10);
        assert!(face > 0.95, "frame {i}: face alpha {face:.2}");
    }
}

/// Two different shots back to back: on the cut the recurrent state is dropped, so from there on
/// the masks are exactly those of a fresh run on the second shot alone; and nothing before the
/// cut counts as one.
#[test]
fn the_recurrent_state_is_reset_on_a_scene_cut() {
    let Some(mut seg) = video_segmenter("the_recurrent_state_is_reset_on_a_scene_cut") else { return };
    let dir = tempfile::tempdir().unwrap();
    let joined = two_shots_clip(dir.path());
    let frames = frames_of(&joined);
    assert_eq!(frames.len(), 24);
    seg.reset_history();
    let through: Vec<Vec<f32>> = frames.iter().map(|f| seg.segment_yuv(f).unwrap().0.data).collect();
    assert_eq!(seg.scene_cuts(), 1, "exactly one cut: between the two shots");
    let person = through[11].iter().filter(|&&a| a >= 0.5).count() as f64 / through[11].len() as f64;
    assert!(person > 0.25, "the first shot is a person: coverage {person:.2}");

    let mut fresh = segmenter(Tier::Video);
    let second_shot: Vec<Vec<f32>> = frames[12..].iter().map(|f| fresh.segment_yuv(f).unwrap().0.data).collect();
    assert!(through[12..] == second_shot[..], "after the cut, the run must have forgotten the first shot");

    // Within one shot the memory is kept (no false cut), and it matters: the same frames give
    // other masks after six frames of history than from a blank memory. So the equality above
    // is the reset's doing.
    let mut within = segmenter(Tier::Video);
    let after_history: Vec<Vec<f32>> = frames[..12].iter().map(|f| within.segment_yuv(f).unwrap().0.data).collect();
    assert_eq!(within.scene_cuts(), 0);
    let mut blank = segmenter(Tier::Video);
    let from_blank: Vec<Vec<f32>> = frames[6..12].iter().map(|f| blank.segment_yuv(f).unwrap().0.data).collect();
    let largest = after_history[6..]
        .iter()
        .zip(&from_blank)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0f32, f32::max);
    assert!(largest > 0.01, "the recurrent state changes the masks (largest difference {largest})");
}

/// The cut test on real footage: bikes.mp4 (street scenes, 250 frames) has five cuts, at frames
/// 30, 76, 137, 187 and 242 (looked at), and fast pans between them. Needs no model.
#[test]
fn scene_cuts_in_real_footage_are_found_and_motion_is_not_one() {
    let (w, h) = (512usize, 288usize); // what the video tier sees of a 1280x720 frame
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(home().fixtures_dir().join("bikes.mp4"))
        .args(["-vf", &format!("scale={w}:{h}"), "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let frames: Vec<Vec<f32>> =
        out.stdout.chunks_exact(w * h).map(|f| f.iter().map(|&v| v as f32 / 255.0).collect()).collect();
    assert_eq!(frames.len(), 250);
    let cuts: Vec<usize> =
        (1..frames.len()).filter(|&i| matte::is_scene_cut(&frames[i - 1], &frames[i], w, h)).collect();
    assert_eq!(cuts, [30, 76, 137, 187, 242]);
}

/// A fresh segmenter and one reset with `reset_history` give the same masks: a video never sees
/// the previous one's memory (the pipeline resets before each video).
#[test]
fn each_video_starts_from_a_blank_memory() {
    let Some(mut seg) = video_segmenter("each_video_starts_from_a_blank_memory") else { return };
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("carphone-short.mp4");
    ffmpeg(&[
        "-i",
        carphone().to_str().unwrap(),
        "-frames:v",
        "6",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        clip.to_str().unwrap(),
    ]);
    let frames = frames_of(&clip);
    let first: Vec<Vec<f32>> = frames.iter().map(|f| seg.segment_yuv(f).unwrap().0.data).collect();
    seg.reset_history();
    let again: Vec<Vec<f32>> = frames.iter().map(|f| seg.segment_yuv(f).unwrap().0.data).collect();
    assert_eq!(first, again);
    // And the pipeline does reset: two runs of the same file give the same output, byte for byte.
    let (a, b) = (dir.path().join("a.zip"), dir.path().join("b.zip"));
    let first_run = run(&mut seg, &request(&clip, &a, OutputFormat::PngSequence, Background::Transparent)).unwrap();
    let second_run = run(&mut seg, &request(&clip, &b, OutputFormat::PngSequence, Background::Transparent)).unwrap();
    assert_eq!(first_run.sha256, second_run.sha256);
}

/// Without the opt-in install, the tier is refused with `model_not_installed`, naming the
/// command that installs it; it is not the user's fault (`is_input_error` false).
#[test]
fn the_video_tier_not_installed_is_a_clear_error() {
    let home = home();
    let dir = tempfile::tempdir().unwrap();
    // A home with ONNX Runtime and the default models but not the opt-in one.
    let other = dir.path().join("home");
    std::fs::create_dir_all(other.join("models")).unwrap();
    std::os::unix::fs::symlink(home.root().join("lib"), other.join("lib")).unwrap();
    for m in model::MODEL_FILES.iter().filter(|m| m.opt_in.is_none()) {
        std::os::unix::fs::symlink(home.models_dir().join(m.file), other.join("models").join(m.file)).unwrap();
    }
    let other = Home::at(&other);
    assert!(!model::is_installed(&other, Tier::Video));
    let runtime = Runtime::load(&other, 1).unwrap();
    let err = Segmenter::new(&runtime, &other, Tier::Video).err().expect("refused");
    assert_eq!(err.code(), "model_not_installed");
    assert!(!err.is_input_error());
    let message = err.to_string();
    assert!(message.contains("make setup-video-matting") && message.contains("rvm_mnv3.onnx"), "{message}");
    // The default tiers are unaffected, and the listing says "not installed" without a problem.
    Segmenter::new(&runtime, &other, Tier::Light).unwrap();
    let status = model::inspect(&other, Some(&runtime));
    let rvm = status.iter().find(|s| s.model.opt_in.is_some()).unwrap();
    assert!(!rvm.installed && rvm.problem.is_none());
    assert!(status.iter().filter(|s| s.model.opt_in.is_none()).all(|s| s.installed && s.problem.is_none()));
}
