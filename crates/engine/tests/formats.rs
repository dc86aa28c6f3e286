//! Every output format, decoded back: frame count, size, fps, audio, and the alpha the model
//! produced (compared with the lossless PNG sequence of the same run, within each codec's
//! tolerance).

mod common;

use clearbg_engine::{Background, OutputFormat, Tier};
use common::*;

/// One second of the real carphone footage at 12 fps (so GIF keeps every frame), with audio.
fn person_clip_with_audio(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("person.mp4");
    let src = carphone();
    ffmpeg(&[
        "-i",
        src.to_str().unwrap(),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000:duration=1",
        "-t",
        "1",
        "-vf",
        "fps=12",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        path.to_str().unwrap(),
    ]);
    path
}

fn fps_of(probe: &serde_json::Value) -> String {
    stream(probe, "video").unwrap()["r_frame_rate"].as_str().unwrap().to_string()
}

#[test]
fn every_format_round_trips_the_models_alpha() {
    let dir = tempfile::tempdir().unwrap();
    let input = person_clip_with_audio(dir.path());
    let mut seg = segmenter(Tier::Light);

    // The lossless reference: RGBA PNGs, exactly what the pipeline produced.
    let zip = dir.path().join("ref.zip");
    let summary = run(&mut seg, &request(&input, &zip, OutputFormat::PngSequence, Background::Transparent)).unwrap();
    assert_eq!(summary.frames, 12);
    // Every stage's working time is counted, and none is longer than the whole job.
    let stages = summary.stages;
    for (stage, time) in
        [("decode", stages.decode), ("segment", stages.segment), ("matte", stages.matte), ("encode", stages.encode)]
    {
        assert!(time > std::time::Duration::ZERO && time <= summary.wall, "{stage}: {time:?} of {:?}", summary.wall);
    }
    let reference = decode_png_zip(&zip, dir.path());
    assert_eq!((reference.width, reference.height, reference.frames.len()), (176, 144, 12));
    let ref_alpha: Vec<u8> = (0..12).flat_map(|i| reference.alpha(i)).collect();
    let coverage = ref_alpha.iter().filter(|&&a| a >= 128).count() as f64 / ref_alpha.len() as f64;
    assert!((0.15..0.85).contains(&coverage), "the person covers {coverage:.2} of the frame");
    assert!(ref_alpha.iter().any(|&a| a > 10 && a < 245), "a matte has soft edges");

    // Transparent formats: alpha within the codec's tolerance of the reference.
    let cases: [(OutputFormat, &str, Option<&str>, f64, bool); 4] = [
        (OutputFormat::Webm, "out.webm", Some("libvpx-vp9"), 2.0, true),
        (OutputFormat::Mov, "out.mov", None, 0.5, true),
        (OutputFormat::Webp, "out.webp", None, 1.0, false),
        (OutputFormat::Gif, "out.gif", None, 0.0, false),
    ];
    for (format, name, decoder, tolerance, audio) in cases {
        let out = dir.path().join(name);
        let summary = run(&mut seg, &request(&input, &out, format, Background::Transparent)).unwrap();
        assert_eq!(summary.frames, 12, "{name}");
        assert_eq!(summary.output_bytes, std::fs::metadata(&out).unwrap().len());
        let decoded = if format == OutputFormat::Webp { decode_webp(&out) } else { decode_rgba(&out, decoder) };
        assert_eq!((decoded.width, decoded.height, decoded.frames.len()), (176, 144, 12), "{name}");
        let alpha: Vec<u8> = (0..12).flat_map(|i| decoded.alpha(i)).collect();
        if format == OutputFormat::Gif {
            // GIF transparency is 1-bit: exactly the reference thresholded at 128.
            let wrong = alpha.iter().zip(&ref_alpha).filter(|(a, r)| (**a >= 128) != (**r >= 128)).count();
            assert!(wrong as f64 / alpha.len() as f64 <= 0.002, "gif: {wrong} pixels on the wrong side");
        } else {
            let (mean, max) = diff(&alpha, &ref_alpha);
            assert!(mean <= tolerance, "{name}: mean alpha error {mean:.3} (max {max})");
        }
        if format != OutputFormat::Webp {
            let probe = probe_json(&out);
            // GIF stores delays in centiseconds, so its rate is only approximately 12.
            if format != OutputFormat::Gif {
                assert_eq!(fps_of(&probe), "12/1", "{name}");
            }
            assert_eq!(stream(&probe, "audio").is_some(), audio, "{name}: audio");
        }
    }

    // The matte: greyscale video of the same alpha.
    let matte = dir.path().join("matte.mp4");
    run(&mut seg, &request(&input, &matte, OutputFormat::Matte, Background::Transparent)).unwrap();
    let decoded = decode_rgba(&matte, None);
    assert_eq!((decoded.width, decoded.height, decoded.frames.len()), (176, 144, 12));
    let grey: Vec<u8> = decoded.frames.iter().flat_map(|f| f.chunks_exact(4).map(|p| p[1])).collect();
    let (mean, max) = diff(&grey, &ref_alpha);
    assert!(mean <= 2.0, "matte: mean error {mean:.3} (max {max})");
    assert_eq!(fps_of(&probe_json(&matte)), "12/1");

    // MP4 over green: the composite of the reference RGBA over pure green.
    let mp4 = dir.path().join("green.mp4");
    run(&mut seg, &request(&input, &mp4, OutputFormat::Mp4, Background::Color([0, 255, 0]))).unwrap();
    let decoded = decode_rgba(&mp4, None);
    assert_eq!((decoded.width, decoded.height, decoded.frames.len()), (176, 144, 12));
    let probe = probe_json(&mp4);
    assert_eq!(fps_of(&probe), "12/1");
    assert!(stream(&probe, "audio").is_some(), "mp4 keeps the audio");
    let expected: Vec<u8> = reference
        .frames
        .iter()
        .flat_map(|f| {
            f.chunks_exact(4).flat_map(|p| {
                let a = p[3] as f64 / 255.0;
                let over = |c: u8, bg: f64| (c as f64 * a + bg * (1.0 - a)).round() as u8;
                [over(p[0], 0.0), over(p[1], 255.0), over(p[2], 0.0)]
            })
        })
        .collect();
    let got: Vec<u8> = decoded.frames.iter().flat_map(|f| f.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]])).collect();
    let (mean, _) = diff(&got, &expected);
    assert!(mean <= 6.0, "mp4 composite: mean error {mean:.2}");
}

#[test]
fn transparent_mp4_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let input = lavfi_clip(dir.path(), "in.mp4", "64x48", 10, 0.3, false);
    let out = dir.path().join("out.mp4");
    let err = run(&mut segmenter(Tier::Light), &request(&input, &out, OutputFormat::Mp4, Background::Transparent))
        .unwrap_err();
    assert_eq!(err.code(), "invalid_options");
    assert!(err.to_string().contains("mp4 cannot carry transparency"), "{err}");
    assert!(!out.exists());
}

/// Every tier × every format works end to end (tiny clip: the big models cost ~1 s a frame).
#[test]
fn every_tier_writes_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let input = lavfi_clip(dir.path(), "in.mp4", "96x64", 10, 0.2, true);
    for tier in Tier::ALL {
        if !clearbg_engine::model::is_installed(&home(), tier) {
            eprintln!("SKIPPED {tier} in every_tier_writes_every_format: its opt-in model is not installed");
            continue;
        }
        let mut seg = segmenter(tier);
        for format in OutputFormat::ALL {
            let bg =
                if format == OutputFormat::Mp4 { Background::Color([255, 255, 255]) } else { Background::Transparent };
            let out = dir.path().join(format!("{}-{}.{}", tier.name(), format.name(), format.extension()));
            let summary = run(&mut seg, &request(&input, &out, format, bg))
                .unwrap_or_else(|e| panic!("{tier} × {}: {e}", format.name()));
            assert_eq!(summary.frames, 2, "{tier} × {}", format.name());
            assert!(summary.output_bytes > 0 && out.is_file());
            assert_eq!(summary.sha256.len(), 64);
        }
    }
}

/// An image background is scaled to cover the frame and shows wherever the subject is not.
#[test]
fn an_image_background_shows_around_the_subject() {
    let dir = tempfile::tempdir().unwrap();
    let input = lavfi_clip(dir.path(), "in.mp4", "96x64", 10, 0.3, false);
    let picture = home().fixtures_dir().join("astronaut.png");
    let mut seg = segmenter(Tier::Light);
    let zip = dir.path().join("alpha.zip");
    run(&mut seg, &request(&input, &zip, OutputFormat::PngSequence, Background::Transparent)).unwrap();
    let alpha = decode_png_zip(&zip, dir.path()).alpha(0);
    let mp4 = dir.path().join("over-picture.mp4");
    run(&mut seg, &request(&input, &mp4, OutputFormat::Mp4, Background::Image(picture.clone()))).unwrap();
    let got = decode_rgba(&mp4, None);
    assert_eq!((got.width, got.height, got.frames.len()), (96, 64, 3));
    // The picture as it should appear: scaled to cover 96x64, centre-cropped.
    let expected_bg = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&picture)
        .args([
            "-vf",
            "scale=96:64:force_original_aspect_ratio=increase,crop=96:64",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgba",
            "pipe:1",
        ])
        .output()
        .unwrap()
        .stdout;
    let background: Vec<usize> = (0..alpha.len()).filter(|&k| alpha[k] == 0).collect();
    assert!(background.len() > 100, "the clip has background pixels");
    let pick = |img: &[u8]| background.iter().flat_map(|k| img[k * 4..k * 4 + 3].to_vec()).collect::<Vec<u8>>();
    let (mean, _) = diff(&pick(&got.frames[0]), &pick(&expected_bg));
    assert!(mean < 12.0, "background differs from the picture by {mean:.1} on average");
}
