//! Operations on a real `clearbg serve`: `/metrics` after real jobs, webhooks and refusals;
//! `/health` healthy, and degraded with the reasons (a missing and a corrupt model, no ffmpeg on
//! PATH, broken storage); `/openapi.json` and the offline `/docs`; JSON logs that carry request
//! and job ids.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

/// The value of the first sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        if metric != name || !labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))) {
            return None;
        }
        value.parse().ok()
    })
}

fn scrape(server: &Server) -> String {
    let r = client().get(server.url("/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    r.text().unwrap()
}

#[test]
fn metrics_count_requests_jobs_speed_and_credits() {
    let server = Server::spawn(&[]);
    let key = server.key("metrics");
    let dir = tempfile::tempdir().unwrap();
    let clip = person_clip(dir.path(), 1.0);

    let before = scrape(&server);
    assert_eq!(sample(&before, "clearbg_jobs", &[("status", "completed")]), Some(0.0));
    assert_eq!(sample(&before, "clearbg_queue_depth", &[]), Some(0.0));
    assert_eq!(sample(&before, "clearbg_frames_processed_total", &[("model", "light")]), None);

    let upload = server.upload(&key, &clip);
    let created = json_ok(server.post_json(
        &key,
        "/v1/jobs",
        &json!({"video_url": upload["video_url"], "model": "light", "output_format": "webm"}),
    ));
    let (job, _) = server.wait(&key, created["id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!(job["status"], "completed", "{job}");
    let frames = job["frames"].as_f64().unwrap();
    let millicredits = (job["credits_used"].as_f64().unwrap() * 1000.0).round();
    assert!(frames >= 30.0 && millicredits >= 750.0, "a second or so of light at 45 credits a minute: {job}");
    expect_error(client().get(server.url("/no/such/route")).send().unwrap(), 404, "not_found");
    expect_error(
        client().get(server.url("/v1/jobs/job_nope")).header("X-Api-Key", &key).send().unwrap(),
        404,
        "not_found",
    );

    let text = scrape(&server);
    let requests = |method: &str, route: &str, status: &str| {
        sample(&text, "clearbg_http_requests_total", &[("method", method), ("route", route), ("status", status)])
    };
    assert_eq!(requests("POST", "/v1/uploads", "200"), Some(1.0), "{text}");
    assert_eq!(requests("POST", "/v1/jobs", "200"), Some(1.0));
    assert!(requests("GET", "/v1/jobs/{id}", "200").unwrap() >= 1.0, "polls are counted under the template");
    assert_eq!(requests("GET", "/v1/jobs/{id}", "404"), Some(1.0));
    assert_eq!(requests("GET", "unmatched", "404"), Some(1.0));
    assert_eq!(requests("GET", "/metrics", "200"), Some(1.0), "the first scrape, seen by the second");
    let latency = &[("method", "POST"), ("route", "/v1/uploads"), ("status", "200")];
    assert_eq!(sample(&text, "clearbg_http_request_duration_seconds_count", latency), Some(1.0));
    let inf = [latency.as_slice(), &[("le", "+Inf")]].concat();
    assert_eq!(sample(&text, "clearbg_http_request_duration_seconds_bucket", &inf), Some(1.0));
    assert!(sample(&text, "clearbg_http_request_duration_seconds_sum", latency).unwrap() > 0.0);

    assert_eq!(sample(&text, "clearbg_jobs", &[("status", "completed")]), Some(1.0));
    assert_eq!(sample(&text, "clearbg_jobs", &[("status", "pending")]), Some(0.0));
    assert_eq!(sample(&text, "clearbg_queue_depth", &[]), Some(0.0));
    assert_eq!(sample(&text, "clearbg_frames_processed_total", &[("model", "light")]), Some(frames));
    let fps = sample(&text, "clearbg_processing_fps", &[("model", "light")]).unwrap();
    assert!(fps > 1.0 && fps < 10_000.0, "{fps}");
    assert_eq!(sample(&text, "clearbg_processing_seconds_count", &[("model", "light")]), Some(1.0));
    // The charge is counted by a task spawned at completion: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut charged = None;
    while Instant::now() < deadline {
        charged = sample(&scrape(&server), "clearbg_credits_charged_millicredits_total", &[("model", "light")]);
        if charged.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(charged, Some(millicredits), "the job's credits_used, in millicredits");
    assert_eq!(sample(&text, "clearbg_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
}

/// A receiver on loopback that answers every request with 204.
fn receiver() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then as many body bytes as Content-Length says.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if seen.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    url
}

#[test]
fn metrics_show_the_queue_and_webhook_outcomes() {
    // No worker: started jobs stay queued, and cancelling them sends `job.cancelled`.
    let server = Server::spawn(&[
        ("CLEARBG_WORKERS", "0"),
        ("CLEARBG_ALLOW_PRIVATE_URLS", "1"),
        ("CLEARBG_WEBHOOK_RETRY_BASE", "500ms"),
        ("CLEARBG_WEBHOOK_MAX_ATTEMPTS", "2"),
    ]);
    let key = server.key("queue");
    let dir = tempfile::tempdir().unwrap();
    let upload = server.upload(&key, &person_clip(dir.path(), 0.5));
    let closed = format!("http://127.0.0.1:{}/hook", free_port());
    let hooks = [Some(receiver()), Some(closed), None];
    let ids: Vec<String> = hooks
        .iter()
        .map(|hook| {
            let body = json!({"video_url": upload["video_url"], "model": "light", "webhook_url": hook});
            json_ok(server.post_json(&key, "/v1/jobs", &body))["id"].as_str().unwrap().to_string()
        })
        .collect();
    let text = scrape(&server);
    assert_eq!(sample(&text, "clearbg_queue_depth", &[]), Some(3.0), "{text}");
    assert_eq!(sample(&text, "clearbg_jobs", &[("status", "pending")]), Some(3.0));

    for id in &ids[..2] {
        let cancelled = json_ok(server.post_json(&key, &format!("/v1/jobs/{id}/cancel"), &json!({})));
        assert_eq!(cancelled["error_code"], "cancelled");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let outcome = |text: &str, outcome: &str| {
        sample(text, "clearbg_webhook_deliveries_total", &[("event", "job.cancelled"), ("outcome", outcome)])
    };
    let text = loop {
        let text = scrape(&server);
        if outcome(&text, "failed").is_some() && outcome(&text, "delivered").is_some() {
            break text;
        }
        assert!(Instant::now() < deadline, "webhook outcomes never appeared:\n{text}\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(outcome(&text, "delivered"), Some(1.0), "the receiver's 204");
    assert_eq!(outcome(&text, "retry"), Some(1.0), "the closed port, first attempt");
    assert_eq!(outcome(&text, "failed"), Some(1.0), "the closed port, last attempt");
    assert_eq!(sample(&text, "clearbg_queue_depth", &[]), Some(1.0));
    assert_eq!(sample(&text, "clearbg_jobs", &[("status", "failed")]), Some(2.0));
}

const CHECKS: [&str; 9] = [
    "api",
    "database",
    "storage",
    "ffmpeg",
    "onnx_runtime",
    "model_light",
    "model_human",
    "model_original",
    "model_pro",
];

#[test]
fn health_is_healthy_when_every_check_passes() {
    let server = Server::spawn(&[]);
    let r = client().get(server.url("/health")).send().unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    assert_eq!(body["status"], "healthy", "{body}");
    let checks = body["checks"].as_object().unwrap();
    // The opt-in video model has a check only where it is installed (CI installs it).
    let video = video_model_installed();
    assert_eq!(checks.len(), CHECKS.len() + usize::from(video), "{body}");
    for check in CHECKS.iter().chain(video.then_some(&"model_video")) {
        assert_eq!(checks[*check], true, "{check}: {body}");
    }
    assert_eq!(body["details"], json!({}));
    assert_eq!(body["workers"], 1);

    // An API node runs no model: it checks what it uses, and is healthy without the engine's parts.
    let api_only = Server::spawn(&[("CLEARBG_WORKERS", "0")]);
    let body: Value = client().get(api_only.url("/health")).send().unwrap().json().unwrap();
    assert_eq!(body["status"], "healthy");
    let checks: Vec<&str> = body["checks"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(checks, ["api", "database", "ffmpeg", "storage"], "{body}");
}

/// A server process started by hand, for a home the harness would refuse (it waits for 200).
struct Raw {
    child: Child,
    base: String,
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn health(base: &str) -> (u16, Value) {
    let r = client().get(format!("{base}/health")).send().unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

#[test]
fn health_is_degraded_and_says_what_is_wrong() {
    let real = std::env::var("CLEARBG_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| Path::new(&std::env::var("HOME").unwrap()).join(".cache/clearbg"));
    let dir = tempfile::tempdir().unwrap();
    // A home with ONNX Runtime and the light model, a corrupt MODNet and no ISNet.
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("lib")).unwrap();
    std::fs::create_dir_all(home.join("models")).unwrap();
    for entry in std::fs::read_dir(real.join("lib")).unwrap().flatten() {
        std::os::unix::fs::symlink(entry.path(), home.join("lib").join(entry.file_name())).unwrap();
    }
    std::os::unix::fs::symlink(real.join("models/mp_selfie_256.onnx"), home.join("models/mp_selfie_256.onnx")).unwrap();
    std::fs::write(home.join("models/modnet_photographic.onnx"), b"not a model").unwrap();
    // ...and a PATH without ffmpeg.
    let empty_path = dir.path().join("bin");
    std::fs::create_dir_all(&empty_path).unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_clearbg"))
        .arg("serve")
        .env("CLEARBG_HOME", &home)
        .env("PATH", &empty_path)
        .env("CLEARBG_DATA_DIR", &data)
        .env("CLEARBG_LISTEN", format!("127.0.0.1:{port}"))
        .env("CLEARBG_THREADS", "1")
        .env_remove("CLEARBG_PUBLIC_URL")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let server = Raw { child, base: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        if let Ok(r) = client().get(format!("{}/health", server.base)).send() {
            break (r.status().as_u16(), r.json::<Value>().unwrap());
        }
        let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "the server never answered:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded");
    let checks = &body["checks"];
    for ok in ["api", "database", "storage", "onnx_runtime", "model_light"] {
        assert_eq!(checks[ok], true, "{ok}: {body}");
    }
    for bad in ["ffmpeg", "model_human", "model_original", "model_pro"] {
        assert_eq!(checks[bad], false, "{bad}: {body}");
    }
    let details = &body["details"];
    assert_eq!(details.as_object().unwrap().len(), 4, "only what is wrong: {body}");
    assert!(details["ffmpeg"].as_str().unwrap().contains("ffmpeg does not run"), "{body}");
    assert!(details["model_human"].as_str().unwrap().contains("does not match the pinned"), "{body}");
    assert!(details["model_original"].as_str().unwrap().contains("isnet_fp32_dyn.onnx"), "{body}");
    let pro = details["model_pro"].as_str().unwrap();
    assert!(pro.contains("isnet_fp32_dyn.onnx") && pro.contains("modnet_photographic.onnx"), "both named: {body}");

    // Storage that cannot be written: its directory replaced by a file.
    let objects = data.join("objects");
    std::fs::rename(&objects, data.join("objects.moved")).unwrap();
    std::fs::write(&objects, b"in the way").unwrap();
    let (status, body) = health(&server.base);
    assert_eq!((status, &body["checks"]["storage"]), (503, &json!(false)), "{body}");
    assert!(body["details"]["storage"].as_str().unwrap().contains("object storage"), "{body}");
    std::fs::remove_file(&objects).unwrap();
    std::fs::rename(data.join("objects.moved"), &objects).unwrap();
    let (_, body) = health(&server.base);
    assert_eq!(body["checks"]["storage"], true, "storage is checked afresh: {body}");

    // A fixed model is seen without a restart: the check follows the file, not the process.
    std::fs::remove_file(home.join("models/modnet_photographic.onnx")).unwrap();
    std::os::unix::fs::symlink(
        real.join("models/modnet_photographic.onnx"),
        home.join("models/modnet_photographic.onnx"),
    )
    .unwrap();
    let (_, body) = health(&server.base);
    assert_eq!(body["checks"]["model_human"], true, "{body}");
    assert_eq!(body["checks"]["model_pro"], false, "ISNet is still missing: {body}");
}

#[test]
fn openapi_and_the_offline_docs_are_served() {
    let server = Server::spawn(&[("CLEARBG_WORKERS", "0")]);
    let r = client().get(server.url("/openapi.json")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let spec: Value = r.json().unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1."), "{}", spec["openapi"]);
    for (path, method) in [
        ("/v1/uploads", "post"),
        ("/v1/jobs", "post"),
        ("/v1/jobs", "get"),
        ("/v1/jobs/{id}/start", "post"),
        ("/api/download/{id}", "get"),
        ("/health", "get"),
        ("/metrics", "get"),
        ("/", "get"),
    ] {
        assert!(spec["paths"][path][method].is_object(), "{method} {path}");
    }
    assert!(spec["components"]["schemas"]["Job"].is_object());

    for page in ["/docs", "/docs/"] {
        let r = client().get(server.url(page)).send().unwrap();
        assert_eq!(r.status(), 200, "{page}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    }
    let r = client().get(server.url("/docs")).send().unwrap();
    let html = r.text().unwrap();
    assert!(html.contains("swagger-ui") && html.contains("<base href=\"/docs/\">"), "{html}");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "the page loads from elsewhere: {html}");
    let init = client().get(server.url("/docs/swagger-initializer.js")).send().unwrap().text().unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    for file in ["swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"] {
        let r = client().get(server.url(&format!("/docs/{file}"))).send().unwrap();
        assert_eq!(r.status(), 200, "{file}");
        assert!(html.contains(file), "{file} is what the page loads");
        assert!(r.bytes().unwrap().len() > 1000, "{file}");
    }
}

/// `--log-format json`: one JSON object per line; each request's lines carry its request id and
/// each job's lines its job id.
#[test]
fn json_logs_carry_request_and_job_ids() {
    let mut server = Server::spawn(&[("CLEARBG_LOG_FORMAT", "json")]);
    let key = server.key("logs");
    let dir = tempfile::tempdir().unwrap();
    let upload = server.upload(&key, &person_clip(dir.path(), 0.5));
    let created =
        json_ok(server.post_json(&key, "/v1/jobs", &json!({"video_url": upload["video_url"], "model": "light"})));
    let id = created["id"].as_str().unwrap().to_string();
    server.wait(&key, &id, Duration::from_secs(60));
    let failing = server.get(&key, "/v1/jobs/job_missing");
    let failing_id = failing.headers()["x-request-id"].to_str().unwrap().to_string();
    server.stop();

    let lines: Vec<Value> = server
        .log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    let in_span = |line: &Value, span: &str, field: &str| -> Option<String> {
        line["spans"].as_array()?.iter().find(|s| s["name"] == span).and_then(|s| s[field].as_str().map(str::to_string))
    };
    let job_lines: Vec<&Value> =
        lines.iter().filter(|l| in_span(l, "job", "job_id").as_deref() == Some(id.as_str())).collect();
    assert!(job_lines.len() >= 2, "the job logs its start and its end");
    for line in &lines {
        // Lines about a worker itself, not about a job.
        let per_worker = ["worker ready", "worker stopped", "listening for queued jobs"];
        if line["target"] == "clearbg_service::worker" && !per_worker.iter().any(|m| line["fields"]["message"] == *m) {
            assert!(in_span(line, "job", "job_id").is_some(), "a worker line without job_id: {line}");
        }
        if line["target"].as_str().unwrap().starts_with("clearbg_service::http") {
            assert!(in_span(line, "request", "request_id").is_some(), "an HTTP line without request_id: {line}");
        }
    }
    assert!(
        lines.iter().any(|l| in_span(l, "request", "request_id").as_deref() == Some(failing_id.as_str())
            && l["fields"]["status"] == 404),
        "the failing request's id is in its log line"
    );
}
