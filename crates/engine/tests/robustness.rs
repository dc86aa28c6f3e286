//! The awkward inputs real users send (rotation, odd sizes, variable frame rate, no audio, one
//! frame, 4K), real footage of a person, and failures that must not hang or leak processes.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clearbg_engine::{remove_background, Background, OutputFormat, Progress, Tier};
use common::*;

fn video_size(path: &Path) -> (u64, u64) {
    let probe = probe_json(path);
    let v = stream(&probe, "video").unwrap();
    (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap())
}

fn frame_count(path: &Path) -> u64 {
    let probe = probe_json(path);
    stream(&probe, "video").unwrap()["nb_read_frames"].as_str().unwrap().parse().unwrap()
}

#[test]
fn rotation_metadata_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let plain = lavfi_clip(dir.path(), "plain.mp4", "64x48", 10, 0.5, false);
    let rotated = dir.path().join("rotated.mp4");
    ffmpeg(&["-i", plain.to_str().unwrap(), "-c", "copy", "-metadata:s:v:0", "rotate=90", rotated.to_str().unwrap()]);
    let out = dir.path().join("out.webm");
    let summary =
        run(&mut segmenter(Tier::Light), &request(&rotated, &out, OutputFormat::Webm, Background::Transparent))
            .unwrap();
    assert_eq!((summary.input.width, summary.input.height), (48, 64));
    assert_eq!(video_size(&out), (48, 64));
    assert_eq!(frame_count(&out), 5);
}

#[test]
fn odd_sizes_work_in_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    // 4:4:4 H.264 can be odd-sized (4:2:0 cannot; testsrc2 is 4:2:0 too): a 65x49 input.
    let odd = dir.path().join("odd.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=65x49:rate=10:duration=0.3",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=0.3",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv444p",
        "-c:a",
        "aac",
        "-shortest",
        odd.to_str().unwrap(),
    ]);
    assert_eq!(video_size(&odd), (65, 49));
    let mut seg = segmenter(Tier::Light);
    let webm = dir.path().join("odd.webm");
    run(&mut seg, &request(&odd, &webm, OutputFormat::Webm, Background::Transparent)).unwrap();
    assert_eq!(video_size(&webm), (65, 49));
    // H.264 needs even sizes: the last row and column are cropped, never a failure.
    let mp4 = dir.path().join("odd.mp4.out.mp4");
    run(&mut seg, &request(&odd, &mp4, OutputFormat::Mp4, Background::Color([0, 0, 255]))).unwrap();
    assert_eq!(video_size(&mp4), (64, 48));
}

#[test]
fn variable_frame_rate_keeps_duration_and_audio_in_sync() {
    let dir = tempfile::tempdir().unwrap();
    // Frames at irregular times: the first second at 30 fps, then every third frame.
    let vfr = dir.path().join("vfr.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x64:rate=30:duration=3",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=3",
        "-vf",
        "select='lt(n\\,30)+not(mod(n\\,3))'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-shortest",
        vfr.to_str().unwrap(),
    ]);
    let out = dir.path().join("vfr.webm");
    let summary =
        run(&mut segmenter(Tier::Light), &request(&vfr, &out, OutputFormat::Webm, Background::Transparent)).unwrap();
    let probe = probe_json(&out);
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 3.0).abs() < 0.25, "duration {duration}");
    let fps = summary.input.fps.as_f64();
    assert!((summary.frames as f64 - fps * 3.0).abs() <= 2.0, "{} frames at {fps} fps", summary.frames);
    assert!(stream(&probe, "audio").is_some());
}

#[test]
fn silent_and_single_frame_clips_work() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=25",
        "-frames:v",
        "1",
        "-c:v",
        "libx264",
        one.to_str().unwrap(),
    ]);
    let mut seg = segmenter(Tier::Light);
    for format in [OutputFormat::Webm, OutputFormat::Mov, OutputFormat::Gif] {
        let out = dir.path().join(format!("one.{}", format.extension()));
        let summary = run(&mut seg, &request(&one, &out, format, Background::Transparent)).unwrap();
        assert_eq!(summary.frames, 1);
        assert_eq!(frame_count(&out), 1, "{}", format.name());
        assert!(stream(&probe_json(&out), "audio").is_none());
    }
}

#[test]
fn four_k_input_keeps_its_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let uhd = lavfi_clip(dir.path(), "uhd.mp4", "3840x2160", 10, 0.3, false);
    let out = dir.path().join("uhd.webm");
    let summary =
        run(&mut segmenter(Tier::Light), &request(&uhd, &out, OutputFormat::Webm, Background::Transparent)).unwrap();
    assert_eq!(summary.frames, 3);
    assert_eq!(video_size(&out), (3840, 2160));
}

/// On real footage of a man talking in a car, both people tiers find him: plausible coverage,
/// matte centred where he sits, background corners clear.
#[test]
fn the_person_in_real_footage_is_found() {
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
    for tier in [Tier::Light, Tier::Human] {
        let out = dir.path().join(format!("{tier}.zip"));
        run(&mut segmenter(tier), &request(&clip, &out, OutputFormat::PngSequence, Background::Transparent)).unwrap();
        let decoded = decode_png_zip(&out, &dir.path().join(tier.name()));
        let (w, h) = (decoded.width as usize, decoded.height as usize);
        for (i, frame) in decoded.frames.iter().enumerate().step_by(10) {
            let alpha: Vec<f64> = frame.chunks_exact(4).map(|p| p[3] as f64 / 255.0).collect();
            let total: f64 = alpha.iter().sum();
            let coverage = total / alpha.len() as f64;
            assert!((0.25..0.8).contains(&coverage), "{tier} frame {i}: coverage {coverage:.2}");
            let cx = alpha.iter().enumerate().map(|(k, a)| (k % w) as f64 * a).sum::<f64>() / total / w as f64;
            assert!((0.35..0.65).contains(&cx), "{tier} frame {i}: matte centred at x={cx:.2}");
            let corner = (0..h / 6).flat_map(|y| (0..w / 6).map(move |x| y * w + x)).map(|k| alpha[k]).sum::<f64>()
                / ((h / 6) * (w / 6)) as f64;
            assert!(corner < 0.1, "{tier} frame {i}: top-left background alpha {corner:.2}");
        }
    }
}

/// Processes still alive whose command line mentions every one of `markers`: (pid, cmdline).
fn processes_mentioning(markers: &[&str]) -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let entry = e.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            markers.iter().all(|m| text.contains(m)).then_some((pid, text))
        })
        .collect()
}

/// After `after` frames, sends `signal` to this job's encoder (found by its temp directory).
struct SignalEncoder {
    marker: String,
    after: u64,
    signal: &'static str,
    sent: AtomicU64,
}

impl Progress for SignalEncoder {
    fn advance(&self, frames_done: u64) {
        if frames_done == self.after && self.sent.fetch_add(1, Ordering::SeqCst) == 0 {
            for (pid, _) in processes_mentioning(&[&self.marker, "pipe:0"]) {
                let status = std::process::Command::new("kill").args([self.signal, &pid.to_string()]).status().unwrap();
                assert!(status.success());
            }
        }
    }
}

/// Runs a 20 s clip whose encoder gets `signal` after 5 frames; returns the error, checking that
/// it came quickly, left no file and no process behind.
fn run_with_encoder_signal(signal: &'static str, limits: clearbg_engine::Limits) -> clearbg_engine::EngineError {
    let dir = tempfile::tempdir().unwrap();
    let clip = lavfi_clip(dir.path(), "clip.mp4", "320x240", 25, 20.0, true);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let mut req = request(&clip, &out_dir.join("out.webm"), OutputFormat::Webm, Background::Transparent);
    req.limits = limits;
    let marker = out_dir.to_str().unwrap().to_string();
    let progress = SignalEncoder { marker: marker.clone(), after: 5, signal, sent: AtomicU64::new(0) };
    let started = Instant::now();
    let err = remove_background(&mut segmenter(Tier::Light), &req, &progress).unwrap_err();
    assert_eq!(progress.sent.load(Ordering::SeqCst), 1, "the encoder was signalled");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert!(files_in(&out_dir).is_empty(), "left behind: {:?}", files_in(&out_dir));
    let survivors = processes_mentioning(&[dir.path().to_str().unwrap()]);
    assert!(survivors.is_empty(), "children outlived the job: {survivors:?}");
    err
}

#[test]
fn an_encoder_that_dies_fails_the_job_and_stops_the_decoder() {
    let err = run_with_encoder_signal("-KILL", Default::default());
    assert_eq!(err.code(), "encode_failed", "{err}");
}

#[test]
fn an_encoder_that_hangs_is_stopped_by_the_watchdog() {
    let limits = clearbg_engine::Limits { stall_timeout: Duration::from_secs(5), ..Default::default() };
    let err = run_with_encoder_signal("-STOP", limits);
    assert_eq!(err.code(), "stalled", "{err}");
}

#[test]
fn a_background_that_is_not_a_picture_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let clip = lavfi_clip(dir.path(), "clip.mp4", "64x48", 10, 0.3, false);
    let bogus = dir.path().join("bogus.png");
    std::fs::write(&bogus, b"not a png").unwrap();
    // A real PNG cut in half: ffprobe accepts its header, decoding it fails.
    let png = std::fs::read(home().fixtures_dir().join("astronaut.png")).unwrap();
    let cut = dir.path().join("cut.png");
    std::fs::write(&cut, &png[..png.len() / 2]).unwrap();
    for picture in [bogus, cut] {
        let out = dir.path().join("out.mp4");
        let err = run(
            &mut segmenter(Tier::Light),
            &request(&clip, &out, OutputFormat::Mp4, Background::Image(picture.clone())),
        )
        .unwrap_err();
        assert_eq!(err.code(), "invalid_options", "{err}");
        assert!(err.to_string().contains("not a readable picture"), "{err}");
        assert!(!out.exists());
    }
}

struct CancelAfter(u64, AtomicU64);

impl Progress for CancelAfter {
    fn advance(&self, frames_done: u64) {
        self.1.store(frames_done, Ordering::SeqCst);
    }
    fn cancelled(&self) -> bool {
        self.1.load(Ordering::SeqCst) >= self.0
    }
}

#[test]
fn cancelling_stops_quickly_and_reaps_both_children() {
    let dir = tempfile::tempdir().unwrap();
    let clip = lavfi_clip(dir.path(), "clip.mp4", "320x240", 25, 20.0, true);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("out.webm");
    let progress = CancelAfter(10, AtomicU64::new(0));
    let started = Instant::now();
    let err = remove_background(
        &mut segmenter(Tier::Light),
        &request(&clip, &out, OutputFormat::Webm, Background::Transparent),
        &progress,
    )
    .unwrap_err();
    assert_eq!(err.code(), "cancelled");
    assert!(progress.1.load(Ordering::SeqCst) < 100, "stopped soon after asking");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(files_in(&out_dir).is_empty(), "left behind: {:?}", files_in(&out_dir));
    assert!(processes_mentioning(&[dir.path().to_str().unwrap()]).is_empty(), "ffmpeg children outlived the job");
}

#[test]
fn composition_places_the_subject_on_a_larger_canvas() {
    let dir = tempfile::tempdir().unwrap();
    let clip = lavfi_clip(dir.path(), "clip.mp4", "64x48", 10, 0.3, false);
    let out = dir.path().join("placed.zip");
    let mut req = request(&clip, &out, OutputFormat::PngSequence, Background::Transparent);
    req.composition = clearbg_engine::Composition {
        canvas: Some((200, 100)),
        anchor: "bottom-right".parse().unwrap(),
        scale: 0.5,
        offset: (-10, -5),
    };
    run(&mut segmenter(Tier::Light), &req).unwrap();
    let decoded = decode_png_zip(&out, dir.path());
    assert_eq!((decoded.width, decoded.height, decoded.frames.len()), (200, 100, 3));
    // The 32x24 subject sits at x 158..190, y 71..95; everything else is the transparent canvas.
    let alpha = decoded.alpha(0);
    let outside = alpha.iter().enumerate().filter(|(k, _)| {
        let (x, y) = (k % 200, k / 200);
        !(158..190).contains(&x) || !(71..95).contains(&y)
    });
    assert!(outside.map(|(_, a)| *a as u32).max().unwrap() == 0, "the canvas is transparent outside the subject");
    // Subject pixels keep the video's colours (the test card is never black everywhere).
    let rgb_inside: u32 =
        (71..95).flat_map(|y| (158..190).map(move |x| y * 200 + x)).map(|k| decoded.frames[0][k * 4] as u32).sum();
    assert!(rgb_inside > 0);
}
