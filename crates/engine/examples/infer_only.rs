//! Model inference alone, on the same frames `clearbg remove` sees: the ceiling the end-to-end
//! pipeline is measured against in `bench/run.sh`.
//!
//! ```text
//! cargo build --release --example infer_only
//! target/release/examples/infer_only <light|human|original|pro> INPUT [--threads N]
//! ```
//!
//! Prints one JSON line, `{"frames":N,"seconds":S,"fps":F}`, where `seconds` is the sum of the
//! `Segmenter::segment` calls only: decoding, model loading and start-up are excluded, and the
//! decoder is kept idle while the clock runs, so this is what the model costs per frame with
//! nothing else in the way.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clearbg_engine::frame::RgbFrame;
use clearbg_engine::{probe, Home, Limits, Runtime, Segmenter, Tier};

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
    let usage = "usage: infer_only <light|human|original|pro> INPUT [--threads N]";
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

    // The engine's own probe, and the decoder flags clearbg uses (constant frame rate at the
    // probed rate), so the frame count and frame size match `clearbg remove` exactly.
    let info = probe(&input, &Limits::default())?;
    let mut decoder = Command::new("ffmpeg");
    decoder.args(["-nostdin", "-hide_banner", "-v", "error"]);
    if info.vpx_alpha {
        // As in clearbg: only libvpx keeps VP8/VP9 alpha; the native decoders drop it.
        decoder.args(["-c:v", if info.codec == "vp8" { "libvpx" } else { "libvpx-vp9" }]);
    }
    let mut decoder = decoder
        .arg("-i")
        .arg(&input)
        .args(["-map", "0:v:0", "-an", "-sn", "-dn", "-fps_mode", "cfr", "-r"])
        .arg(info.fps.to_string())
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting ffmpeg: {e}"))?;
    let mut stdout = decoder.stdout.take().expect("stdout is piped");

    // Two frame buffers, refilled in place: frames are streamed, never accumulated, so a long
    // clip costs no more memory than a short one.
    let len = RgbFrame::byte_len(info.width, info.height);
    let mut frame = RgbFrame { width: info.width, height: info.height, data: vec![0; len] };
    let mut next = vec![0u8; len];
    let mut next_filled = read_some(&mut stdout, &mut next)?;
    let mut frames = 0u64;
    let mut busy = Duration::ZERO;
    while next_filled > 0 && fill(&mut stdout, &mut next, next_filled)? {
        std::mem::swap(&mut frame.data, &mut next);
        // Wait for the first bytes of the following frame before starting the clock: the decoder
        // has then decoded and converted it and blocks on the full pipe, so it hardly competes
        // with the model for the cores. (A trailing partial frame, from a decoder that died
        // mid-write, is dropped: its exit status reports the problem.)
        next_filled = read_some(&mut stdout, &mut next)?;
        let started = Instant::now();
        let mask = segmenter.segment(&frame)?;
        busy += started.elapsed();
        std::hint::black_box(mask);
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

/// One read into `buf`: the number of bytes read, 0 at the end of the stream.
fn read_some(source: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match source.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// Completes `buf`, of which `filled` bytes are already read; false if the stream ends first.
fn fill(source: &mut impl Read, buf: &mut [u8], mut filled: usize) -> std::io::Result<bool> {
    while filled < buf.len() {
        match read_some(source, &mut buf[filled..])? {
            0 => return Ok(false),
            n => filled += n,
        }
    }
    Ok(true)
}
