//! The opt-in `video` tier through the API: the operator setting that serves `human` with it
//! (`CLEARBG_HUMAN_MODEL=video`), and what a server without it says. The tests that run the
//! model skip, saying so, where it is not installed (`make setup-video-matting`; CI installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::json;

/// A home with ONNX Runtime and the default models, but not the opt-in video model.
fn home_without_video(dir: &Path) -> PathBuf {
    let real = clearbg_home();
    let home = dir.join("home");
    std::fs::create_dir_all(home.join("models")).unwrap();
    std::os::unix::fs::symlink(real.join("lib"), home.join("lib")).unwrap();
    for model in ["mp_selfie_256.onnx", "modnet_photographic.onnx", "isnet_fp32_dyn.onnx", "isnet_int8_dyn.onnx"] {
        std::os::unix::fs::symlink(real.join("models").join(model), home.join("models").join(model)).unwrap();
    }
    home
}

/// `clearbg remove` with one inference thread, as the test servers run: the alpha of each frame.
fn cli_alpha(input: &Path, out: &Path, model: &str) -> Vec<Vec<u8>> {
    let run = Command::new(env!("CARGO_BIN_EXE_clearbg"))
        .args(["remove", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--model", model])
        .args(["--format", "png_sequence", "--threads", "1", "-q"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    png_sequence_alpha(out)
}

/// The alpha of every frame of a `png_sequence` zip (unzip is installed by the set-up).
fn png_sequence_alpha(zip: &Path) -> Vec<Vec<u8>> {
    let dir = zip.with_extension("frames");
    let unzip = Command::new("unzip").args(["-q", "-o"]).arg(zip).arg("-d").arg(&dir).output().unwrap();
    assert!(unzip.status.success(), "{}", String::from_utf8_lossy(&unzip.stderr));
    decode_alpha(&dir.join("frame_%06d.png")).2
}

/// The API's `human`, served by the video tier: the job still says `human` (what the client
/// asked for, and what it is billed as), and its alpha is the video tier's, frame for frame.
#[test]
fn the_operator_can_serve_human_with_the_video_tier() {
    if !video_model_installed() {
        eprintln!("SKIPPED the_operator_can_serve_human_with_the_video_tier: the video model is not installed (make setup-video-matting)");
        return;
    }
    let server = Server::spawn(&[("CLEARBG_HUMAN_MODEL", "video")]);
    let key = server.key("sdk-user");
    let dir = tempfile::tempdir().unwrap();
    let clip = person_clip(dir.path(), 0.5);
    let upload = server.upload(&key, &clip);
    let created = json_ok(server.post_json(
        &key,
        "/v1/jobs",
        &json!({"video_url": upload["video_url"], "model": "human", "output_format": "png_sequence"}),
    ));
    let id = created["id"].as_str().unwrap();
    let (job, _) = server.wait(&key, id, Duration::from_secs(120));
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["model"], "human", "the client's name is kept");
    assert_eq!(job["credits_used"], 0.75, "billed at human's price: {job}");
    let out = dir.path().join("job.zip");
    download(job["output_url"].as_str().unwrap(), &out);
    let served = png_sequence_alpha(&out);
    assert_eq!(served.len(), 15);

    let video = cli_alpha(&clip, &dir.path().join("video.zip"), "video");
    let human = cli_alpha(&clip, &dir.path().join("human.zip"), "human");
    assert!(served == video, "the job's alpha is the video tier's");
    assert!(served != human, "and not MODNet's");
    assert!(server.log_text().contains("served by the --human-model tier"), "{}", server.log_text());

    let health: serde_json::Value = client().get(server.url("/health")).send().unwrap().json().unwrap();
    assert_eq!(health["checks"]["model_video"], true, "{health}");
    let config =
        json_ok(client().get(server.url("/v1/admin/config")).header("X-Admin-Token", ADMIN_TOKEN).send().unwrap());
    assert_eq!(config["human_model"], "video");
}

/// A server without the opt-in model is healthy, refuses `video` jobs before queueing anything
/// (422 `model_not_installed`, naming the install command), still runs the other tiers, and
/// will not start at all when told to serve `human` with a model it lacks.
#[test]
fn a_server_without_the_video_model_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_without_video(dir.path());
    let home_str = home.to_str().unwrap();
    let server = Server::spawn(&[("CLEARBG_HOME", home_str)]);
    let health: serde_json::Value = client().get(server.url("/health")).send().unwrap().json().unwrap();
    assert_eq!(health["status"], "healthy", "an opt-in model is not a fault: {health}");
    assert!(health["checks"].get("model_video").is_none(), "{health}");

    let key = server.key("acme");
    let clip = person_clip(dir.path(), 0.5);
    let upload = server.upload(&key, &clip);
    let body = json!({"video_url": upload["video_url"], "model": "video"});
    let refused = expect_error(server.post_json(&key, "/v1/jobs", &body), 422, "model_not_installed");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("make setup-video-matting"), "{refused}");
    assert_eq!(refused["error"]["details"][0]["field"], "model", "{refused}");
    let jobs = json_ok(server.get(&key, "/v1/jobs"));
    assert_eq!(jobs["total"], 0, "nothing was created");
    // A draft cannot be switched to it on start either.
    let draft = json_ok(server.post_json(
        &key,
        "/v1/jobs",
        &json!({"video_url": upload["video_url"], "model": "light", "auto_start": false}),
    ));
    let start = format!("/v1/jobs/{}/start", draft["id"].as_str().unwrap());
    expect_error(server.post_json(&key, &start, &json!({"model": "video"})), 422, "model_not_installed");
    let started = json_ok(server.post_json(&key, &start, &json!({})));
    let (job, _) = server.wait(&key, started["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(job["status"], "completed", "the other tiers still run: {job}");

    // Told to serve `human` with it, a process with workers refuses to start, and says why.
    let data = dir.path().join("data2");
    let run = Command::new(env!("CARGO_BIN_EXE_clearbg"))
        .arg("serve")
        .env("CLEARBG_HOME", &home)
        .env("CLEARBG_HUMAN_MODEL", "video")
        .env("CLEARBG_DATA_DIR", &data)
        .env("CLEARBG_LISTEN", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("CLEARBG_HUMAN_MODEL=video") && stderr.contains("make setup-video-matting"), "{stderr}");
}
