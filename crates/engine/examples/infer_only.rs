//! Model inference alone, on the same frames `clearbg remove` sees: the ceiling the end-to-end
//! pipeline is measured against in `bench/run.sh`.
//!
//! ```text
//! cargo build --release --example infer_only
//! target/release/examples/infer_only <light|human|original|pro|video> INPUT [--threads N]
//! ```
//!
//! Prints one JSON line, `{"frames":N,"seconds":S,"fps":F}`, where `seconds` is the sum of the
//! `Segmenter::segment_yuv` calls only: decoding, model loading and start-up are excluded, and the
//! decoder is kept idle while the clock runs, so this is what the model costs per frame with
//! nothing else in the way.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clearbg_engine::{probe, video, Home, Limits, Runtime, Segmenter, Tier};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("infer_only: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: infer_only <light|human|original|pro|video> INPUT [--threads N]";
    let tier: Tier = args.next().ok_or(usage)?.parse()?;
    let input = PathBuf::from(args.next().ok_or(usage)?);
    let threads = match (args.next().as_deref(), args.next()) {
        (None, _) => 0,
        (Some("--threads"), Some(n)) => n.parse()?,
        _ => return Err(usage.into()),
    };

    // Same thread count rule and same model loading as `clearbg remove --threads N`.
    let home = Home::from_env();
    let runtime = Runtime::load(&home, threads)?;
    let mut segmenter = Segmenter::new(&runtime, &home, tier)?;

    // The engine's own probe, decoder flags and frame reader, so the frames are exactly the
    // ones `clearbg remove` segments.
    let info = probe(&input, &Limits::default(), &|| false)?;
    let mut decoder = Command::new("ffmpeg")
        .args(video::decoder_args(&input, &info))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting ffmpeg: {e}"))?;
    let mut frames_in = video::FrameReader::new(decoder.stdout.take().expect("stdout is piped"), &info);

    // Frames are streamed, never accumulated, so a long clip costs no more memory than a short
    // one. One frame is read ahead before the clock starts: the decoder then blocks on the full
    // pipe and hardly competes with the model for the cores.
    let mut next = frames_in.next_frame()?;
    let mut frames = 0u64;
    let mut busy = Duration::ZERO;
    while let Some(frame) = next {
        next = frames_in.next_frame()?;
        let started = Instant::now();
        let segmented = segmenter.segment_yuv(&frame)?;
        busy += started.elapsed();
        std::hint::black_box(segmented);
        frames += 1;
    }
    let status = decoder.wait()?;
    if !status.success() {
        return Err(format!("ffmpeg failed to decode {}: {status}", input.display()).into());
    }
    if frames == 0 {
        return Err("no frame decoded".into());
    }
    let seconds = busy.as_secs_f64();
    println!("{{\"frames\":{frames},\"seconds\":{seconds:.3},\"fps\":{:.3}}}", frames as f64 / seconds.max(1e-9));
    Ok(())
}
