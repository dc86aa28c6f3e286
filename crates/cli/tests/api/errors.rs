//! The bad paths, as hard as the good: every refusal is JSON with a code and the request's id.

use std::io::{Read, Write};
use std::time::Duration;

use crate::common::*;
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{json, Value};

#[test]
fn keys_are_checked_and_isolate_jobs() {
    let server = Server::start(&[("CLEARBG_WORKERS", "0")]);
    let key = server.key("a");
    let other = server.key("b");
    let r = client().get(server.url("/v1/jobs")).send().unwrap();
    expect_error(r, 401, "missing_api_key");
    expect_error(server.get("cbg_not_a_key", "/v1/jobs"), 401, "invalid_api_key");

    let job = json_ok(server.post_json(
        &key,
        "/v1/jobs",
        &json!({"video_url": "https://example.com/a.mp4", "auto_start": false}),
    ));
    let id = job["id"].as_str().unwrap();
    for path in [format!("/v1/jobs/{id}"), format!("/v1/jobs/{id}/events")] {
        expect_error(server.get(&other, &path), 404, "not_found");
    }
    expect_error(server.post_json(&other, &format!("/v1/jobs/{id}/start"), &json!({})), 404, "not_found");
    expect_error(server.post_json(&other, &format!("/v1/jobs/{id}/cancel"), &json!({})), 404, "not_found");
    assert_eq!(json_ok(server.get(&other, "/v1/jobs"))["total"], 0);
    assert_eq!(json_ok(server.get(&key, "/v1/jobs"))["total"], 1);

    // Another key cannot use this key's upload either.
    let dir = tempfile::tempdir().unwrap();
    let upload = server.upload(&key, &person_clip(dir.path(), 0.5));
    let body = expect_error(
        server.post_json(&other, "/v1/jobs", &json!({"video_url": upload["video_url"]})),
        422,
        "invalid_request",
    );
    assert_eq!(body["error"]["details"][0]["field"], "video_url");
}

#[test]
fn admin_routes_manage_keys_and_disabling_is_immediate() {
    let server = Server::start(&[("CLEARBG_WORKERS", "0")]);
    let admin = |method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>| {
        // The SDKs send a JSON content type even on GETs with no body.
        let mut req = client().request(method, server.url(path)).header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("X-Admin-Token", t);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        req.send().unwrap()
    };
    use reqwest::Method;
    expect_error(admin(Method::GET, "/v1/admin/keys", None, None), 401, "missing_admin_token");
    expect_error(admin(Method::GET, "/v1/admin/keys", Some("wrong"), None), 403, "forbidden");
    let config = json_ok(admin(Method::GET, "/v1/admin/config", Some(ADMIN_TOKEN), None));
    assert!(!config.to_string().contains(ADMIN_TOKEN), "the config hides secrets");
    assert_eq!(config["precision"], "int8", "ISNet in int8 on a CPU unless told otherwise: {config}");

    let created = json_ok(admin(
        Method::POST,
        "/v1/admin/keys",
        Some(ADMIN_TOKEN),
        Some(json!({"client_id": "acme-prod", "note": "ci"})),
    ));
    let key = created["api_key"].as_str().unwrap().to_string();
    let fp = created["key_fingerprint"].as_str().unwrap().to_string();
    let list = json_ok(admin(Method::GET, "/v1/admin/keys", Some(ADMIN_TOKEN), None));
    let item = list["items"].as_array().unwrap().iter().find(|i| i["key_fingerprint"] == fp).unwrap().clone();
    assert_eq!(item["client_id"], "acme-prod");
    assert_eq!(item["status"], "active");
    assert!(!list.to_string().contains(&key), "the key itself is never listed");
    let body =
        expect_error(admin(Method::POST, "/v1/admin/keys", Some(ADMIN_TOKEN), Some(json!({}))), 422, "invalid_request");
    assert_eq!(body["error"]["details"][0]["field"], "client_id");

    json_ok(server.get(&key, "/v1/jobs"));
    json_ok(admin(Method::POST, "/v1/admin/keys/disable", Some(ADMIN_TOKEN), Some(json!({"key_fingerprint": fp}))));
    expect_error(server.get(&key, "/v1/jobs"), 401, "invalid_api_key");
    json_ok(admin(Method::POST, "/v1/admin/keys/enable", Some(ADMIN_TOKEN), Some(json!({"key_fingerprint": fp}))));
    json_ok(server.get(&key, "/v1/jobs"));
    expect_error(
        admin(Method::POST, "/v1/admin/keys/disable", Some(ADMIN_TOKEN), Some(json!({"key_fingerprint": "kfp_nope"}))),
        404,
        "not_found",
    );
    let used = json_ok(admin(Method::GET, "/v1/admin/keys", Some(ADMIN_TOKEN), None));
    let item = used["items"].as_array().unwrap().iter().find(|i| i["key_fingerprint"] == fp).unwrap().clone();
    assert!(item["last_used_at"].is_string(), "{item}");
}

#[test]
fn bad_bodies_name_every_field() {
    let server = Server::start(&[("CLEARBG_WORKERS", "0")]);
    let key = server.key("a");
    let post = |body: &str| {
        client()
            .post(server.url("/v1/jobs"))
            .header("X-Api-Key", &key)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let fields = |body: &Value| -> Vec<String> {
        body["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap().to_string()).collect()
    };

    let body = expect_error(post("{\"video_url\": "), 422, "invalid_request");
    assert_eq!(fields(&body), ["body"]);
    let body = expect_error(
        post(&json!({"model": "huge", "output_format": "avi", "bg_type": "plaid", "auto_start": "yes"}).to_string()),
        422,
        "invalid_request",
    );
    assert_eq!(fields(&body), ["video_url", "model", "output_format", "bg_type", "auto_start"]);
    let body = expect_error(
        post(&json!({"video_url": "https://example.com/a.mp4", "output_format": "mp4"}).to_string()),
        422,
        "invalid_request",
    );
    assert_eq!(fields(&body), ["output_format"]);
    assert!(body["error"]["message"].as_str().unwrap().contains("transparency"));
    let body = expect_error(
        post(
            &json!({"video_url": "https://example.com/a.mp4", "bg_type": "custom", "bg_color": [0, 128, 255]})
                .to_string(),
        ),
        422,
        "invalid_request",
    );
    assert_eq!(fields(&body), ["bg_color"]);
    let body = expect_error(
        post(&json!({"video_url": "https://example.com/a.mp4", "composition": {"foreground": {"anchor": "somewhere", "scale": 0}}}).to_string()),
        422,
        "invalid_request",
    );
    assert_eq!(fields(&body), ["composition.foreground.anchor"]);
    for url in [
        "http://127.0.0.1:9/a.mp4",
        "http://169.254.169.254/latest",
        "http://localhost/a.mp4",
        "ftp://example.com/a.mp4",
    ] {
        let body = expect_error(post(&json!({"video_url": url}).to_string()), 422, "invalid_request");
        assert_eq!(fields(&body), ["video_url"], "{url}");
    }
    for query in ["limit=0", "limit=101", "limit=ten", "offset=-1", "status=done"] {
        expect_error(server.get(&key, &format!("/v1/jobs?{query}")), 422, "invalid_request");
    }

    // A text prompt that cannot be applied is accepted, and the job says so.
    let job = json_ok(post(&json!({"video_url": "https://example.com/a.mp4", "model": "pro", "text_prompt": "person wearing red jacket", "auto_start": false}).to_string()));
    assert_eq!(job["text_prompt"], "person wearing red jacket");
    assert!(job["warnings"][0].as_str().unwrap().contains("text_prompt"), "{job}");

    // Every response is JSON, the router's own refusals included.
    expect_error(client().get(server.url("/v2/nothing")).send().unwrap(), 404, "not_found");
    expect_error(
        client().delete(server.url("/v1/jobs")).header("X-Api-Key", &key).send().unwrap(),
        405,
        "method_not_allowed",
    );
    expect_error(server.get(&key, "/v1/jobs/job_missing"), 404, "not_found");
    let big = format!(
        "{{\"video_url\": \"https://example.com/a.mp4\", \"metadata\": {{\"x\": \"{}\"}}}}",
        "a".repeat(2 << 20)
    );
    expect_error(post(&big), 413, "payload_too_large");

    // A client's own request id is echoed.
    let r = client().get(server.url("/v1/jobs")).header("X-Request-Id", "trace-123").send().unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-123");
    assert_eq!(r.json::<Value>().unwrap()["error"]["request_id"], "trace-123");
}

#[test]
fn uploads_refuse_what_is_not_a_video_and_what_is_too_large() {
    let server = Server::start(&[("CLEARBG_MAX_UPLOAD_BYTES", "100000")]);
    let key = server.key("a");
    let send = |part: Part, path: &str| {
        client()
            .post(server.url(path))
            .header("X-Api-Key", &key)
            .multipart(Form::new().part("file", part))
            .send()
            .unwrap()
    };
    let text = || Part::bytes(b"hello, this is not a video".to_vec()).file_name("notes.txt");
    expect_error(send(text(), "/v1/uploads"), 415, "unsupported_media_type");
    expect_error(send(text().mime_str("text/plain").unwrap(), "/v1/uploads"), 415, "unsupported_media_type");
    expect_error(send(text(), "/api/upload"), 400, "unsupported_media_type");
    // Streamed without a length, so the cap is found while storing, not from the headers. It
    // starts as an MP4 does, so that its bytes pass for a video until the cap.
    let mp4_head = b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41".to_vec();
    let big = || {
        let mut bytes = mp4_head.clone();
        bytes.resize(200_000, 0);
        Part::reader(std::io::Cursor::new(bytes)).file_name("big.mp4")
    };
    expect_error(send(big(), "/v1/uploads"), 413, "file_too_large");
    expect_error(send(big(), "/api/upload"), 400, "file_too_large");
    let r = client().post(server.url("/v1/uploads")).header("X-Api-Key", &key).body("not multipart").send().unwrap();
    expect_error(r, 422, "invalid_request");
    let uploads = server.data.join("objects/uploads");
    let left: Vec<_> =
        std::fs::read_dir(&uploads).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "refused uploads leave nothing behind: {left:?}");

    // What a file is comes from its bytes: text called a video is refused whatever its name
    // and type say.
    let disguised = Part::bytes(b"this is text in disguise".repeat(100)).file_name("fake.mp4");
    expect_error(send(disguised.mime_str("video/mp4").unwrap(), "/v1/uploads"), 415, "unsupported_media_type");
    // Bytes that start as an MP4 but are no video: stored, then refused when a job is made of
    // them (its duration cannot be read), before anything is queued or charged.
    let mut broken = mp4_head.clone();
    broken.extend(b"garbage".repeat(100));
    let fake = json_ok(send(Part::bytes(broken).file_name("broken.mp4"), "/v1/uploads"));
    let refused = server.post_json(&key, "/v1/jobs", &json!({"video_url": fake["video_url"], "model": "light"}));
    let body = expect_error(refused, 422, "invalid_request");
    assert_eq!(body["error"]["details"][0]["field"], "video_url", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("not a readable video file"), "{message}");
    assert!(!message.contains(server.data.to_str().unwrap()), "no host paths in messages: {message}");
    let jobs = json_ok(server.get(&key, "/v1/jobs"));
    assert_eq!(jobs["total"], 0, "nothing was queued");
}

/// The declared size is checked before a byte of the body is read: a client announcing more
/// than the cap gets its 413 at once.
#[test]
fn an_oversize_declared_upload_is_refused_before_the_body() {
    let server = Server::start(&[("CLEARBG_WORKERS", "0")]);
    let key = server.key("a");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "POST /v1/uploads HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 600000000\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if response.windows(4).any(|w| w == b"\r\n\r\n") && response.ends_with(b"}") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"file_too_large\""), "{text}");
}

#[test]
fn signed_links_refuse_tampering_and_expire() {
    let server = Server::start(&[("CLEARBG_URL_TTL", "2s"), ("CLEARBG_WORKERS", "0")]);
    let key = server.key("a");
    let dir = tempfile::tempdir().unwrap();
    let upload = server.upload(&key, &person_clip(dir.path(), 0.5));
    // Upload links live as long as the file; use them to check the signature rules.
    let url = upload["video_url"].as_str().unwrap().to_string();
    assert!(client().get(&url).send().unwrap().status().is_success());
    let tampered_sig = format!("{}0", &url[..url.len() - 1]).replace("sig=", "sig=f");
    expect_error(client().get(&tampered_sig).send().unwrap(), 403, "invalid_signature");
    let later = url.replace("expires=", "expires=9");
    expect_error(client().get(&later).send().unwrap(), 403, "invalid_signature");
    let other_file = url.replace("/uploads/vid_", "/outputs/vid_");
    expect_error(client().get(&other_file).send().unwrap(), 403, "invalid_signature");
    let unsigned = url.split('?').next().unwrap().to_string();
    expect_error(client().get(&unsigned).send().unwrap(), 403, "invalid_signature");

    // Output links carry the configured TTL.
    let server = server.restart(&[("CLEARBG_WORKERS", "1")]);
    let job = json_ok(server.post_json(&key, "/v1/jobs", &json!({"video_url": url, "model": "light"})));
    let (job, _) = server.wait(&key, job["id"].as_str().unwrap(), Duration::from_secs(60));
    let link = job["output_url"].as_str().unwrap().to_string();
    assert!(client().get(&link).send().unwrap().status().is_success());
    std::thread::sleep(Duration::from_millis(3100));
    expect_error(client().get(&link).send().unwrap(), 403, "url_expired");
    // Asking again gives a fresh link.
    let fresh = json_ok(server.get(&key, &format!("/v1/jobs/{}", job["id"].as_str().unwrap())));
    assert!(client().get(fresh["output_url"].as_str().unwrap()).send().unwrap().status().is_success());
}
