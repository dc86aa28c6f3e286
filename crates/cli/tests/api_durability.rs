//! Nothing accepted is lost: cancels stop the work, restarts and crashes hand jobs on, attempts
//! are capped, and retention deletes files but keeps the story.

mod common;

use std::time::{Duration, Instant};

use common::*;
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
    let server = Server::start(&[]);
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
    let server = Server::start(&[]);
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
    let server = Server::start(&[("CLEARBG_LEASE", "2s")]);
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
    let server = Server::start(&[("CLEARBG_LEASE", "2s"), ("CLEARBG_MAX_ATTEMPTS", "1")]);
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
    let server = Server::start(&[("CLEARBG_RETENTION", "3s")]);
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
