//! ffprobe → [`VideoInfo`]: what the pipeline needs to know before it decodes a single frame,
//! and the place where unreadable, hostile or absurd inputs are refused with a clear reason.
//!
//! Everything the limits protect is checked here, before any decoding: the container (from the
//! bytes, [`crate::container`]), the frame size and area, the frame rate, the duration (which
//! must be known: it is what a job is billed for), and a frame count that fits that duration.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::container::{Container, Picture};
use crate::error::{EngineError, Result};
use crate::frame::ColorSpace;
use crate::process::{self, Watch};

/// Limits that protect the machine from absurd or hostile inputs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted width or height, in pixels (after rotation).
    pub max_side: u32,
    /// Largest accepted frame area, in pixels: of the input, and of what the composition makes
    /// of it (canvas, scaled subject). Memory per frame follows it.
    pub max_pixels: u64,
    /// Longest accepted duration, in seconds.
    pub max_duration_secs: f64,
    /// Highest accepted frame rate; higher rates are almost always broken timestamps.
    pub max_fps: f64,
    /// A job in which no frame moves for this long is stopped (a hung ffmpeg, say).
    pub stall_timeout: Duration,
    /// Time allowed to probe a small file; larger files get more ([`Limits::probe_deadline`]).
    pub probe_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // 8K on the long side, 4096x4096 in area, three hours, 240 fps: beyond any real upload
        // we want to serve.
        Limits {
            max_side: 8192,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_duration_secs: 3.0 * 3600.0,
            max_fps: 240.0,
            stall_timeout: Duration::from_secs(120),
            probe_timeout: Duration::from_secs(15),
        }
    }
}

/// 4096x4096: 16.8 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 4096 * 4096;

/// Reading rate assumed when scaling the probe's deadline to a file's size (ffprobe only demuxes:
/// real disks and page caches do far better).
const PROBE_BYTES_PER_SEC: u64 = 32 << 20;

impl Limits {
    /// When probing a file of `bytes` must have ended: the base timeout plus a second per 32 MiB.
    pub fn probe_deadline(&self, bytes: u64) -> Instant {
        Instant::now() + self.probe_timeout + Duration::from_secs(bytes / PROBE_BYTES_PER_SEC)
    }

    /// Refuses a frame of `width`x`height` (`what`: "frame size", "canvas"…) above the limits.
    pub fn check_frame(&self, what: &str, width: u32, height: u32) -> Result<()> {
        if width > self.max_side || height > self.max_side {
            return Err(EngineError::UnsupportedInput(format!(
                "{what} {width}x{height} is larger than the limit of {0}x{0}",
                self.max_side
            )));
        }
        if width as u64 * height as u64 > self.max_pixels {
            return Err(EngineError::UnsupportedInput(format!(
                "{what} {width}x{height} ({:.1} megapixels) is larger than the limit of {:.1} megapixels",
                width as f64 * height as f64 / 1e6,
                self.max_pixels as f64 / 1e6
            )));
        }
        Ok(())
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
    /// The container its bytes say it is; every ffmpeg that reads it forces this demuxer.
    pub container: Container,
    /// Width of the decoded frames, after applying rotation metadata.
    pub width: u32,
    /// Height of the decoded frames, after applying rotation metadata.
    pub height: u32,
    /// The (average) frame rate the video is decoded at; variable-rate input is resampled to it.
    pub fps: FrameRate,
    /// Duration in seconds: from the container's header, or counted from its packets.
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
    /// The decoder refuses any frame larger than this many pixels (the limit the probe applied),
    /// so a stream that grows mid-way cannot allocate more than was checked.
    pub max_pixels: u64,
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

    /// The most frames the decoder may hand over: what the duration promises at this rate, and
    /// a second's slack for rounding. A stream with more (timestamps that lie) is cut there, so
    /// nobody gets more frames processed than the duration they were billed for.
    pub fn frame_cap(&self) -> u64 {
        let fps = self.fps.as_f64();
        let by_duration = (self.duration_secs * fps).ceil() as u64;
        by_duration.max(self.expected_frames) + fps.ceil() as u64
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
    nb_read_packets: Option<String>,
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

/// `-protocol_whitelist file -f DEMUXER`: the options every reader of an input gets, so the
/// demuxer is the one the bytes named and nothing but the file itself can be opened.
pub(crate) fn forced_input(demuxer: &str) -> Vec<String> {
    ["-protocol_whitelist", "file", "-f", demuxer].map(String::from).to_vec()
}

/// The same for a picture: one file, decoded as what its bytes say.
pub(crate) fn forced_picture_input(picture: Picture) -> Vec<String> {
    ["-protocol_whitelist", "file", "-f", "image2", "-pattern_type", "none", "-c:v", picture.decoder()]
        .map(String::from)
        .to_vec()
}

/// A path as an ffmpeg input or output: `file:` first, so that no part of the name (a colon, a
/// leading `-`) is read as a protocol or an option.
pub(crate) fn file_arg(path: &Path) -> String {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    format!("file:{}", path.display())
}

/// Checks that `path` is a picture ffmpeg can decode completely (a background image) within the
/// limits: a broken one would otherwise make the looping image input of the encoder spin
/// forever, and a huge one would cost memory on every frame.
pub fn check_picture(path: &Path, limits: &Limits, cancelled: &dyn Fn() -> bool) -> Result<Picture> {
    let picture = Picture::of_file(path)?;
    let mut args = strings(&["-nostdin", "-hide_banner", "-v", "error"]);
    args.extend(forced_picture_input(picture));
    args.extend(["-max_pixels".into(), limits.max_pixels.to_string(), "-i".into(), file_arg(path)]);
    args.extend(strings(&["-frames:v", "1", "-f", "null", "-"]));
    let bad =
        |why: String| EngineError::InvalidOptions(format!("the background image is not a readable picture: {why}"));
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let watch = Watch { deadline: limits.probe_deadline(bytes), cancelled };
    match process::run_to_string("ffmpeg", &args, "probe", &watch) {
        Ok(_) => Ok(picture),
        Err(EngineError::Ffmpeg { message, .. }) if message.contains("max pixel count") => {
            Err(bad(format!("it is larger than {:.1} megapixels", limits.max_pixels as f64 / 1e6)))
        }
        Err(EngineError::Ffmpeg { message, .. }) => Err(bad(message)),
        Err(other) => Err(other),
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Probes `path` with ffprobe and checks it against `limits`. `cancelled` is asked every few
/// milliseconds; ffprobe is killed when it says yes or the probe deadline passes.
pub fn probe(path: &Path, limits: &Limits, cancelled: &dyn Fn() -> bool) -> Result<VideoInfo> {
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
    let container = Container::of_file(path)?;
    let watch = Watch { deadline: limits.probe_deadline(meta.len()), cancelled };
    let ffprobe = |entries: &[&str]| -> Result<ProbeOutput> {
        let mut args = strings(&["-v", "error"]);
        args.extend(forced_input(container.demuxer()));
        args.extend(["-max_pixels".into(), limits.max_pixels.to_string()]);
        args.extend(entries.iter().map(|s| s.to_string()));
        args.extend(["-of".into(), "json".into(), file_arg(path)]);
        let json = process::run_to_string("ffprobe", &args, "probe", &watch).map_err(|e| match e {
            EngineError::Ffmpeg { message, .. } if message.contains("max pixel count") => {
                EngineError::UnsupportedInput(format!(
                    "the frame size is larger than the limit of {:.1} megapixels (ffprobe: {message})",
                    limits.max_pixels as f64 / 1e6
                ))
            }
            EngineError::Ffmpeg { message, .. } => {
                EngineError::InvalidInput(format!("not a readable video file (ffprobe: {message})"))
            }
            other => other,
        })?;
        serde_json::from_str(&json)
            .map_err(|e| EngineError::InvalidInput(format!("ffprobe gave unreadable output: {e}")))
    };
    let out = ffprobe(&[
        "-show_entries",
        "format=duration:stream=index,codec_type,codec_name,width,height,avg_frame_rate,r_frame_rate,nb_frames,duration,pix_fmt,color_space,color_range:stream_tags=rotate,alpha_mode:stream_side_data=rotation",
    ])?;
    // No duration in the header (a live recording, a stream): count the video packets, which
    // only demuxes, and take the duration from the count.
    let packets = match header_duration(&out) {
        Some(_) => None,
        None => {
            let counted =
                ffprobe(&["-count_packets", "-select_streams", "v:0", "-show_entries", "stream=nb_read_packets"])?;
            counted.streams.first().and_then(|s| s.nb_read_packets.as_deref()).and_then(|n| n.parse().ok())
        }
    };
    interpret(container, &out, limits, packets)
}

fn video_stream(out: &ProbeOutput) -> Option<&ProbeStream> {
    out.streams.iter().find(|s| s.codec_type.as_deref() == Some("video"))
}

/// The duration the header states: the video stream's, else the container's.
fn header_duration(out: &ProbeOutput) -> Option<f64> {
    let parse = |s: Option<&String>| s.and_then(|d| d.parse::<f64>().ok()).filter(|d| d.is_finite() && *d > 0.0);
    video_stream(out)
        .and_then(|v| parse(v.duration.as_ref()))
        .or_else(|| parse(out.format.as_ref().and_then(|f| f.duration.as_ref())))
}

/// Turns ffprobe's answer into [`VideoInfo`], refusing what the limits do not allow. `packets`:
/// the video packets counted by a second pass, when the header had no duration.
fn interpret(container: Container, out: &ProbeOutput, limits: &Limits, packets: Option<u64>) -> Result<VideoInfo> {
    let has_audio = out.streams.iter().any(|s| s.codec_type.as_deref() == Some("audio"));
    let Some(video) = video_stream(out) else {
        return Err(EngineError::InvalidInput(if has_audio {
            "the file has audio but no video stream".into()
        } else {
            "the file has no video stream".into()
        }));
    };
    let codec = video.codec_name.clone().unwrap_or_default();
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
    limits.check_frame("frame size", width, height)?;
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
    // What cannot be measured cannot be billed or bounded: no duration, no job.
    let duration_secs = header_duration(out)
        .or_else(|| packets.filter(|n| *n > 0).map(|n| n as f64 / fps.as_f64()))
        .ok_or_else(|| {
            EngineError::UnsupportedInput(
                "the video's duration cannot be established (its header states none and no video packets were found)"
                    .into(),
            )
        })?;
    if duration_secs > limits.max_duration_secs {
        return Err(EngineError::UnsupportedInput(format!(
            "duration {:.0} s is longer than the limit of {:.0} s",
            duration_secs, limits.max_duration_secs
        )));
    }
    let counted = video.nb_frames.as_deref().and_then(|n| n.parse::<u64>().ok()).filter(|n| *n > 0).or(packets);
    // More frames than the duration can hold at the highest rate we accept: timestamps that lie
    // to make a long decode look short.
    if let Some(n) = counted.filter(|n| *n as f64 > (duration_secs * limits.max_fps).ceil() + 1.0) {
        return Err(EngineError::UnsupportedInput(format!(
            "the video holds {n} frames in {duration_secs:.3} s, more than {} fps allows",
            limits.max_fps
        )));
    }
    let expected_frames = counted.unwrap_or_else(|| (duration_secs * fps.as_f64()).round() as u64).max(1);
    Ok(VideoInfo {
        container,
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
        max_pixels: limits.max_pixels,
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
        interpret(Container::Mp4, &serde_json::from_str(json).unwrap(), &Limits::default(), None)
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

    #[test]
    fn the_frame_area_is_capped_not_only_the_sides() {
        let square = |side: u32| {
            parse(&format!(
                r#"{{"streams":[{{"codec_type":"video","width":{side},"height":{side},"avg_frame_rate":"30/1","duration":"1"}}],"format":{{}}}}"#
            ))
        };
        assert!(square(4096).is_ok());
        let err = square(8192).unwrap_err();
        assert_eq!(err.code(), "unsupported_input");
        assert!(err.to_string().contains("megapixels"), "{err}");
    }

    #[test]
    fn a_duration_must_be_stated_or_counted() {
        let json = r#"{"streams":[{"codec_type":"video","width":64,"height":48,"avg_frame_rate":"25/1"}],"format":{}}"#;
        let out: ProbeOutput = serde_json::from_str(json).unwrap();
        let none = interpret(Container::WebM, &out, &Limits::default(), Some(0)).unwrap_err();
        assert!(none.to_string().contains("duration cannot be established"), "{none}");
        let counted = interpret(Container::WebM, &out, &Limits::default(), Some(50)).unwrap();
        assert_eq!((counted.duration_secs, counted.expected_frames), (2.0, 50));
    }

    #[test]
    fn more_frames_than_the_duration_holds_is_refused() {
        // 100000 frames claimed to last one second: a cheap-looking, endless decode.
        let err = parse(
            r#"{"streams":[{"codec_type":"video","width":64,"height":48,"avg_frame_rate":"30/1","nb_frames":"100000","duration":"1"}],"format":{}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("more than 240 fps allows"), "{err}");
    }

    #[test]
    fn the_frame_cap_follows_the_duration() {
        let info = parse(
            r#"{"streams":[{"codec_type":"video","width":64,"height":48,"avg_frame_rate":"30/1","nb_frames":"60","duration":"2"}],"format":{}}"#,
        )
        .unwrap();
        assert_eq!(info.frame_cap(), 90);
    }
}
