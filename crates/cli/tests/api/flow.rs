//! The API end to end against a real `clearbg serve`: real HTTP over loopback, real SQLite, the
//! real engine with the `light` model on short clips.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// Upload → create (the SDK's body) → poll → download (signed, with Range) → decode the alpha back.
#[test]
fn upload_create_poll_download_decode() {
    let server = Server::start(&[]);
    let key = server.key("acme-prod");
    let dir = tempfile::tempdir().unwrap();
    let clip = person_clip(dir.path(), 1.5);

    let upload = server.upload(&key, &clip);
    assert_eq!(upload["success"], true);
    assert_eq!(upload["size"].as_u64().unwrap(), std::fs::metadata(&clip).unwrap().len());
    assert_eq!(upload["sha256"], sha256_of(&clip));
    assert_eq!(upload["content_type"], "video/mp4");
    let video_url = upload["video_url"].as_str().unwrap();

    // Exactly what the official SDKs send.
    let created = json_ok(server.post_json(
        &key,
        "/v1/jobs",
        &json!({"video_url": video_url, "model": "light", "bg_type": "transparent", "output_format": "webm",
                "auto_start": true, "metadata": {"order": 42}}),
    ));
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["job_id"], id);
    assert_eq!(created["success"], true);
    assert!(created["status"] == "pending" || created["status"] == "processing");

    let (job, progress) = server.wait(&key, &id, Duration::from_secs(120));
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["progress"], 100.0);
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {progress:?}");
    assert_eq!(job["error"], Value::Null);
    assert_eq!(job["model"], "light");
    assert_eq!(job["output_format"], "webm");
    assert_eq!(job["metadata"], json!({"order": 42}));
    assert_eq!(job["frames"], 45);
    assert!(job["fps"].as_f64().is_some_and(|f| f > 0.0), "a finished job shows its speed: {job}");
    assert_eq!(job["eta_seconds"], Value::Null, "nothing left: {job}");
    assert_eq!(job["keyframes"], Value::Null, "not asked: the server's default");
    assert!((job["duration_seconds"].as_f64().unwrap() - 1.5).abs() < 0.05, "{job}");
    for field in ["created_at", "started_at", "completed_at"] {
        assert!(job[field].as_str().is_some_and(|t| t.ends_with('Z')), "{field}: {job}");
    }

    // The legacy download route answers the same output.
    let legacy = json_ok(client().get(server.url(&format!("/api/download/{id}"))).send().unwrap());
    assert_eq!(legacy["success"], true);
    assert_eq!(legacy["output_format"], "webm");
    let url = legacy["download_url"].as_str().unwrap();

    // Range requests work on the signed link.
    let partial = client().get(url).header("Range", "bytes=0-99").send().unwrap();
    assert_eq!(partial.status().as_u16(), 206);
    assert_eq!(partial.bytes().unwrap().len(), 100);

    let out = dir.path().join("out.webm");
    let headers = download(job["output_url"].as_str().unwrap(), &out);
    assert_eq!(headers["content-type"], "video/webm");
    assert!(headers["content-disposition"].to_str().unwrap().contains(&format!("{id}.webm")));
    assert_eq!(sha256_of(&out), job["output_sha256"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&out).unwrap().len(), job["output_size_bytes"].as_u64().unwrap());
    assert!(has_audio(&out), "the original audio is kept");

    let (w, h, alphas) = decode_alpha(&out);
    assert_eq!((w, h), (176, 144));
    assert_eq!(alphas.len(), 45);
    for alpha in &alphas {
        let clear = alpha.iter().filter(|&&a| a < 16).count() as f64 / alpha.len() as f64;
        let solid = alpha.iter().filter(|&&a| a > 240).count() as f64 / alpha.len() as f64;
        assert!(clear > 0.1 && solid > 0.1, "a person over a cleared background: {clear:.2} clear, {solid:.2} solid");
    }

    // The audit trail, with the creating request's id.
    let events = json_ok(server.get(&key, &format!("/v1/jobs/{id}/events")));
    let path: Vec<(&str, &str)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["from"].as_str().unwrap_or("-"), e["to"].as_str().unwrap()))
        .collect();
    assert_eq!(path, [("-", "pending"), ("pending", "processing"), ("processing", "completed")]);
    assert!(events["items"][0]["request_id"].as_str().unwrap().starts_with("req_"));

    // The list shows it, filtered by status.
    let list = json_ok(server.get(&key, "/v1/jobs?limit=20&offset=0&status=completed"));
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["id"], id);
    assert_eq!(json_ok(server.get(&key, "/v1/jobs?limit=20&offset=0&status=failed"))["total"], 0);
}

/// A draft takes its options at `/start` (colour background, MP4, composition), runs, and cannot
/// be started twice.
#[test]
fn draft_then_start_with_a_colour_background() {
    let server = Server::start(&[]);
    let key = server.key("drafts");
    let dir = tempfile::tempdir().unwrap();
    let upload = server.upload(&key, &person_clip(dir.path(), 1.0));
    let created = json_ok(server.post_json(
        &key,
        "/v1/jobs",
        &json!({"video_url": upload["video_url"], "model": "light", "auto_start": false}),
    ));
    assert_eq!(created["status"], "created");
    let id = created["id"].as_str().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(json_ok(server.get(&key, &format!("/v1/jobs/{id}")))["status"], "created", "a draft does not run");

    let started = json_ok(server.post_json(
        &key,
        &format!("/v1/jobs/{id}/start"),
        &json!({"output_format": "mp4", "background": {"type": "color", "color": [0.0, 0.0, 1.0]}, "preview_duration": 0.5,
                "composition": {"canvas": {"width": 320, "height": 240}, "foreground": {"anchor": "bottom-right", "scale": 1}}}),
    ));
    assert_eq!(started["status"], "pending");
    assert_eq!(started["message"], "Job started");
    expect_error(server.post_json(&key, &format!("/v1/jobs/{id}/start"), &json!({})), 409, "invalid_job_state");

    let (job, _) = server.wait(&key, id, Duration::from_secs(120));
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["bg_type"], "color");
    assert_eq!(job["frames"], 15, "preview_duration 0.5 s of a 30 fps clip: {job}");
    assert!((job["duration_seconds"].as_f64().unwrap() - 0.5).abs() < 0.01);
    let out = dir.path().join("out.mp4");
    download(job["output_url"].as_str().unwrap(), &out);
    let (w, h, frames) = decode_rgb(&out);
    assert_eq!((w, h), (320, 240));
    assert_eq!(frames.len(), 15);
    // Top-left is canvas, far from the subject placed bottom-right: blue.
    let px = &frames[0][..3];
    assert!(px[2] > 200 && px[0] < 40 && px[1] < 40, "top-left pixel {px:?} is the blue background");
}

/// The `keyframes` extension reaches the engine: `every` runs the model on every frame,
/// `adaptive` on fewer, as each job's completion event says. (How many fewer is the engine's
/// business: on this small clip, strongly compressed, MODNet's mask flickers from frame to frame
/// and the planner, checking the carried mask against it, runs the model on most frames.) A
/// running job shows its speed and time left (`fps`, `eta_seconds`); a bad value is a field
/// error.
#[test]
fn keyframes_option_and_speed_while_processing() {
    let server = Server::start(&[]);
    let key = server.key("keyframes");
    let dir = tempfile::tempdir().unwrap();
    let upload = server.upload(&key, &person_clip(dir.path(), 1.0));
    let create = |keyframes: &str| {
        let body = json!({"video_url": upload["video_url"], "model": "human", "keyframes": keyframes});
        json_ok(server.post_json(&key, "/v1/jobs", &body))["id"].as_str().unwrap().to_string()
    };
    let every = create("every");
    let running = server.wait_processing(&key, &every);
    assert!(running["fps"].as_f64().is_some_and(|f| f > 0.0), "{running}");
    assert!(running["eta_seconds"].as_f64().is_some_and(|s| s >= 0.0), "{running}");
    let adaptive = create("adaptive");
    let mut model_frames = Vec::new();
    for id in [&every, &adaptive] {
        let (job, _) = server.wait(&key, id, Duration::from_secs(300));
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["frames"], 30);
        let events = json_ok(server.get(&key, &format!("/v1/jobs/{id}/events")));
        let reason = events["items"].as_array().unwrap().last().unwrap()["reason"].as_str().unwrap().to_string();
        let ran: u64 = reason
            .split("model on ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the completion event names the model's frames: {reason}"));
        model_frames.push(ran);
    }
    assert_eq!(json_ok(server.get(&key, &format!("/v1/jobs/{every}")))["keyframes"], "every");
    assert_eq!(model_frames[0], 30, "every: the model on each frame");
    assert!(model_frames[1] < 30, "adaptive: the model on keyframes only, ran on {}", model_frames[1]);

    let bad = server.post_json(&key, "/v1/jobs", &json!({"video_url": upload["video_url"], "keyframes": "sometimes"}));
    let body = expect_error(bad, 422, "invalid_request");
    assert!(body["error"]["message"].as_str().unwrap().contains("keyframes"), "{body}");
}

/// The legacy key-less routes: `/api/upload`, `/api/process`, `/api/download/{id}` (400 until done).
#[test]
fn legacy_routes_process_without_a_key() {
    let server = Server::start(&[("CLEARBG_WORKERS", "0")]);
    let dir = tempfile::tempdir().unwrap();
    let clip = person_clip(dir.path(), 1.0);
    let part = reqwest::blocking::multipart::Part::bytes(std::fs::read(&clip).unwrap()).file_name("clip.mp4");
    let upload = json_ok(
        client()
            .post(server.url("/api/upload"))
            .multipart(reqwest::blocking::multipart::Form::new().part("file", part))
            .send()
            .unwrap(),
    );
    let job = json_ok(
        client()
            .post(server.url("/api/process"))
            .json(&json!({"video_url": upload["video_url"], "model": "light", "output_format": "gif"}))
            .send()
            .unwrap(),
    );
    let id = job["job_id"].as_str().unwrap();
    expect_error(client().get(server.url(&format!("/api/download/{id}"))).send().unwrap(), 400, "job_not_completed");
    expect_error(client().get(server.url("/api/download/job_nope")).send().unwrap(), 404, "not_found");

    // No worker in that process: a second process on the same data picks the job up.
    let server = server.restart(&[("CLEARBG_WORKERS", "1")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let download = loop {
        let r = client().get(server.url(&format!("/api/download/{id}"))).send().unwrap();
        if r.status().is_success() {
            break r.json::<Value>().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "{}", server.log_text());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(download["output_format"], "gif");
    let out = dir.path().join("out.gif");
    let headers = crate::common::download(download["download_url"].as_str().unwrap(), &out);
    assert_eq!(headers["content-type"], "image/gif");
}
