//! The ffmpeg command lines: one decoder that turns any input into raw RGB frames, and one
//! encoder per output format that turns raw RGBA frames (plus the original audio) into the file
//! the user asked for. Commands and their pitfalls: `shared/reference/video.md`.

use std::io::Read;
use std::path::Path;

use crate::container::Picture;
use crate::error::{EngineError, Result};
use crate::frame::YuvFrame;
use crate::output::{Background, Composition, OutputFormat};
use crate::probe::{file_arg, forced_input, forced_picture_input, VideoInfo};

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The options and `-i` for reading the input video itself: its own demuxer forced, no protocol
/// but `file`, and no frame larger than the probe allowed.
fn input_video(input: &Path, info: &VideoInfo) -> Vec<String> {
    let mut args = forced_input(info.container.demuxer());
    args.extend(["-max_pixels".into(), info.max_pixels.to_string()]);
    args.extend(read_limit(info));
    args.extend(["-i".into(), file_arg(input)]);
    args
}

/// Arguments for the decoder: raw planar YUV 4:2:0 at a constant frame rate on stdout.
///
/// YUV, not RGB: most inputs already are 4:2:0, so ffmpeg converts nothing, the pipe carries
/// half the bytes, and the encoder gets the same planes back (measured: RGBA pipes cost a 720p
/// VP9 job ~35% more than the plain transcode, YUVA pipes ~10%).
///
/// Variable-frame-rate input is resampled to its average rate (`-fps_mode cfr -r`) so that the
/// frame count matches duration × fps and the original audio stays in sync; the CLI applies
/// rotation metadata itself (autorotate). Output stops at [`VideoInfo::frame_cap`].
pub fn decoder_args(input: &Path, info: &VideoInfo) -> Vec<String> {
    let mut args = strings(&["-nostdin", "-hide_banner", "-v", "error"]);
    if info.vpx_alpha {
        // The native VP8/VP9 decoders drop alpha side data; libvpx reads it.
        let decoder = if info.codec == "vp8" { "libvpx" } else { "libvpx-vp9" };
        args.extend(strings(&["-c:v", decoder]));
    }
    args.extend(input_video(input, info));
    args.extend(strings(&["-map", "0:v:0", "-an", "-sn", "-dn", "-fps_mode", "cfr", "-r"]));
    args.push(info.fps.to_string());
    args.extend(["-frames:v".into(), info.frame_cap().to_string()]);
    // Full-range sources stay full range ("yuvj"), so no stage converts the range either.
    let pix_fmt = if info.color.full_range { "yuvj420p" } else { "yuv420p" };
    args.extend(strings(&["-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]));
    args
}

/// `-t SECONDS` before an input that is read only in part (a preview).
fn read_limit(info: &VideoInfo) -> Vec<String> {
    info.read_secs.map(|t| vec!["-t".to_string(), format!("{t:.3}")]).unwrap_or_default()
}

/// Reads whole frames from the decoder's stdout.
pub struct FrameReader<R> {
    source: R,
    info: VideoInfo,
}

impl<R: Read> FrameReader<R> {
    /// Reads frames of `info`'s size from `source`.
    pub fn new(source: R, info: &VideoInfo) -> Self {
        FrameReader { source, info: info.clone() }
    }

    /// The next frame, `None` at the end of the stream. A frame cut short at the end (a decoder
    /// that died mid-write) is dropped: the decoder's exit status reports the problem.
    pub fn next_frame(&mut self) -> Result<Option<YuvFrame>> {
        let (width, height) = (self.info.width, self.info.height);
        let mut data = vec![0u8; YuvFrame::byte_len(width, height)];
        let mut filled = 0;
        while filled < data.len() {
            match self.source.read(&mut data[filled..]) {
                Ok(0) => return Ok(None),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(EngineError::io("reading decoded frames")(e)),
            }
        }
        Ok(Some(YuvFrame { width, height, color: self.info.color, data }))
    }
}

/// Largest frame prores_aw encodes reliably (4096x2304: DCI and UHD 4K, with margin).
const PRORES_AW_MAX_PIXELS: u64 = 4096 * 2304;

/// Where an encoder writes: a file, or (PNG sequences) a numbered pattern in a directory.
pub(crate) enum EncoderTarget<'a> {
    File(&'a Path),
    PngDirectory(&'a Path),
}

/// Arguments for the encoder of `format`: YUVA 4:2:0 `width`x`height` frames on stdin, `input` as
/// the source of audio, the background and composition applied with ffmpeg's filters.
/// `picture` is the format [`crate::probe::check_picture`] found for an image background.
pub(crate) fn encoder_args(
    input: &Path,
    info: &VideoInfo,
    format: OutputFormat,
    background: &Background,
    picture: Option<Picture>,
    composition: &Composition,
    target: EncoderTarget<'_>,
) -> Vec<String> {
    let (w, h) = (info.width, info.height);
    let fps = info.fps.to_string();
    let mut args = strings(&["-nostdin", "-hide_banner", "-v", "error", "-y"]);
    // Tag the raw frames with the source's colour space so conversions to RGB are right.
    let (matrix, range) = info.color.ffmpeg_names();
    args.extend(strings(&[
        "-protocol_whitelist",
        "pipe",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuva420p",
        "-colorspace",
        matrix,
        "-color_range",
        range,
        "-s",
    ]));
    args.push(format!("{w}x{h}"));
    args.extend(["-framerate".into(), fps.clone(), "-i".into(), "pipe:0".into()]);
    let mut next_input = 1;
    let audio_input = (format.carries_audio() && info.has_audio).then(|| {
        args.extend(input_video(input, info));
        next_input += 1;
        next_input - 1
    });
    // The matte is the subject's alpha alone: backgrounds do not apply to it.
    let background = if format == OutputFormat::Matte { &Background::Transparent } else { background };
    let (cw, ch) = composition.canvas_size(w, h);
    let mut graph = Vec::new();
    let mut last = "0:v".to_string();
    if !composition.is_identity() || !background.is_transparent() {
        let mut fg = String::from("[0:v]");
        if composition.scale != 1.0 {
            let (sw, sh) = composition.subject_size(w, h);
            fg.push_str(&format!("scale={sw}:{sh}:flags=bicubic,"));
        }
        fg.push_str("format=rgba[fg]");
        graph.push(fg);
        let canvas = match background {
            Background::Transparent => format!("color=c=black@0.0:s={cw}x{ch}:r={fps},format=rgba[bg]"),
            Background::Color([r, g, b]) => {
                format!("color=c=0x{r:02X}{g:02X}{b:02X}:s={cw}x{ch}:r={fps},format=rgba[bg]")
            }
            Background::Image(path) => {
                args.extend(forced_picture_input(picture.unwrap_or(Picture::Png)));
                args.extend([
                    "-framerate".into(),
                    fps.clone(),
                    "-loop".into(),
                    "1".into(),
                    "-i".into(),
                    file_arg(path),
                ]);
                format!(
                    "[{next_input}:v]scale={cw}:{ch}:force_original_aspect_ratio=increase,crop={cw}:{ch},setsar=1,format=rgba[bg]"
                )
            }
        };
        graph.push(canvas);
        let (x, y) = composition.position(w, h);
        graph.push(format!("[bg][fg]overlay=x={x}:y={y}:format=rgb:shortest=1:eof_action=endall[comp]"));
        last = "comp".into();
    }
    let alpha = background.is_transparent();
    let even = "crop=trunc(iw/2)*2:trunc(ih/2)*2:0:0";
    let tail = match format {
        OutputFormat::Webm | OutputFormat::Webp => {
            (if alpha { "format=yuva420p" } else { "format=yuv420p" }).to_string()
        }
        OutputFormat::Mov => (if alpha { "format=yuva444p10le" } else { "format=yuv444p10le" }).to_string(),
        OutputFormat::Mp4 => format!("{even},format=yuv420p"),
        OutputFormat::Matte => format!("alphaextract,{even},format=yuv420p"),
        OutputFormat::PngSequence => (if alpha { "format=rgba" } else { "format=rgb24" }).to_string(),
        OutputFormat::Gif => {
            let rate = if info.fps.as_f64() > 15.0 { "fps=15," } else { "" };
            format!(
                "{rate}scale='min(480,iw)':-1:flags=lanczos,split[g1][g2];[g1]palettegen=reserve_transparent=1:stats_mode=full[pal];[g2][pal]paletteuse=alpha_threshold=128:dither=bayer:bayer_scale=3"
            )
        }
    };
    graph.push(format!("[{last}]{tail}[out]"));
    args.extend(["-filter_complex".into(), graph.join(";"), "-map".into(), "[out]".into()]);
    if let Some(i) = audio_input {
        args.extend(["-map".into(), format!("{i}:a:0?")]);
    }
    let codec: &[&str] = match format {
        OutputFormat::Webm => &[
            "-c:v",
            "libvpx-vp9",
            "-b:v",
            "0",
            "-crf",
            "32",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-row-mt",
            "1",
            // Realtime mode never looks ahead, so the default 25-frame lookahead buffers only
            // cost memory: the decoded output is bit-identical without them (measured), and a
            // 4096x4096 job peaks 1.3 GB lower.
            "-lag-in-frames",
            "0",
            "-c:a",
            "libopus",
            "-b:a",
            "96k",
            "-f",
            "webm",
        ],
        // prores_aw is 2.5x faster than prores_ks, but the one in ffmpeg 5.1 underestimates its
        // buffer for frames near 16 megapixels and fails ("Underestimated required buffer size":
        // seen at 4096x4096 and 8192x2048, not at 4096x3584): larger frames take prores_ks.
        OutputFormat::Mov if cw as u64 * ch as u64 <= PRORES_AW_MAX_PIXELS => {
            &["-c:v", "prores_aw", "-profile:v", "4", "-vendor", "apl0", "-c:a", "aac", "-b:a", "192k", "-f", "mov"]
        }
        OutputFormat::Mov => {
            &["-c:v", "prores_ks", "-profile:v", "4", "-vendor", "apl0", "-c:a", "aac", "-b:a", "192k", "-f", "mov"]
        }
        OutputFormat::Mp4 => &[
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "18",
            "-c:a",
            "aac",
            "-b:a",
            "192k",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
        ],
        OutputFormat::Matte => {
            &["-c:v", "libx264", "-preset", "veryfast", "-crf", "12", "-movflags", "+faststart", "-f", "mp4"]
        }
        OutputFormat::Gif => &["-loop", "0", "-f", "gif"],
        OutputFormat::Webp => &["-c:v", "libwebp_anim", "-lossless", "0", "-quality", "80", "-loop", "0", "-f", "webp"],
        OutputFormat::PngSequence => &["-c:v", "png", "-f", "image2"],
    };
    args.extend(strings(codec));
    if audio_input.is_some() {
        args.push("-shortest".into());
    }
    match target {
        EncoderTarget::File(path) => args.push(file_arg(path)),
        EncoderTarget::PngDirectory(dir) => args.push(file_arg(&dir.join("frame_%06d.png"))),
    }
    args
}
