//! Runs a tier's model once per frame and writes the alpha of every [`MatteMode`] side by side,
//! for the quality evaluation in `eval/` (`make eval`).
//!
//! ```text
//! cargo build --release --example matte_eval
//! target/release/examples/matte_eval <light|human|original|pro|video> INPUT OUTDIR [--frames N] [--threads N]
//!     [--keyframes every|adaptive] [--side N] [--precision int8|fp32]
//! ```
//!
//! `--keyframes` (default `every`) picks where the model runs, through the engine's own
//! [`Keyframer`] (the pipeline's default is `adaptive`); `--side` runs the first model at another
//! reference side (ISNet's square side, MODNet's short side) to measure what size costs;
//! `--precision` ISNet's number format (default: the pipeline's on a CPU, int8).
//!
//! Frames come from the engine's own probe, decoder flags and frame reader, and each mode goes
//! through the engine's own [`Matter`], so the `stabilised` output is byte for byte what
//! `clearbg remove` puts in the alpha channel (`eval/run.py` checks this on one clip). Writes, in
//! OUTDIR, one file per plane kind with the frames' 8-bit planes back to back:
//! `luma.u8` (the decoded Y plane), `stabilised.u8`, `guided.u8`, `bilinear.u8`; and `meta.json`
//! (`width`, `height`, `frames`, `mask_width`, `mask_height`, `infer_seconds` (model runs and
//! carried frames), `keyframes` (the indices of the frames the model ran on), `stats`, and with
//! `--keyframes every`, `carried_iou`: per frame after the first of a shot, how well the model's
//! mask agrees with its previous one carried along the motion, see [`agreement`]).
//!
//! For tuning experiments only, `CLEARBG_STABILISER="follow=0.3,still=0.02,moving=0.08,search=6"`
//! (any subset) overrides the stabiliser's defaults in the `stabilised` output, and
//! `CLEARBG_EDGES="radius=1,eps=1e-5"` the guided filter's in the `guided` and `stabilised` ones,
//! and `CLEARBG_KEYFRAME_RULES="subject_shift=0.01,max_gap_frames=8"` (any of [`Rules`]' fields)
//! the adaptive planner's.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clearbg_engine::frame::{Mask, YuvFrame};
use clearbg_engine::keyframes::{rules_for, Keyframer, Keyframes, Rules, Segmented, MOTION_SIDE};
use clearbg_engine::matte::{edge_params, unit_floats, EdgeParams, MatteMode, Matter, Motion, TemporalStabiliser};
use clearbg_engine::{probe, video, Device, Home, Limits, Precision, Runtime, Segmenter, Tier};

const MODES: [(MatteMode, &str); 3] =
    [(MatteMode::Stabilised, "stabilised"), (MatteMode::Guided, "guided"), (MatteMode::Bilinear, "bilinear")];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("matte_eval: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Failure> {
    let usage = "usage: matte_eval <light|human|original|pro|video> INPUT OUTDIR [--frames N] [--threads N] \
                 [--keyframes every|adaptive] [--side N] [--precision int8|fp32]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args.len() % 2 == 0 {
        return Err(usage.into());
    }
    let tier: Tier = args[0].parse()?;
    let (input, out_dir) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let (mut max_frames, mut threads, mut keyframes, mut side) = (u64::MAX, 0usize, Keyframes::Every, None);
    let mut precision = Precision::for_device(Device::Cpu);
    for pair in args[3..].chunks(2) {
        match pair[0].as_str() {
            "--frames" => max_frames = pair[1].parse()?,
            "--threads" => threads = pair[1].parse()?,
            "--keyframes" => keyframes = pair[1].parse()?,
            "--side" => side = Some(pair[1].parse()?),
            "--precision" => precision = pair[1].parse()?,
            _ => return Err(usage.into()),
        }
    }

    let home = Home::from_env();
    let runtime = Runtime::load(&home, threads)?;
    let mut segmenter = Segmenter::at_precision(&runtime, &home, tier, precision)?;
    if let Some(side) = side {
        segmenter = segmenter.with_input_side(side);
    }
    let info = probe(&input, &Limits::default(), &|| false)?;
    let mut keyframer = Keyframer::with_rules(rules_from_env(rules_for(tier, keyframes))?, info.fps.as_f64());
    let mut decoder = Command::new("ffmpeg")
        .args(video::decoder_args(&input, &info))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Stopping early (--frames) breaks ffmpeg's pipe, which it reports; nothing else to hear.
        .stderr(if max_frames == u64::MAX { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .map_err(|e| format!("starting ffmpeg: {e}"))?;
    let mut frames_in = video::FrameReader::new(decoder.stdout.take().expect("stdout is piped"), &info);

    std::fs::create_dir_all(&out_dir)?;
    let create = |name: &str| -> std::io::Result<BufWriter<File>> {
        Ok(BufWriter::new(File::create(out_dir.join(format!("{name}.u8")))?))
    };
    let mut luma_out = create("luma")?;
    let mut outs = Vec::new();
    let stabiliser = stabiliser_from_env()?;
    let edges = edges_from_env(edge_params(tier))?;
    for (mode, name) in MODES {
        outs.push((Matter::new(tier, mode).with_stabiliser(stabiliser.clone()).with_edges(edges), create(name)?));
    }
    let (mut frames, mut written, mut busy, mut mask_size, mut keyframe_indices) =
        (0u64, 0u64, Duration::ZERO, (0, 0), Vec::new());
    let (mut previous, mut carried_iou): (Option<(Vec<f32>, Mask)>, Vec<f64>) = (None, Vec::new());
    let mut write = |frame: YuvFrame, segmented: Segmented| -> std::io::Result<()> {
        if keyframes == Keyframes::Every {
            let luma = unit_floats(&segmented.luma);
            if let Some(iou) = previous
                .take()
                .and_then(|(prev_luma, prev_mask)| agreement(&prev_luma, &prev_mask, &luma, &segmented.mask))
            {
                carried_iou.push(iou);
            }
            previous = Some((luma, segmented.mask.clone()));
        }
        if segmented.keyframe.is_some() {
            keyframe_indices.push(written);
        }
        mask_size = (segmented.mask.width, segmented.mask.height);
        for (matter, out) in &mut outs {
            out.write_all(&matter.alpha_of(&frame, segmented.clone()))?;
        }
        luma_out.write_all(frame.y())?;
        written += 1;
        Ok(())
    };
    while frames < max_frames {
        let Some(frame) = frames_in.next_frame()? else { break };
        let started = Instant::now();
        let settled = keyframer.push(&mut segmenter, frame)?;
        busy += started.elapsed();
        for (frame, segmented) in settled {
            write(frame, segmented)?;
        }
        frames += 1;
    }
    for (frame, segmented) in keyframer.finish() {
        write(frame, segmented)?;
    }
    drop(frames_in);
    let _ = decoder.kill(); // only when --frames stopped early; it has exited otherwise
    decoder.wait()?;
    for (_, mut out) in outs {
        out.flush()?;
    }
    luma_out.flush()?;
    if frames == 0 {
        return Err("no frame decoded".into());
    }
    let meta = serde_json::json!({
        "width": info.width, "height": info.height, "frames": frames,
        "mask_width": mask_size.0, "mask_height": mask_size.1, "infer_seconds": busy.as_secs_f64(),
        "keyframes": keyframe_indices, "carried_iou": carried_iou, "stats": format!("{:?}", keyframer.stats()),
    });
    std::fs::write(out_dir.join("meta.json"), meta.to_string())?;
    println!("{meta}");
    Ok(())
}

type Failure = Box<dyn std::error::Error>;

/// Applies the tuning overrides in environment variable `var` ("key=value,key=value"), each
/// through `set`, which answers whether it knows the key.
fn overrides(var: &str, mut set: impl FnMut(&str, &str) -> Result<bool, Failure>) -> Result<(), Failure> {
    let Ok(spec) = std::env::var(var) else { return Ok(()) };
    for item in spec.split(',').filter(|i| !i.is_empty()) {
        let (key, value) = item.split_once('=').ok_or(format!("{var}: expected key=value"))?;
        if !set(key, value)? {
            return Err(format!("{var}: unknown key {key}").into());
        }
    }
    Ok(())
}

/// The tier's edge parameters, with any overrides from `CLEARBG_EDGES`.
fn edges_from_env(mut e: EdgeParams) -> Result<EdgeParams, Failure> {
    overrides("CLEARBG_EDGES", |key, value| {
        match key {
            "radius" => e.radius = value.parse()?,
            "eps" => e.eps = value.parse()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(e)
}

/// The stabiliser, with any overrides from `CLEARBG_STABILISER`.
fn stabiliser_from_env() -> Result<TemporalStabiliser, Failure> {
    let mut s = TemporalStabiliser::default();
    overrides("CLEARBG_STABILISER", |key, value| {
        match key {
            "follow" => s.follow = value.parse()?,
            "still" => s.still = value.parse()?,
            "moving" => s.moving = value.parse()?,
            "search" => s.search = value.parse()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(s)
}

/// The planner's rules (`None`: every frame), with any overrides from `CLEARBG_KEYFRAME_RULES`.
fn rules_from_env(rules: Option<Rules>) -> Result<Option<Rules>, Failure> {
    let Some(mut r) = rules else { return Ok(None) };
    overrides("CLEARBG_KEYFRAME_RULES", |key, value| {
        match key {
            "max_gap_frames" => r.max_gap_frames = value.parse()?,
            "max_gap_seconds" => r.max_gap_seconds = value.parse()?,
            "cut" => r.cut = value.parse()?,
            "drift_budget" => r.drift_budget = value.parse()?,
            "subject_shift" => r.subject_shift = value.parse()?,
            "area_drift" => r.area_drift = value.parse()?,
            "max_gap_without_subject" => r.max_gap_without_subject = value.parse()?,
            "agreement" => r.agreement = value.parse()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Some(r))
}

/// How well the model's mask agrees with its own previous mask carried along the picture's
/// motion (the keyframe planner's motion and carry): IoU of alpha >= 0.5 on the mask's grid.
/// `None` across a new shot, where nothing carries over. About what a carried frame can score
/// against a reference whose model changes its mind from frame to frame.
fn agreement(prev_luma: &[f32], prev_mask: &Mask, luma: &[f32], mask: &Mask) -> Option<f64> {
    let (w, h) = (mask.width as usize, mask.height as usize);
    let search = TemporalStabiliser::default().search;
    let motion = Motion::measure_within(prev_luma, luma, w, h, search, MOTION_SIDE);
    if motion.unexplained() >= Rules::default().cut {
        return None;
    }
    Some(motion.carry(prev_mask).agreement(mask))
}
