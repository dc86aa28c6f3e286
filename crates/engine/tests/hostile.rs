//! Hostile input: files that ask ffmpeg to read other files, that never end, that explode in
//! memory, or that hide how long they are. Each is refused before anything is decoded, with a
//! reason, leaving nothing behind.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use clearbg_engine::{remove_background, Background, Composition, EngineError, OutputFormat, Progress, Tier};
use common::*;

/// Runs `light` on `input` and returns the error, checking that nothing was written.
fn refused(input: &Path, composition: Composition) -> EngineError {
    let out_dir = tempfile::tempdir().unwrap();
    let mut req = request(input, &out_dir.path().join("out.webm"), OutputFormat::Webm, Background::Transparent);
    req.composition = composition;
    let err = run(&mut segmenter(Tier::Light), &req).expect_err("must be refused");
    assert!(files_in(out_dir.path()).is_empty(), "left behind: {:?}", files_in(out_dir.path()));
    err
}

#[test]
fn a_playlist_naming_local_files_is_never_opened() {
    let dir = tempfile::tempdir().unwrap();
    // A real video the playlist points at: if ffmpeg read the playlist, it would decode this.
    let secret = lavfi_clip(dir.path(), "secret.mp4", "64x48", 10, 1.0, false);
    let playlist = dir.path().join("upload.mp4");
    std::fs::write(
        &playlist,
        format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXTINF:0.001,\nfile://{}\n#EXT-X-ENDLIST\n",
            secret.display()
        ),
    )
    .unwrap();
    let err = refused(&playlist, Composition::default());
    assert_eq!(err.code(), "invalid_input", "{err}");
    assert!(err.is_input_error());
    assert!(err.to_string().contains("playlists"), "{err}");
}

#[test]
fn a_concat_list_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    lavfi_clip(dir.path(), "vid_other.mp4", "64x48", 10, 1.0, false);
    let list = dir.path().join("list.mp4");
    std::fs::write(&list, "ffconcat version 1.0\nfile vid_other.mp4\nfile vid_other.mp4\n").unwrap();
    assert_eq!(refused(&list, Composition::default()).code(), "invalid_input");
}

#[test]
fn a_huge_single_frame_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    // 8192x8192 of flat colour compresses to ~200 KB; decoding and encoding it would not.
    let big = dir.path().join("big.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=red:s=8192x8192:d=0.04",
        "-frames:v",
        "1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        big.to_str().unwrap(),
    ]);
    assert!(std::fs::metadata(&big).unwrap().len() < 1 << 20);
    let started = Instant::now();
    let err = refused(&big, Composition::default());
    assert_eq!(err.code(), "unsupported_input", "{err}");
    assert!(err.to_string().contains("megapixels"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[test]
fn a_canvas_or_scale_beyond_the_frame_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clip = lavfi_clip(dir.path(), "small.mp4", "176x144", 10, 0.3, false);
    let canvas = Composition { canvas: Some((8192, 8192)), ..Default::default() };
    let err = refused(&clip, canvas);
    assert_eq!(err.code(), "invalid_options", "{err}");
    assert!(err.to_string().contains("canvas 8192x8192"), "{err}");
    // A 1600x1600 input scaled 10x: the subject alone would be 16000x16000.
    let square = lavfi_clip(dir.path(), "square.mp4", "1600x1600", 10, 0.2, false);
    let scaled = Composition { canvas: Some((1600, 1600)), scale: 10.0, ..Default::default() };
    let err = refused(&square, scaled);
    assert_eq!(err.code(), "invalid_options", "{err}");
    assert!(err.to_string().contains("scaled subject"), "{err}");
}

#[test]
fn a_stream_without_a_stated_duration_is_measured_by_counting() {
    let dir = tempfile::tempdir().unwrap();
    // Written to a pipe, a WebM has no duration in its header (as browser recordings do).
    let webm = dir.path().join("live.webm");
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=2"])
        .args(["-c:v", "libvpx-vp9", "-deadline", "realtime", "-f", "webm", "pipe:1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&webm, &out.stdout).unwrap();
    let stated = probe_json(&webm);
    assert!(stated["format"]["duration"].is_null(), "the header states no duration: {stated}");
    let info = clearbg_engine::probe(&webm, &Default::default(), &|| false).unwrap();
    assert!((info.duration_secs - 2.0).abs() < 0.15, "counted {} s", info.duration_secs);
    let result = run(
        &mut segmenter(Tier::Light),
        &request(&webm, &dir.path().join("out.webm"), OutputFormat::Webm, Background::Transparent),
    )
    .unwrap();
    assert_eq!(result.frames, 20);
}

/// Cancels once its time has passed.
struct CancelAt(Instant);

impl Progress for CancelAt {
    fn cancelled(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// A 4K `original` job spends seconds on every frame inside ISNet: a cancel interrupts the
/// model mid-run instead of waiting for the frame to finish.
#[test]
fn a_cancel_interrupts_a_large_model_mid_frame() {
    let dir = tempfile::tempdir().unwrap();
    let clip = lavfi_clip(dir.path(), "uhd.mp4", "3840x2160", 25, 2.0, true);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let mut segmenter = segmenter(Tier::Original);
    let cancel_at = Instant::now() + Duration::from_secs(4);
    let progress = CancelAt(cancel_at);
    let err = remove_background(
        &mut segmenter,
        &request(&clip, &out_dir.join("out.webm"), OutputFormat::Webm, Background::Transparent),
        &progress,
    )
    .unwrap_err();
    let latency = cancel_at.elapsed();
    assert_eq!(err.code(), "cancelled", "{err}");
    println!("cancel to return: {latency:?}");
    assert!(latency < Duration::from_millis(1500), "the cancel took {latency:?}");
    assert!(files_in(&out_dir).is_empty());
    // The interrupted segmenter serves the next job as if nothing happened.
    let small = lavfi_clip(dir.path(), "small.mp4", "64x48", 10, 0.2, false);
    let done =
        run(&mut segmenter, &request(&small, &out_dir.join("next.webm"), OutputFormat::Webm, Background::Transparent))
            .unwrap();
    assert_eq!(done.frames, 2);
}

/// The largest frame accepted is also one every encoder can write (prores_aw cannot at 16 MP).
#[test]
fn the_largest_accepted_frame_is_written_as_prores() {
    let dir = tempfile::tempdir().unwrap();
    let clip = lavfi_clip(dir.path(), "max.mp4", "4096x4096", 10, 0.1, false);
    let out = dir.path().join("max.mov");
    let done = run(&mut segmenter(Tier::Light), &request(&clip, &out, OutputFormat::Mov, Background::Transparent))
        .expect("a frame at the area limit is accepted and encoded");
    assert_eq!(done.frames, 1);
    let probed = probe_json(&out);
    let video = stream(&probed, "video").unwrap();
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(4096), Some(4096)));
}
