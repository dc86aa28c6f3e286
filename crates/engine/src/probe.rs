//! ffprobe → [`VideoInfo`]: what the pipeline needs to know before it decodes a single frame,
//! and the place where unreadable or absurd inputs are refused with a clear reason.

use std::path::Path;

use serde::Deserialize;

use crate::error::{EngineError, Result};
use crate::frame::ColorSpace;
use crate::process;

/// Limits that protect the machine from absurd inputs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted width or height, in pixels (after rotation).
    pub max_side: u32,
    /// Longest accepted duration, in seconds.
    pub max_duration_secs: f64,
    /// Highest accepted frame rate; higher rates are almost always broken timestamps.
    pub max_fps: f64,
    /// A job in which no frame moves for this long is stopped (a hung ffmpeg, say).
    pub stall_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // 8K on the long side, three hours, 240 fps: beyond any real upload we want to serve.
        Limits {
            max_side: 8192,
            max_duration_secs: 3.0 * 3600.0,
            max_fps: 240.0,
            stall_timeout: std::time::Duration::from_secs(120),
        }
    }
}

/// A frame rate as the exact fraction ffmpeg reports (for example 30000/1001).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameRate {
    /// Numerator.
    pub num: u32,
    /// Denominator.
    pub den: u32,
}

impl FrameRate {
    /// The rate as a float.
    pub fn as_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    fn parse(s: &str) -> Option<FrameRate> {
        let (n, d) = s.split_once('/').unwrap_or((s, "1"));
        let (num, den) = (n.trim().parse().ok()?, d.trim().parse().ok()?);
        (num > 0 && den > 0).then_some(FrameRate { num, den })
    }
}

impl std::fmt::Display for FrameRate {
    /// ffmpeg's own `num/den` notation, so it can be passed back to `-r`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

/// What we know about an input video.
#[derive(Debug, Clone)]
pub struct VideoInfo {
    /// Width of the decoded frames, after applying rotation metadata.
    pub width: u32,
    /// Height of the decoded frames, after applying rotation metadata.
    pub height: u32,
    /// The (average) frame rate the video is decoded at; variable-rate input is resampled to it.
    pub fps: FrameRate,
    /// Duration in seconds.
    pub duration_secs: f64,
    /// Frames we expect to decode.
    pub expected_frames: u64,
    /// Rotation metadata in degrees (0, 90, 180, 270).
    pub rotation: i32,
    /// Video codec name, as ffprobe names it.
    pub codec: String,
    /// True when the video carries VP8/VP9 alpha, which only libvpx decodes.
    pub vpx_alpha: bool,
    /// True when the input has at least one audio stream.
    pub has_audio: bool,
    /// The colour matrix and range of the decoded frames.
    pub color: ColorSpace,
    /// Only the first this many seconds are read (a preview); `None`: the whole input.
    pub read_secs: Option<f64>,
}

impl VideoInfo {
    /// The same input, read only up to `secs` seconds (when that is shorter than the whole).
    pub fn trimmed(mut self, secs: f64) -> VideoInfo {
        if secs > 0.0 && secs < self.duration_secs {
            self.duration_secs = secs;
            self.expected_frames = ((secs * self.fps.as_f64()).round() as u64).max(1);
            self.read_secs = Some(secs);
        }
        self
    }
}

#[derive(Deserialize)]
struct ProbeOutput {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    format: Option<ProbeFormat>,
}

#[derive(Deserialize)]
struct ProbeFormat {
    format_name: Option<String>,
    duration: Option<String>,
}

#[derive(Deserialize)]
struct ProbeStream {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    nb_frames: Option<String>,
    duration: Option<String>,
    pix_fmt: Option<String>,
    color_space: Option<String>,
    color_range: Option<String>,
    #[serde(default)]
    tags: std::collections::HashMap<String, String>,
    #[serde(default)]
    side_data_list: Vec<SideData>,
}

#[derive(Deserialize)]
struct SideData {
    rotation: Option<f64>,
}

/// Formats that are single pictures (or picture sequences), not videos.
const IMAGE_FORMATS: &[&str] = &["png_pipe", "jpeg_pipe", "bmp_pipe", "tiff_pipe", "image2", "svg_pipe", "gif_pipe"];

/// Checks that `path` is a picture ffmpeg can decode completely (a background image): a broken
/// one would otherwise make the looping image input of the encoder spin forever.
pub fn check_picture(path: &Path) -> Result<()> {
    let args: Vec<String> = ["-nostdin", "-v", "error", "-i"]
        .iter()
        .map(|s| s.to_string())
        .chain([path.to_string_lossy().into_owned()])
        .chain(["-frames:v", "1", "-f", "null", "-"].iter().map(|s| s.to_string()))
        .collect();
    let bad = |why: String| {
        EngineError::InvalidOptions(format!("background image {} is not a readable picture: {why}", path.display()))
    };
    let mut child = process::Child::spawn("ffmpeg", &args, "probe", false)?;
    drop(child.take_stdout());
    match child.finish() {
        Ok(stderr) if stderr.trim().is_empty() => Ok(()),
        Ok(stderr) => Err(bad(stderr.lines().last().unwrap_or_default().trim().to_string())),
        Err(EngineError::Ffmpeg { message, .. }) => Err(bad(message)),
        Err(other) => Err(other),
    }
}

/// Probes `path` with ffprobe and checks it against `limits`.
pub fn probe(path: &Path, limits: &Limits) -> Result<VideoInfo> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => EngineError::InvalidInput(format!("{} does not exist", path.display())),
        _ => EngineError::Io { context: format!("reading {}", path.display()), source: e },
    })?;
    if !meta.is_file() {
        return Err(EngineError::InvalidInput(format!("{} is not a file", path.display())));
    }
    if meta.len() == 0 {
        return Err(EngineError::InvalidInput("the file is empty (0 bytes)".into()));
    }
    let args: Vec<String> = [
        "-v", "error", "-of", "json", "-show_entries",
        "format=duration,format_name:stream=index,codec_type,codec_name,width,height,avg_frame_rate,r_frame_rate,nb_frames,duration,pix_fmt,color_space,color_range:stream_tags=rotate,alpha_mode:stream_side_data=rotation",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([path.to_string_lossy().into_owned()])
    .collect();
    let json = process::run_to_string("ffprobe", &args, "probe").map_err(|e| match e {
        EngineError::Ffmpeg { message, .. } => {
            EngineError::InvalidInput(format!("not a readable video file (ffprobe: {message})"))
        }
        other => other,
    })?;
    let out: ProbeOutput = serde_json::from_str(&json)
        .map_err(|e| EngineError::InvalidInput(format!("ffprobe gave unreadable output: {e}")))?;
    interpret(out, limits)
}

fn interpret(out: ProbeOutput, limits: &Limits) -> Result<VideoInfo> {
    let format_name = out.format.as_ref().and_then(|f| f.format_name.clone()).unwrap_or_default();
    let has_audio = out.streams.iter().any(|s| s.codec_type.as_deref() == Some("audio"));
    let Some(video) = out.streams.iter().find(|s| s.codec_type.as_deref() == Some("video")) else {
        return Err(EngineError::InvalidInput(if has_audio {
            "the file has audio but no video stream".into()
        } else {
            "the file has no video stream".into()
        }));
    };
    let codec = video.codec_name.clone().unwrap_or_default();
    if codec == "webp" || format_name == "webp_pipe" {
        return Err(EngineError::UnsupportedInput(
            "WebP input is not supported (ffmpeg cannot decode animated WebP); convert it to MP4 or WebM first".into(),
        ));
    }
    if IMAGE_FORMATS.contains(&format_name.as_str()) {
        return Err(EngineError::InvalidInput(format!("this is a still image ({format_name}), not a video")));
    }
    let (w, h) = (video.width.unwrap_or(0), video.height.unwrap_or(0));
    if w == 0 || h == 0 {
        return Err(EngineError::InvalidInput("the video stream has no frame size".into()));
    }
    let rotation = video
        .side_data_list
        .iter()
        .find_map(|s| s.rotation)
        .or_else(|| video.tags.get("rotate").and_then(|r| r.parse().ok()))
        .map(|r: f64| (r.round() as i32).rem_euclid(360))
        .unwrap_or(0);
    // The ffmpeg CLI autorotates on decode, so frames come out with the display orientation.
    let (width, height) = if rotation % 180 == 90 { (h, w) } else { (w, h) };
    if width > limits.max_side || height > limits.max_side {
        return Err(EngineError::UnsupportedInput(format!(
            "frame size {width}x{height} is larger than the limit of {0}x{0}",
            limits.max_side
        )));
    }
    let fps = video
        .avg_frame_rate
        .as_deref()
        .and_then(FrameRate::parse)
        .or_else(|| video.r_frame_rate.as_deref().and_then(FrameRate::parse))
        .ok_or_else(|| EngineError::InvalidInput("the video stream has no frame rate".into()))?;
    if fps.as_f64() > limits.max_fps {
        return Err(EngineError::UnsupportedInput(format!(
            "frame rate {:.1} fps is above the limit of {} fps",
            fps.as_f64(),
            limits.max_fps
        )));
    }
    let parse_secs =
        |s: &Option<String>| s.as_deref().and_then(|d| d.parse::<f64>().ok()).filter(|d| d.is_finite() && *d > 0.0);
    let duration_secs = parse_secs(&video.duration)
        .or_else(|| parse_secs(&out.format.as_ref().and_then(|f| f.duration.clone())))
        .unwrap_or(0.0);
    if duration_secs > limits.max_duration_secs {
        return Err(EngineError::UnsupportedInput(format!(
            "duration {:.0} s is longer than the limit of {:.0} s",
            duration_secs, limits.max_duration_secs
        )));
    }
    let counted = video.nb_frames.as_deref().and_then(|n| n.parse::<u64>().ok()).filter(|n| *n > 0);
    let expected_frames = counted.unwrap_or_else(|| (duration_secs * fps.as_f64()).round() as u64).max(1);
    Ok(VideoInfo {
        width,
        height,
        fps,
        duration_secs,
        expected_frames,
        rotation,
        vpx_alpha: video.tags.get("alpha_mode").map(String::as_str) == Some("1")
            && matches!(codec.as_str(), "vp9" | "vp8"),
        codec,
        has_audio,
        read_secs: None,
        color: ColorSpace {
            bt709: video.color_space.as_deref() == Some("bt709"),
            // JPEG-style "yuvj" formats are full range whatever the tag says.
            full_range: video.color_range.as_deref() == Some("pc")
                || video.pix_fmt.as_deref().is_some_and(|f| f.starts_with("yuvj")),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<VideoInfo> {
        interpret(serde_json::from_str(json).unwrap(), &Limits::default())
    }

    #[test]
    fn rotation_swaps_the_frame_size() {
        let info = parse(r#"{"streams":[{"codec_type":"video","codec_name":"h264","width":640,"height":360,
            "avg_frame_rate":"30/1","nb_frames":"120","side_data_list":[{"side_data_type":"Display Matrix","rotation":-90}]}],
            "format":{"format_name":"mov,mp4","duration":"4.0"}}"#).unwrap();
        assert_eq!((info.width, info.height, info.rotation), (360, 640, 270));
        assert_eq!(info.expected_frames, 120);
    }

    #[test]
    fn missing_frame_count_falls_back_to_duration_times_fps() {
        let info = parse(
            r#"{"streams":[{"codec_type":"video","codec_name":"vp9","width":64,"height":48,
            "avg_frame_rate":"30000/1001","tags":{"alpha_mode":"1"}},{"codec_type":"audio"}],
            "format":{"format_name":"matroska,webm","duration":"2.002"}}"#,
        )
        .unwrap();
        assert_eq!(info.expected_frames, 60);
        assert!(info.vpx_alpha && info.has_audio);
        assert_eq!(info.fps.to_string(), "30000/1001");
    }

    #[test]
    fn audio_only_and_absurd_inputs_are_refused_with_reasons() {
        let audio = parse(r#"{"streams":[{"codec_type":"audio"}],"format":{"format_name":"mp3"}}"#).unwrap_err();
        assert!(audio.to_string().contains("audio but no video"), "{audio}");
        let huge = parse(
            r#"{"streams":[{"codec_type":"video","width":100000,"height":10,"avg_frame_rate":"30/1"}],"format":{}}"#,
        )
        .unwrap_err();
        assert_eq!(huge.code(), "unsupported_input");
        let long = parse(r#"{"streams":[{"codec_type":"video","width":10,"height":10,"avg_frame_rate":"30/1","duration":"99999999"}],"format":{}}"#).unwrap_err();
        assert!(long.to_string().contains("longer than the limit"), "{long}");
    }
}
