//! clearbg's masks at model resolution equal a reference Python ONNX Runtime run (numpy +
//! Pillow pre-processing written from models.md) within 1e-3, on a real frame of a person.

mod common;

use std::process::Command;

use clearbg_engine::frame::RgbFrame;
use clearbg_engine::{Device, Home, Precision, Runtime, Segmenter, Tier};
use common::*;

/// Frame 60 of the carphone clip, as raw RGB.
fn person_frame() -> RgbFrame {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(carphone())
        .args(["-vf", "select=eq(n\\,60)", "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 176 * 144 * 3);
    RgbFrame { width: 176, height: 144, data: out.stdout }
}

/// At the precision the pipeline runs on a CPU.
fn assert_matches_reference(tier: Tier, net: &str, file: &str) {
    assert_matches_reference_at(tier, Precision::for_device(Device::Cpu), net, file);
}

fn assert_matches_reference_at(tier: Tier, precision: Precision, net: &str, file: &str) {
    let home = home();
    let frame = person_frame();
    let dir = tempfile::tempdir().unwrap();
    let frame_path = dir.path().join("frame.rgb");
    std::fs::write(&frame_path, &frame.data).unwrap();
    let out_path = dir.path().join("mask.f32");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/segment.py");
    let out = Command::new(home.python())
        .arg(script)
        .arg(home.models_dir().join(file))
        .arg(net)
        .arg(&frame_path)
        .args(["176", "144"])
        .arg(&out_path)
        .output()
        .expect("the set-up venv's python runs");
    assert!(out.status.success(), "reference run failed: {}", String::from_utf8_lossy(&out.stderr));
    let dims: Vec<u32> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(|v| v.parse().unwrap()).collect();
    let reference: Vec<f32> =
        std::fs::read(&out_path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();

    let mask = segmenter_at(tier, precision).segment(&frame).unwrap();
    assert_eq!((mask.height, mask.width), (dims[0], dims[1]), "{tier}: model resolution");
    let max = mask.data.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max <= 1e-3, "{tier}: max abs difference {max} from the reference");
    assert!(mask.coverage() > 0.1, "{tier}: the person is found ({:.2})", mask.coverage());
}

#[test]
fn light_matches_the_reference() {
    assert_matches_reference(Tier::Light, "selfie", "mp_selfie_256.onnx");
}

#[test]
fn human_matches_the_reference() {
    assert_matches_reference(Tier::Human, "modnet", "modnet_photographic.onnx");
}

/// On a CPU `original` runs ISNet in int8 ([`Precision`]): the same int8 file through Python's
/// ONNX Runtime.
#[test]
fn original_matches_the_reference() {
    assert_matches_reference(Tier::Original, "isnet", "isnet_int8_dyn.onnx");
}

#[test]
fn original_in_fp32_matches_the_reference() {
    assert_matches_reference_at(Tier::Original, Precision::Fp32, "isnet", "isnet_fp32_dyn.onnx");
}

/// int8 is an approximation of fp32, not the same model: on this frame of a person it finds
/// the same person, to within what eval/RESULTS.md measures on whole clips.
#[test]
fn original_in_int8_finds_what_fp32_finds() {
    let frame = person_frame();
    let int8 = segmenter_at(Tier::Original, Precision::Int8).segment(&frame).unwrap();
    let fp32 = segmenter_at(Tier::Original, Precision::Fp32).segment(&frame).unwrap();
    let iou = int8.agreement(&fp32);
    assert!(iou > 0.97, "IoU of int8 against fp32: {iou:.3}");
    assert!(int8.data != fp32.data, "two different models ran");
}

/// The opt-in video tier (Robust Video Matting), on a video's first frame; skipped where it is
/// not installed (make setup-video-matting).
#[test]
fn video_matches_the_reference() {
    if !clearbg_engine::model::is_installed(&home(), Tier::Video) {
        eprintln!(
            "SKIPPED video_matches_the_reference: the video tier's model is not installed (make setup-video-matting)"
        );
        return;
    }
    assert_matches_reference(Tier::Video, "rvm", "rvm_mnv3.onnx");
}

/// The pipeline feeds the models from YUV planes (resized first, converted to RGB after): the
/// masks agree with the RGB path above up to the colour conversion's rounding.
#[test]
fn the_yuv_path_agrees_with_the_rgb_path() {
    let frame = person_frame();
    let yuv = clearbg_engine::frame::YuvFrame::from_rgb(&frame);
    for tier in [Tier::Light, Tier::Human] {
        let mut seg = segmenter(tier);
        let from_rgb = seg.segment(&frame).unwrap();
        let (from_yuv, _) = seg.segment_yuv(&yuv).unwrap();
        assert_eq!((from_rgb.width, from_rgb.height), (from_yuv.width, from_yuv.height));
        let mean = from_rgb.data.iter().zip(&from_yuv.data).map(|(a, b)| (a - b).abs()).sum::<f32>()
            / from_rgb.data.len() as f32;
        assert!(mean < 0.02, "{tier}: mean difference {mean}");
    }
}

/// ONNX Runtime's optimised graph is saved on a model's first load and loaded from then on: the
/// mask is bit for bit the one the online optimisation gives, and a saved file that is damaged
/// is made again rather than failing the model.
#[test]
fn the_saved_optimised_graph_gives_the_same_mask() {
    let real = home();
    let scratch = tempfile::tempdir().unwrap();
    for dir in ["lib", "models"] {
        std::os::unix::fs::symlink(real.root().join(dir), scratch.path().join(dir)).unwrap();
    }
    let home = Home::at(scratch.path());
    let runtime = Runtime::load(&home, 0).unwrap();
    let saved_graphs = || files_in(&scratch.path().join("optimized"));
    let frame = person_frame();

    let first = Segmenter::new(&runtime, &home, Tier::Human).unwrap().segment(&frame).unwrap();
    let saved = saved_graphs();
    assert_eq!(saved.len(), 1, "one graph saved, no temporary file left: {saved:?}");
    assert!(saved[0].starts_with("modnet_photographic-"), "{saved:?}");
    let path = scratch.path().join("optimized").join(&saved[0]);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 1_000_000, "a whole graph with its weights: {size} bytes");

    let again = Segmenter::new(&runtime, &home, Tier::Human).unwrap().segment(&frame).unwrap();
    assert_eq!(saved_graphs(), saved, "loaded, not written again");
    assert!(first.data == again.data, "the saved graph computes the same mask");

    std::fs::write(&path, b"not a graph").unwrap();
    let mended = Segmenter::new(&runtime, &home, Tier::Human).unwrap().segment(&frame).unwrap();
    assert!(first.data == mended.data);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "the damaged file was made again");
}
