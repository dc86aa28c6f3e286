//! `clearbg remove`: one video in, one file out, with a progress bar.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use clearbg_engine::output::{parse_offset, parse_size};
use clearbg_engine::{
    remove_background, Background, Composition, Home, Keyframes, Limits, OutputFormat, Precision, Progress,
    RemoveRequest, Runtime, Segmenter, Tier, VideoInfo,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Flags of `clearbg remove`.
#[derive(Args)]
pub struct RemoveArgs {
    /// The input video.
    input: PathBuf,
    /// The output file; its extension picks the format unless --format is given.
    #[arg(short, long)]
    output: PathBuf,
    /// Model tier: light (people, fastest), human (portrait matting), original (any subject), pro (best),
    /// video (people in video, steady; opt-in install: make setup-video-matting).
    #[arg(long, default_value = "original")]
    model: String,
    /// Output format: webm, mov, mp4, gif, webp, png_sequence, matte.
    #[arg(long)]
    format: Option<String>,
    /// Background: transparent, green, white, black, blue, #RRGGBB, r,g,b (floats 0-1), or an image file.
    #[arg(long, default_value = "transparent")]
    bg: String,
    /// Output canvas size, WIDTHxHEIGHT (default: the input's size).
    #[arg(long)]
    canvas: Option<String>,
    /// Where the subject sits on the canvas: top-left ... center ... bottom-right.
    #[arg(long, default_value = "center")]
    anchor: String,
    /// Scale of the subject.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Offset of the subject from its anchor in pixels, X,Y.
    #[arg(long, default_value = "0,0", allow_hyphen_values = true)]
    offset: String,
    /// Where the model runs: `adaptive` (on keyframes only; the mask is carried along the motion
    /// in between) or `every` (on every frame). light and video always run every frame.
    #[arg(long, env = "CLEARBG_KEYFRAMES", default_value = "adaptive")]
    keyframes: Keyframes,
    /// ISNet's number format (original, pro): `int8` (the default on a CPU: about 2x faster) or
    /// `fp32` (the default on a GPU, and the reference int8 is measured against).
    #[arg(long, env = "CLEARBG_PRECISION")]
    precision: Option<Precision>,
    /// Process only the first SECONDS of the input.
    #[arg(long, value_name = "SECONDS")]
    preview: Option<f64>,
    /// Inference threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where the model runs: cpu, or cuda / cuda:N (a build with the `cuda` feature).
    #[arg(long, env = "CLEARBG_DEVICE", default_value = "cpu")]
    device: clearbg_engine::Device,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

impl RemoveArgs {
    fn request(&self) -> clearbg_engine::Result<(Tier, RemoveRequest)> {
        let tier: Tier = self.model.parse()?;
        let format = match &self.format {
            Some(f) => f.parse()?,
            None => OutputFormat::from_path(&self.output)?,
        };
        let composition = Composition {
            canvas: self.canvas.as_deref().map(parse_size).transpose()?,
            anchor: self.anchor.parse()?,
            scale: self.scale,
            offset: parse_offset(&self.offset)?,
        };
        let request = RemoveRequest {
            input: self.input.clone(),
            output: self.output.clone(),
            format,
            background: self.bg.parse::<Background>()?,
            composition,
            limits: Limits::default(),
            preview_secs: self.preview,
            keyframes: self.keyframes,
        };
        request.validate()?;
        Ok((tier, request))
    }
}

/// Draws the progress bar on stderr.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, info: &VideoInfo, total_frames: u64) {
        self.0.set_length(total_frames);
        self.0.set_message(format!("{}x{} @ {:.2} fps", info.width, info.height, info.fps.as_f64()));
    }
    fn advance(&self, frames_done: u64) {
        self.0.set_position(frames_done);
    }
}

pub fn run(args: RemoveArgs) -> anyhow::Result<ExitCode> {
    let (tier, request) = args.request()?;
    let home = Home::from_env();
    let runtime = Runtime::load_on(&home, args.threads, args.device)?;
    let precision = args.precision.unwrap_or_else(|| Precision::for_device(args.device));
    let mut segmenter = Segmenter::at_precision(&runtime, &home, tier, precision)?;
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} frames {per_sec} ETA {eta} {msg}",
        )
        .expect("valid template"),
    );
    let bar = Bar(bar);
    let result = remove_background(&mut segmenter, &request, &bar);
    bar.0.finish_and_clear();
    let summary = result?;
    println!(
        "{} frames, {:.1} fps, {:.1} s, {} bytes, sha256 {} -> {} ({}, {}, model on {} frames)",
        summary.frames,
        summary.fps,
        summary.wall.as_secs_f64(),
        summary.output_bytes,
        summary.sha256,
        request.output.display(),
        summary.format.name(),
        summary.tier.name(),
        summary.keyframes.keyframes,
    );
    Ok(ExitCode::SUCCESS)
}
