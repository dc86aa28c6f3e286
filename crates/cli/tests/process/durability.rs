//! Nothing accepted is lost: cancels stop the work, restarts and crashes hand jobs on, faults of
//! the service (no ffmpeg on a worker host, storage failing) are retried while the job's own
//! faults fail at once, attempts are capped, retention deletes files but keeps the story, and a
//! child that hangs meets its deadline and does not hold up a shutdown.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::scaleout::WorkerProcess;
use crate::common::*;
use serde_json::{json, Value};

fn events(server: &Server, key: &str, id: &str) -> Vec<Value> {
    json_ok(server.get(key, &format!("/v1/jobs/{id}/events")))["items"].as_array().unwrap().clone()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a job on a 40 s clip and waits until it is processing; returns the key and job id.
fn start_long_job(server: &Server) -> (String, String) {
    let key = server.key("a");
    let dir = tempfile::tempdir().unwrap();
    let upload = server.upload(&key, &long_clip(dir.path()));
    let job = json_ok(server.post_json(
        &key,
        "/v1/jobs",
        &json!({"video_url": upload["video_url"], "model": "light", "output_format": "matte"}),
    ));
    let id = job["id"].as_str().unwrap().to_string();
    server.wait_processing(&key, &id);
    (key, id)
}

#[test]
fn cancel_stops_a_running_job_and_its_ffmpeg_children() {
    let server = Server::spawn(&[]);
    let key = server.key("a");
    let dir = tempfile::tempdir().unwrap();
    let upload = server.upload(&key, &long_clip(dir.path()));

    // A draft is cancelled on the spot.
    let draft = json_ok(server.post_json(
        &key,
        "/v1/jobs",
        &json!({"video_url": upload["video_url"], "model": "light", "auto_start": false}),
    ));
    let cancelled =
        json_ok(server.post_json(&key, &format!("/v1/jobs/{}/cancel", draft["id"].as_str().unwrap()), &json!({})));
    assert_eq!((cancelled["status"].as_str(), cancelled["error_code"].as_str()), (Some("failed"), Some("cancelled")));

    let job = json_ok(server.post_json(&key, "/v1/jobs", &json!({"video_url": upload["video_url"], "model": "light"})));
    let id = job["id"].as_str().unwrap();
    server.wait_processing(&key, id);
    assert!(!server.ffmpeg_children().is_empty(), "the job runs ffmpeg");
    let started = Instant::now();
    let r = server.post_json(&key, &format!("/v1/jobs/{id}/cancel"), &json!({}));
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let job = json_ok(r);
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error_code"], "cancelled");
    assert!(started.elapsed() < Duration::from_secs(10), "cancel took {:?}", started.elapsed());
    wait_for("ffmpeg children to exit", Duration::from_secs(5), || server.ffmpeg_children().is_empty());
    assert!(job["output_url"].is_null());

    let trail = events(&server, &key, id);
    let last = trail.last().unwrap();
    assert_eq!((last["from"].as_str(), last["to"].as_str()), (Some("processing"), Some("failed")));
    let asked = trail.iter().find(|e| e["reason"] == "cancel requested").expect("the cancel request is in the trail");
    assert_eq!(asked["request_id"], request_id);
    expect_error(server.post_json(&key, &format!("/v1/jobs/{id}/cancel"), &json!({})), 409, "invalid_job_state");

    // The worker is free again.
    let next = json_ok(server.post_json(
        &key,
        "/v1/jobs",
        &json!({"video_url": server.upload(&key, &person_clip(dir.path(), 0.5))["video_url"], "model": "light"}),
    ));
    let (next, _) = server.wait(&key, next["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(next["status"], "completed");
}

/// SIGTERM mid-job: the running job goes back to the queue without using an attempt, queued
/// jobs stay queued, and the next process completes them all.
#[test]
fn a_restart_loses_no_job() {
    let server = Server::spawn(&[]);
    let key = server.key("a");
    let dir = tempfile::tempdir().unwrap();
    let long = server.upload(&key, &long_clip(dir.path()));
    let short = server.upload(&key, &person_clip(dir.path(), 0.5));
    let running = json_ok(server.post_json(
        &key,
        "/v1/jobs",
        &json!({"video_url": long["video_url"], "model": "light", "output_format": "matte"}),
    ));
    let running = running["id"].as_str().unwrap().to_string();
    server.wait_processing(&key, &running);
    let queued: Vec<String> = (0..2)
        .map(|_| {
            let j = json_ok(server.post_json(
                &key,
                "/v1/jobs",
                &json!({"video_url": short["video_url"], "model": "light"}),
            ));
            j["id"].as_str().unwrap().to_string()
        })
        .collect();
    let draft = json_ok(server.post_json(
        &key,
        "/v1/jobs",
        &json!({"video_url": short["video_url"], "model": "light", "auto_start": false}),
    ));

    let mut server = server;
    let stopping = Instant::now();
    server.stop();
    assert!(stopping.elapsed() < Duration::from_secs(10), "shutdown took {:?}", stopping.elapsed());
    let server = server.restart(&[]);
    let handed_back = json_ok(server.get(&key, &format!("/v1/jobs/{running}")));
    assert!(handed_back["status"] == "pending" || handed_back["status"] == "processing", "{handed_back}");
    assert!(events(&server, &key, &running).iter().any(|e| e["reason"].as_str().unwrap().contains("shut down")));

    for id in queued.iter().chain([&running]) {
        let (job, _) = server.wait(&key, id, Duration::from_secs(240));
        assert_eq!(job["status"], "completed", "{job}");
    }
    let (job, _) = server.wait(&key, &running, Duration::from_secs(1));
    assert_eq!(job["attempts"], 1, "a graceful hand-back does not use an attempt: {job}");
    assert_eq!(json_ok(server.get(&key, &format!("/v1/jobs/{}", draft["id"].as_str().unwrap())))["status"], "created");
}

/// kill -9 mid-job: the lease expires, the next process takes the job up again and completes it.
#[test]
fn a_killed_worker_s_job_is_taken_up_again() {
    let server = Server::spawn(&[("CLEARBG_LEASE", "2s")]);
    let (key, id) = start_long_job(&server);
    let mut server = server;
    let orphans = server.ffmpeg_children();
    server.kill9();
    // The dead process's ffmpeg children see their pipes close and exit on their own.
    wait_for("orphaned ffmpeg to exit", Duration::from_secs(10), || {
        orphans.iter().all(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    });

    let server = server.restart(&[]);
    let (job, _) = server.wait(&key, &id, Duration::from_secs(240));
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    let trail = events(&server, &key, &id);
    assert!(
        trail.iter().any(|e| e["reason"].as_str().unwrap().contains("stopped renewing its lease; queued again")),
        "{trail:?}"
    );
    // The dead attempt's scratch files are swept.
    wait_for("scratch files to be swept", Duration::from_secs(15), || {
        std::fs::read_dir(server.data.join("work")).unwrap().count() == 0
    });
}

#[test]
fn attempts_are_capped() {
    let server = Server::spawn(&[("CLEARBG_LEASE", "2s"), ("CLEARBG_MAX_ATTEMPTS", "1")]);
    let (key, id) = start_long_job(&server);
    let mut server = server;
    server.kill9();
    let server = server.restart(&[]);
    let (job, _) = server.wait(&key, &id, Duration::from_secs(60));
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error_code"], "attempts_exhausted", "{job}");
}

#[test]
fn retention_deletes_files_and_keeps_the_record() {
    let server = Server::spawn(&[("CLEARBG_RETENTION", "3s")]);
    let key = server.key("a");
    let dir = tempfile::tempdir().unwrap();
    let upload = server.upload(&key, &person_clip(dir.path(), 0.5));
    let job = json_ok(server.post_json(&key, "/v1/jobs", &json!({"video_url": upload["video_url"], "model": "light"})));
    let id = job["id"].as_str().unwrap().to_string();
    let (job, _) = server.wait(&key, &id, Duration::from_secs(60));
    assert_eq!(job["status"], "completed");
    wait_for("the output to expire", Duration::from_secs(15), || {
        json_ok(server.get(&key, &format!("/v1/jobs/{id}")))["output_expired"] == true
    });
    let job = json_ok(server.get(&key, &format!("/v1/jobs/{id}")));
    assert!(job["output_url"].is_null());
    assert!(job["output_sha256"].is_string(), "the record keeps the checksum");
    expect_error(client().get(server.url(&format!("/api/download/{id}"))).send().unwrap(), 410, "output_expired");
    // An upload's link lives as long as its file: expiries are whole seconds, so the link may
    // outlive the sweep by up to a second (answering 404, file gone) before it says expired.
    let link = upload["video_url"].as_str().unwrap();
    wait_for("the upload link to expire", Duration::from_secs(5), || {
        client().get(link).send().unwrap().status().as_u16() == 403
    });
    expect_error(client().get(link).send().unwrap(), 403, "url_expired");
    assert!(std::fs::read_dir(server.data.join("objects/uploads")).unwrap().next().is_none());
    let again = expect_error(
        server.post_json(&key, "/v1/jobs", &json!({"video_url": upload["video_url"]})),
        422,
        "invalid_request",
    );
    assert!(again["error"]["message"].as_str().unwrap().contains("deleted"));
    assert!(std::fs::read_dir(server.data.join("objects/outputs")).unwrap().next().is_none());
}

/// A `clearbg worker` process on `api`'s database and storage (as a second host would be), with
/// `extra` settings on top.
fn worker_for(api: &Server, dir: &Path, name: &str, extra: &[(&str, &str)]) -> WorkerProcess {
    let mut env = api.env.clone();
    env.push(("CLEARBG_DATA_DIR".into(), api.data.display().to_string()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    WorkerProcess::start(dir, name, &env)
}

/// The trail's hand-backs of attempts that failed on the server, to be retried.
fn retries(server: &Server, key: &str, id: &str) -> Vec<Value> {
    events(server, key, id)
        .into_iter()
        .filter(|e| {
            (e["from"].as_str(), e["to"].as_str()) == (Some("processing"), Some("pending"))
                && e["reason"].as_str().unwrap().contains("to be retried at")
        })
        .collect()
}

/// Starts a `light` job on a short clip, on an API process without workers; returns its id.
fn queue_short_job(api: &Server, key: &str, dir: &Path) -> String {
    let upload = api.upload(key, &person_clip(dir, 0.5));
    let job = json_ok(api.post_json(key, "/v1/jobs", &json!({"video_url": upload["video_url"], "model": "light"})));
    assert_eq!(job["status"], "pending", "{job}");
    job["id"].as_str().unwrap().to_string()
}

/// Downloads a completed job's output and decodes its alpha back.
fn assert_output_decodes(job: &Value, dir: &Path) {
    let out = dir.join("out.webm");
    download(job["output_url"].as_str().unwrap(), &out);
    let (_, _, alpha) = decode_alpha(&out);
    assert!(!alpha.is_empty(), "the output has frames: {job}");
    assert!(alpha.iter().any(|frame| frame.iter().any(|&a| a < 128)), "some background was removed");
}

/// A worker host without ffmpeg hands the job back (saying why and when it is retried) instead of
/// failing it; a worker with ffmpeg completes it on the next attempt.
#[test]
fn a_worker_without_ffmpeg_hands_the_job_back_for_another_to_complete() {
    let api = Server::spawn_with(&["--no-workers"], &[]);
    let key = api.key("a");
    let dir = tempfile::tempdir().unwrap();
    let id = queue_short_job(&api, &key, dir.path());

    let no_tools = dir.path().join("bin-without-ffmpeg");
    std::fs::create_dir_all(&no_tools).unwrap();
    let mut lacking = worker_for(&api, dir.path(), "no-ffmpeg", &[("PATH", no_tools.to_str().unwrap())]);
    wait_for("the job to be handed back", Duration::from_secs(60), || !retries(&api, &key, &id).is_empty());
    lacking.kill9();
    let handed_back = &retries(&api, &key, &id)[0];
    let reason = handed_back["reason"].as_str().unwrap();
    assert!(reason.starts_with("ffmpeg_missing: "), "the trail says why: {reason}");
    assert!(reason.contains("attempt 1 of 3 failed on the server"), "{reason}");
    assert_eq!(handed_back["attempt"], 1);
    let job = json_ok(api.get(&key, &format!("/v1/jobs/{id}")));
    assert_eq!((job["status"].as_str(), job["attempts"].as_i64()), (Some("pending"), Some(1)), "{job}");
    assert!(job["error_code"].is_null(), "{job}");

    let _able = worker_for(&api, dir.path(), "with-ffmpeg", &[]);
    let (job, _) = api.wait(&key, &id, Duration::from_secs(120));
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    assert_output_decodes(&job, dir.path());
}

/// Storage that fails twice (its uploads directory replaced by a file: reads fail with ENOTDIR)
/// and then recovers: the job is retried after each failure and completes.
#[test]
fn a_storage_outage_is_retried_until_storage_recovers() {
    let api = Server::spawn_with(&["--no-workers"], &[]);
    let key = api.key("a");
    let dir = tempfile::tempdir().unwrap();
    let id = queue_short_job(&api, &key, dir.path());

    let uploads = api.data.join("objects/uploads");
    let aside = api.data.join("objects/uploads-aside");
    std::fs::rename(&uploads, &aside).unwrap();
    std::fs::write(&uploads, b"not a directory").unwrap();
    let _worker =
        worker_for(&api, dir.path(), "worker", &[("CLEARBG_RETRY_BACKOFF", "1s"), ("CLEARBG_MAX_ATTEMPTS", "5")]);
    wait_for("two failed attempts", Duration::from_secs(60), || retries(&api, &key, &id).len() >= 2);
    std::fs::remove_file(&uploads).unwrap();
    std::fs::rename(&aside, &uploads).unwrap();

    let (job, _) = api.wait(&key, &id, Duration::from_secs(120));
    assert_eq!(job["status"], "completed", "{job}");
    let handed_back = retries(&api, &key, &id);
    assert!(job["attempts"].as_i64().unwrap() >= 3, "{job}");
    assert_eq!(job["attempts"].as_i64().unwrap(), handed_back.len() as i64 + 1, "{handed_back:?}");
    for e in &handed_back {
        let reason = e["reason"].as_str().unwrap();
        assert!(reason.starts_with("internal_error: reading the input failed on the server"), "{reason}");
        assert!(!reason.contains(api.data.to_str().unwrap()), "no server paths in the trail: {reason}");
    }
    // The waits double: 1 s after the first attempt, 2 s after the second.
    assert!(handed_back[0]["reason"].as_str().unwrap().contains("(in 1s)"), "{}", handed_back[0]);
    assert!(handed_back[1]["reason"].as_str().unwrap().contains("(in 2s)"), "{}", handed_back[1]);
    assert_output_decodes(&job, dir.path());
}

/// The job's own fault (a truncated video) fails it at once, on its first attempt, with nothing
/// retried; a fault of the service that outlasts every attempt fails the job with that fault's
/// code and message, and its credits are refunded.
#[test]
fn the_job_s_own_fault_fails_at_once_and_a_lasting_server_fault_after_every_attempt() {
    let api = Server::spawn_with(&["--no-workers"], &[]);
    let key = api.key("a");
    let dir = tempfile::tempdir().unwrap();
    let truncated = api.upload(&key, &truncated_clip(dir.path()));
    let bad = json_ok(api.post_json(&key, "/v1/jobs", &json!({"video_url": truncated["video_url"], "model": "light"})));
    let bad = bad["id"].as_str().unwrap().to_string();
    let mut able = worker_for(&api, dir.path(), "with-ffmpeg", &[]);
    let (job, _) = api.wait(&key, &bad, Duration::from_secs(60));
    assert_eq!(job["status"], "failed", "{job}");
    let input_codes = ["invalid_input", "unsupported_input", "decode_failed"];
    assert!(input_codes.contains(&job["error_code"].as_str().unwrap()), "the input's fault: {job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert!(retries(&api, &key, &bad).is_empty());
    able.kill9();

    let good = queue_short_job(&api, &key, dir.path());
    let no_tools = dir.path().join("bin-without-ffmpeg");
    std::fs::create_dir_all(&no_tools).unwrap();
    let settings =
        [("PATH", no_tools.to_str().unwrap()), ("CLEARBG_RETRY_BACKOFF", "200ms"), ("CLEARBG_MAX_ATTEMPTS", "2")];
    let _lacking = worker_for(&api, dir.path(), "no-ffmpeg", &settings);
    let (job, _) = api.wait(&key, &good, Duration::from_secs(60));
    assert_eq!((job["status"].as_str(), job["error_code"].as_str()), (Some("failed"), Some("ffmpeg_missing")), "{job}");
    assert!(job["error"].as_str().unwrap().contains("not found"), "the last error's message: {job}");
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(retries(&api, &key, &good).len(), 1, "the first attempt was retried, the last was not");
    assert_eq!(job["billing_status"], "refunded", "{job}");
}

/// An upload that retention deleted while its job waited in the queue really is gone: the job
/// fails on its first attempt with `input_missing`, and nothing is retried.
#[test]
fn an_input_deleted_by_retention_fails_the_job_at_once() {
    let api = Server::spawn_with(&["--no-workers"], &[("CLEARBG_RETENTION", "2s")]);
    let key = api.key("a");
    let dir = tempfile::tempdir().unwrap();
    let upload = api.upload(&key, &person_clip(dir.path(), 0.5));
    let job = json_ok(api.post_json(&key, "/v1/jobs", &json!({"video_url": upload["video_url"], "model": "light"})));
    let id = job["id"].as_str().unwrap().to_string();
    wait_for("retention to delete the upload", Duration::from_secs(30), || {
        std::fs::read_dir(api.data.join("objects/uploads")).unwrap().next().is_none()
    });
    // The database says so once a new job of the upload is refused for it.
    wait_for("the upload's record to say deleted", Duration::from_secs(5), || {
        api.post_json(&key, "/v1/jobs", &json!({"video_url": upload["video_url"]})).status() == 422
    });

    let _worker = worker_for(&api, dir.path(), "worker", &[]);
    let (job, _) = api.wait(&key, &id, Duration::from_secs(60));
    assert_eq!((job["status"].as_str(), job["error_code"].as_str()), (Some("failed"), Some("input_missing")), "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert!(retries(&api, &key, &id).is_empty());
}

/// An ffprobe that hangs: stopped at the probe deadline (the job fails, naming the step), and
/// on SIGTERM the server exits within its drain time, leaving no child behind.
#[test]
fn a_hanging_child_has_a_deadline_and_does_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    // An ffprobe that answers `-version` (so /health is happy) and hangs on everything else.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let real =
        String::from_utf8(std::process::Command::new("sh").args(["-c", "command -v ffprobe"]).output().unwrap().stdout)
            .unwrap();
    let marker = "2999.125";
    let wrapper = bin.join("ffprobe");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = -version ] && exec {} \"$@\"; done\nexec sleep {marker}\n",
            real.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let base = serve_routes(vec![("/clip.mp4", std::fs::read(person_clip(dir.path(), 0.3)).unwrap())]);
    let job_body = json!({"video_url": format!("{base}/clip.mp4"), "model": "light"});

    let server =
        Server::spawn(&[("PATH", path.as_str()), ("CLEARBG_ALLOW_PRIVATE_URLS", "1"), ("CLEARBG_PROBE_TIMEOUT", "2s")]);
    let key = server.key("a");
    let job = json_ok(server.post_json(&key, "/v1/jobs", &job_body));
    let (job, _) = server.wait(&key, job["id"].as_str().unwrap(), Duration::from_secs(30));
    assert_eq!(job["error_code"], "timed_out", "{job}");
    assert!(processes_with(marker).is_empty(), "the hung ffprobe was killed");

    // Now a probe that would hang far longer than the drain time, and a SIGTERM.
    let mut server = server.restart(&[("CLEARBG_PROBE_TIMEOUT", "10m"), ("CLEARBG_SHUTDOWN_TIMEOUT", "2s")]);
    let job = json_ok(server.post_json(&key, "/v1/jobs", &job_body));
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with(marker).is_empty() {
        assert!(Instant::now() < deadline, "the probe never started: {job}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    server.stop();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "SIGTERM took {took:?}");
    assert!(processes_with(marker).is_empty(), "no child outlived the server");
    let events: Value = {
        let server = server.restart(&[("CLEARBG_WORKERS", "0")]);
        json_ok(server.get(&key, &format!("/v1/jobs/{}/events", job["id"].as_str().unwrap())))
    };
    let last = events["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["to"], "pending", "the job was handed back: {events}");
}
