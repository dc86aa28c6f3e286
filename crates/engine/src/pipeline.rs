//! The whole job: probe, then decode → segment → matte → encode as concurrent stages.
//!
//! Stages are threads joined by bounded channels (a few frames each; after the segment stage, a
//! keyframe gap's worth, since the keyframer releases a gap at once), so a long video never
//! holds more than a bounded number of frames in memory. When any stage stops, the channels it
//! held close, every other stage stops at its next send or receive, and both ffmpeg children are
//! killed and reaped; the output is written to a temporary file beside the target and only
//! renamed into place when everything succeeded, so a failure never leaves a partial file.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};
use crate::frame::YuvFrame;
use crate::keyframes::{Keyframer, Keyframes, Segmented, Stats};
use crate::matte::{self, Matter};
use crate::model::{Device, Segmenter, Tier};
use crate::output::{Background, Composition, OutputFormat};
use crate::probe::{self, Limits, VideoInfo};
use crate::process::Child;
use crate::video::{self, EncoderTarget, FrameReader};

/// Frames in flight between two stages.
const QUEUE_DEPTH: usize = 3;
/// How often the watchdog looks for a stall or a cancel.
const WATCHDOG_TICK: Duration = Duration::from_millis(100);

/// One background-removal job.
#[derive(Debug, Clone)]
pub struct RemoveRequest {
    /// The input video.
    pub input: PathBuf,
    /// Where the result goes; written atomically.
    pub output: PathBuf,
    /// Output format.
    pub format: OutputFormat,
    /// Background behind the subject.
    pub background: Background,
    /// Placement of the subject.
    pub composition: Composition,
    /// Input limits.
    pub limits: Limits,
    /// Process only the first this many seconds (the API's `preview_duration`); `None`: all.
    pub preview_secs: Option<f64>,
    /// Run the model on every frame, or only on keyframes.
    pub keyframes: Keyframes,
}

impl RemoveRequest {
    /// Checks that the options make sense together, before any work starts.
    pub fn validate(&self) -> Result<()> {
        self.composition.validate()?;
        if let Some((w, h)) = self.composition.canvas {
            self.limits.check_frame("canvas", w, h).map_err(as_option_error)?;
        }
        if self.format == OutputFormat::Mp4 && self.background.is_transparent() {
            return Err(EngineError::InvalidOptions(
                "mp4 cannot carry transparency: choose a background (for example --bg green or --bg '#ffffff') or a format with alpha (webm, mov, gif, webp, png_sequence)".into(),
            ));
        }
        if let Background::Image(path) = &self.background {
            if !path.is_file() {
                return Err(EngineError::InvalidOptions(format!("background image {} does not exist", path.display())));
            }
        }
        if self.preview_secs.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
            return Err(EngineError::InvalidOptions("a preview must last more than 0 seconds".into()));
        }
        if self.input == self.output {
            return Err(EngineError::InvalidOptions("the output would overwrite the input".into()));
        }
        Ok(())
    }
}

/// Receives progress and answers whether to stop. Called from the pipeline's writer thread.
pub trait Progress: Sync {
    /// The input was probed; `total_frames` is the number of frames expected.
    fn start(&self, _info: &VideoInfo, _total_frames: u64) {}
    /// `frames_done` frames have been handed to the encoder.
    fn advance(&self, _frames_done: u64) {}
    /// Return true to stop as soon as possible (the job then fails with `cancelled`).
    fn cancelled(&self) -> bool {
        false
    }
}

/// No progress reporting.
impl Progress for () {}

/// What a finished job produced.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Frames processed.
    pub frames: u64,
    /// Processing speed, frames per second of wall time.
    pub fps: f64,
    /// Wall time of the whole job.
    pub wall: Duration,
    /// The output's size in bytes.
    pub output_bytes: u64,
    /// The output's sha256, hex.
    pub sha256: String,
    /// The input as probed.
    pub input: VideoInfo,
    /// The tier that ran.
    pub tier: Tier,
    /// The format written.
    pub format: OutputFormat,
    /// How many frames ran the model, and why.
    pub keyframes: Stats,
    /// How long each stage worked.
    pub stages: StageTimes,
}

/// How long each stage of a job worked, its waits for the stages beside it left out. The stages
/// run at once, so the one with the most time sets the pace: the model on a CPU, the per-pixel
/// work around it on a GPU (bench/RESULTS.md, "On a GPU"). Logged at debug level after each video
/// (`CLEARBG_LOG=clearbg_engine=debug`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Reading raw frames from the ffmpeg decoder (its decoding included, where we wait for it).
    pub decode: Duration,
    /// Keyframe planning, resizing for the model and the model itself.
    pub segment: Duration,
    /// Stabilising and upsampling the mask into the alpha plane.
    pub matte: Duration,
    /// Handing frames to the ffmpeg encoder (its encoding included, where we wait for it).
    pub encode: Duration,
}

/// Removes the background of `request.input` with `segmenter` and writes `request.output`.
pub fn remove_background(
    segmenter: &mut Segmenter,
    request: &RemoveRequest,
    progress: &dyn Progress,
) -> Result<Summary> {
    let started = Instant::now();
    request.validate()?;
    let cancelled = || progress.cancelled();
    let picture = match &request.background {
        Background::Image(path) => Some(probe::check_picture(path, &request.limits, &cancelled)?),
        _ => None,
    };
    let mut info = probe::probe(&request.input, &request.limits, &cancelled)?;
    if let Some(secs) = request.preview_secs {
        info = info.trimmed(secs);
    }
    // What the composition makes of the frame must fit the same limits as the frame itself.
    let (w, h) = (info.width, info.height);
    let (cw, ch) = request.composition.canvas_size(w, h);
    request.limits.check_frame("canvas", cw, ch).map_err(as_option_error)?;
    let (sw, sh) = request.composition.subject_size(w, h);
    request.limits.check_frame("scaled subject", sw, sh).map_err(as_option_error)?;
    progress.start(&info, info.expected_frames);
    let out_dir = match request.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let part = tempfile::Builder::new()
        .prefix(".clearbg-")
        .suffix(".part")
        .tempfile_in(&out_dir)
        .map_err(EngineError::io(format!("creating a file in {}", out_dir.display())))?;
    let png_dir = match request.format {
        OutputFormat::PngSequence => Some(
            tempfile::Builder::new()
                .prefix(".clearbg-frames-")
                .tempdir_in(&out_dir)
                .map_err(EngineError::io(format!("creating a directory in {}", out_dir.display())))?,
        ),
        _ => None,
    };
    let target = match &png_dir {
        Some(dir) => EncoderTarget::PngDirectory(dir.path()),
        None => EncoderTarget::File(part.path()),
    };
    let encoder_args = video::encoder_args(
        &request.input,
        &info,
        request.format,
        &request.background,
        picture,
        &request.composition,
        target,
    );
    let keyframer = Keyframer::new(segmenter.tier(), request.keyframes, info.fps.as_f64());
    let (frames, keyframes, stages) =
        run_stages(segmenter, keyframer, &request.input, &info, &encoder_args, request.limits.stall_timeout, progress)?;
    tracing::debug!(
        frames,
        decode_ms = stages.decode.as_millis() as u64,
        segment_ms = stages.segment.as_millis() as u64,
        matte_ms = stages.matte.as_millis() as u64,
        encode_ms = stages.encode.as_millis() as u64,
        "stage working times"
    );
    if let Some(dir) = &png_dir {
        zip_frames(dir.path(), part.as_file())?;
    }
    let (output_bytes, sha256) = hash_file(part.path())?;
    // Temporary files are private (0600); the result is an ordinary file.
    std::fs::set_permissions(part.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(EngineError::io("setting the output's permissions"))?;
    part.persist(&request.output)
        .map_err(|e| EngineError::io(format!("writing {}", request.output.display()))(e.error))?;
    let wall = started.elapsed();
    Ok(Summary {
        frames,
        fps: frames as f64 / wall.as_secs_f64().max(1e-9),
        wall,
        output_bytes,
        sha256,
        input: info,
        tier: segmenter.tier(),
        format: request.format,
        keyframes,
        stages,
    })
}

/// A size limit broken by the options (a canvas, a scale) is the options' fault, not the input's.
fn as_option_error(e: EngineError) -> EngineError {
    match e {
        EngineError::UnsupportedInput(message) => EngineError::InvalidOptions(message),
        other => other,
    }
}

/// Milliseconds since the job started at which some stage last moved a frame.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::SeqCst);
    }

    fn idle(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::SeqCst)))
    }
}

/// Runs decode → segment → matte → encode; returns the number of frames written, what the
/// keyframe planner did and how long each stage worked.
fn run_stages(
    segmenter: &mut Segmenter,
    mut keyframer: Keyframer,
    input: &Path,
    info: &VideoInfo,
    encoder_args: &[String],
    stall_timeout: Duration,
    progress: &dyn Progress,
) -> Result<(u64, Stats, StageTimes)> {
    let decoder = Mutex::new(Child::spawn("ffmpeg", &video::decoder_args(input, info), "decode", false)?);
    let encoder = Mutex::new(Child::spawn("ffmpeg", encoder_args, "encode", true)?);
    let kill_children = || {
        lock(&decoder).kill();
        lock(&encoder).kill();
    };
    let decoded = lock(&decoder).take_stdout();
    let mut encoder_stdin = lock(&encoder).take_stdin();
    let stop = AtomicBool::new(false);
    let stalled = AtomicBool::new(false);
    let activity = Activity::new();
    let frames_decoded = AtomicU64::new(0);
    let tier = segmenter.tier();
    let interrupt = segmenter.interrupt();
    interrupt.reset();

    keyframer = keyframer.with_pool(pixel_pool(segmenter.device(), "segment")?);
    let matte_pool = pixel_pool(segmenter.device(), "matte")?;
    let (frame_tx, frame_rx) = sync_channel::<YuvFrame>(QUEUE_DEPTH);
    let (mask_tx, mask_rx) = sync_channel::<(YuvFrame, Segmented)>(QUEUE_DEPTH + keyframer.most_settled_at_once());
    let (matted_tx, matted_rx) = sync_channel::<(YuvFrame, Vec<u8>)>(QUEUE_DEPTH);
    let (done_tx, done_rx) = sync_channel::<()>(0);

    let (decode_result, segment_result, matte_result, write_result) = std::thread::scope(|s| {
        // The watchdog: a child that neither reads nor writes would otherwise block a stage
        // forever, and a cancel must not wait for the next frame (a large model takes seconds).
        let (activity_ref, stalled_ref, stop_ref, interrupt_ref) = (&activity, &stalled, &stop, &interrupt);
        s.spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = done_rx.recv_timeout(WATCHDOG_TICK) {
                let stalled = activity_ref.idle() > stall_timeout;
                if stalled || progress.cancelled() {
                    stalled_ref.store(stalled, Ordering::SeqCst);
                    stop_ref.store(true, Ordering::SeqCst);
                    interrupt_ref.fire();
                    kill_children();
                    break;
                }
            }
        });
        let decode = s.spawn(|| decode_stage(decoded, info, frame_tx, &stop, &frames_decoded, &activity));
        let segment = s.spawn(|| segment_stage(segmenter, &mut keyframer, frame_rx, mask_tx, &activity));
        let matte = s.spawn(|| matte_stage(tier, &matte_pool, mask_rx, matted_tx, &activity));
        let write = write_stage(&mut encoder_stdin, matted_rx, progress, &stop, &activity);
        drop(encoder_stdin);
        if write.is_err() || stop.load(Ordering::SeqCst) {
            // Unblock a decoder stuck writing into a pipe nobody reads any more.
            stop.store(true, Ordering::SeqCst);
            lock(&decoder).kill();
        }
        fn join<T>(r: std::thread::Result<Result<T>>) -> Result<T> {
            r.unwrap_or_else(|_| Err(EngineError::Inference("a pipeline stage panicked".into())))
        }
        let results = (join(decode.join()), join(segment.join()), join(matte.join()), write);
        drop(done_tx);
        results
    });
    let (decoder, encoder) = (into_inner(decoder), into_inner(encoder));
    let stopped_early = stop.load(Ordering::SeqCst);
    if progress.cancelled() {
        return Err(EngineError::Cancelled);
    }
    if stalled.load(Ordering::SeqCst) {
        return Err(EngineError::Stalled { seconds: stall_timeout.as_secs() });
    }
    let decoder_status = decoder.finish();
    let encoder_status = encoder.finish();
    // The first real cause wins; "the next stage hung up" is only an echo of it.
    let segment = segment_result?;
    let matte = matte_result?;
    encoder_status?;
    let (written, encode) = write_result?;
    let decoder_errors = if stopped_early { String::new() } else { decoder_status? };
    let decode = decode_result?;
    let decoded = frames_decoded.load(Ordering::SeqCst);
    if decoded == 0 {
        return Err(EngineError::InvalidInput("no frame could be decoded from the video".into()));
    }
    // ffmpeg decodes what it can of a cut-off file, complains on stderr and exits 0. A short
    // count alone may be loose metadata; a short count with decode errors is a broken file.
    let last_error = decoder_errors.lines().rev().find(|l| !l.trim().is_empty());
    if let Some(last_error) = last_error.filter(|_| (decoded as f64) < 0.9 * info.expected_frames as f64) {
        return Err(EngineError::InvalidInput(format!(
            "the video is truncated or corrupt: only {decoded} of its {} frames could be decoded (ffmpeg: {})",
            info.expected_frames,
            last_error.trim()
        )));
    }
    if written != decoded {
        return Err(EngineError::Ffmpeg { stage: "encode", message: format!("wrote {written} of {decoded} frames") });
    }
    Ok((written, keyframer.stats(), StageTimes { decode, segment, matte, encode }))
}

/// Locks a child; a panic elsewhere must not stop us from killing it.
fn lock(child: &Mutex<Child>) -> std::sync::MutexGuard<'_, Child> {
    child.lock().unwrap_or_else(|p| p.into_inner())
}

fn into_inner(child: Mutex<Child>) -> Child {
    child.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// Runs `work`, adding the time it took to `total` (a stage's [`StageTimes`] entry).
fn timed<T>(total: &mut Duration, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = work();
    *total += started.elapsed();
    result
}

/// The threads a stage splits its per-pixel passes over (the motion search, the stabiliser and
/// the guided upsampling on the mask's grid, in [`crate::matte`]).
///
/// On a GPU the model leaves the cores idle and those passes set the pace: given every core,
/// `original` went from 5.5 to 11.2 fps at 1080p on an H200, and to 17.4 once the passes that
/// had stayed on one core (box filters, the candidate choice, the planner's) were split too
/// (bench/RESULTS.md). On the CPU the model and the encoder already keep every core busy and
/// splitting the passes only contends with them (10% slower on 2 cores, `bench/ab.sh`), so
/// there they stay on one thread. The result is the same to the bit either way.
fn pixel_pool(device: Device, stage: &str) -> Result<rayon::ThreadPool> {
    let threads = match device {
        Device::Cpu => 1,
        Device::Cuda(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name({
            let stage = stage.to_string();
            move |i| format!("{stage}-{i}")
        })
        .build()
        .map_err(|e| EngineError::Io {
            context: format!("starting the {stage} threads"),
            source: std::io::Error::other(e),
        })
}

fn decode_stage(
    source: impl Read,
    info: &VideoInfo,
    tx: SyncSender<YuvFrame>,
    stop: &AtomicBool,
    count: &AtomicU64,
    activity: &Activity,
) -> Result<Duration> {
    let mut reader = FrameReader::new(source, info);
    let mut working = Duration::ZERO;
    while let Some(frame) = timed(&mut working, || reader.next_frame())? {
        activity.touch();
        if stop.load(Ordering::SeqCst) || tx.send(frame).is_err() {
            break;
        }
        count.fetch_add(1, Ordering::SeqCst);
    }
    Ok(working)
}

fn segment_stage(
    segmenter: &mut Segmenter,
    keyframer: &mut Keyframer,
    rx: Receiver<YuvFrame>,
    tx: SyncSender<(YuvFrame, Segmented)>,
    activity: &Activity,
) -> Result<Duration> {
    segmenter.reset_history(); // a new video: a recurrent model starts from a blank memory
    let mut working = Duration::ZERO;
    // False once the matte stage has hung up: then there is nothing left to do.
    let send_all = |settled: Vec<(YuvFrame, Segmented)>| settled.into_iter().all(|pair| tx.send(pair).is_ok());
    for frame in rx {
        let settled = timed(&mut working, || keyframer.push(segmenter, frame))?;
        activity.touch();
        if !send_all(settled) {
            return Ok(working);
        }
    }
    send_all(keyframer.finish());
    Ok(working)
}

fn matte_stage(
    tier: Tier,
    pool: &rayon::ThreadPool,
    rx: Receiver<(YuvFrame, Segmented)>,
    tx: SyncSender<(YuvFrame, Vec<u8>)>,
    activity: &Activity,
) -> Result<Duration> {
    let mut matter = Matter::new(tier, matte::shipped_mode(tier));
    let mut working = Duration::ZERO;
    for (frame, segmented) in rx {
        let alpha = timed(&mut working, || pool.install(|| matter.alpha_of(&frame, segmented)));
        activity.touch();
        if tx.send((frame, alpha)).is_err() {
            break;
        }
    }
    Ok(working)
}

/// Hands the encoder each frame as YUVA 4:2:0: the decoder's own planes, then the alpha plane.
fn write_stage(
    sink: &mut impl Write,
    rx: Receiver<(YuvFrame, Vec<u8>)>,
    progress: &dyn Progress,
    stop: &AtomicBool,
    activity: &Activity,
) -> Result<(u64, Duration)> {
    let mut written = 0u64;
    let mut working = Duration::ZERO;
    for (frame, alpha) in rx {
        if progress.cancelled() {
            stop.store(true, Ordering::SeqCst);
            return Err(EngineError::Cancelled);
        }
        // A failed write means the encoder died; its exit status says why.
        timed(&mut working, || sink.write_all(&frame.data).and_then(|_| sink.write_all(&alpha)))
            .map_err(EngineError::io("writing frames to the encoder"))?;
        written += 1;
        activity.touch();
        progress.advance(written);
    }
    Ok((written, working))
}

/// Packs the PNG frames into a zip, stored uncompressed (PNG is already compressed).
fn zip_frames(dir: &Path, out: &File) -> Result<()> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(EngineError::io("listing PNG frames"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let mut zip = zip::ZipWriter::new(out);
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let zip_err = |e: zip::result::ZipError| EngineError::Io {
        context: "writing the zip".into(),
        source: std::io::Error::other(e),
    };
    for path in names {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("frame.png").to_string();
        zip.start_file(name, options).map_err(zip_err)?;
        let mut file = File::open(&path).map_err(EngineError::io("reading a PNG frame"))?;
        std::io::copy(&mut file, &mut zip).map_err(EngineError::io("writing the zip"))?;
    }
    zip.finish().map_err(zip_err)?;
    Ok(())
}

fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file = File::open(path).map_err(EngineError::io("reading the output"))?;
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher).map_err(EngineError::io("hashing the output"))?;
    Ok((bytes, hex::encode(hasher.finalize())))
}
