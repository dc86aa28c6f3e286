//! Bad input gets a clear error naming the problem: never a panic, a hang or a partial file.

mod common;

use std::path::{Path, PathBuf};

use clearbg_engine::{Background, OutputFormat, Tier};
use common::*;

/// Runs the light model on `input` into a fresh directory and returns the error, checking that
/// the directory holds nothing afterwards (no output, no temporary file).
fn refused(input: &Path) -> clearbg_engine::EngineError {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.webm");
    let err = run(&mut segmenter(Tier::Light), &request(input, &out, OutputFormat::Webm, Background::Transparent))
        .expect_err("bad input must be refused");
    assert!(files_in(out_dir.path()).is_empty(), "left behind: {:?}", files_in(out_dir.path()));
    assert!(err.is_input_error(), "{err} should be blamed on the input");
    err
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_text_file_is_not_a_video() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused(&write(dir.path(), "notes.mp4", b"these are not the frames you are looking for\n"));
    assert!(err.to_string().contains("not a readable video file"), "{err}");
}

#[test]
fn a_zero_byte_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused(&write(dir.path(), "empty.mp4", b""));
    assert!(err.to_string().contains("empty (0 bytes)"), "{err}");
}

#[test]
fn a_missing_file_is_named() {
    let err = refused(Path::new("/nonexistent/clip.mp4"));
    assert!(err.to_string().contains("/nonexistent/clip.mp4 does not exist"), "{err}");
}

#[test]
fn truncated_files_are_refused_whether_or_not_the_index_survived() {
    let dir = tempfile::tempdir().unwrap();
    for (name, faststart) in [("index-at-end.mp4", false), ("index-first.mp4", true)] {
        let full = dir.path().join(format!("full-{name}"));
        let mut args = vec![
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25:duration=4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ];
        if faststart {
            args.extend(["-movflags", "+faststart"]);
        }
        args.push(full.to_str().unwrap());
        ffmpeg(&args);
        let bytes = std::fs::read(&full).unwrap();
        let cut = write(dir.path(), name, &bytes[..bytes.len() / 2]);
        let err = refused(&cut);
        let text = err.to_string();
        assert!(text.contains("truncated") || text.contains("moov atom not found"), "{name}: {text}");
    }
}

#[test]
fn audio_only_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let audio = dir.path().join("talk.m4a");
    ffmpeg(&["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", audio.to_str().unwrap()]);
    let err = refused(&audio);
    assert!(err.to_string().contains("audio but no video"), "{err}");
}

#[test]
fn animated_webp_input_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let webp = dir.path().join("anim.webp");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=10:duration=1",
        "-c:v",
        "libwebp_anim",
        "-loop",
        "0",
        webp.to_str().unwrap(),
    ]);
    let err = refused(&webp);
    assert_eq!(err.code(), "unsupported_input");
    assert!(err.to_string().contains("WebP"), "{err}");
}

#[test]
fn a_still_image_is_not_a_video() {
    let err = refused(&home().fixtures_dir().join("astronaut.png"));
    assert!(err.to_string().contains("still image"), "{err}");
}

#[test]
fn absurd_dimensions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wide = dir.path().join("wide.mov");
    ffmpeg(&["-f", "lavfi", "-i", "color=s=9000x16:d=0.2", "-c:v", "png", wide.to_str().unwrap()]);
    let err = refused(&wide);
    assert!(err.to_string().contains("9000x16 is larger than the limit"), "{err}");
}

#[test]
fn absurd_duration_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    // Three hours and a bit at 1 fps and 16x16: small to make, too long to accept.
    let long = dir.path().join("long.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=s=16x16:r=1:d=11000",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        long.to_str().unwrap(),
    ]);
    let started = std::time::Instant::now();
    let err = refused(&long);
    assert!(err.to_string().contains("longer than the limit"), "{err}");
    assert!(started.elapsed().as_secs() < 20, "refused from the probe, without decoding");
}
