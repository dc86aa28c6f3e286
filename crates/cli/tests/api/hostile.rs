//! Hostile input against a live server, tried as an attacker would: media that reads other files
//! (a local one, another tenant's output), lists of files, playlists that never end, frames that
//! explode in memory, work that is not paid for, another tenant's files named in a URL, slow
//! clients and failed-key guessing. (A child that hangs is in the process suite's durability.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{json, Value};

fn upload_bytes(server: &Server, key: &str, name: &str, bytes: Vec<u8>) -> reqwest::blocking::Response {
    let part = Part::bytes(bytes).file_name(name.to_string()).mime_str("video/mp4").unwrap();
    client()
        .post(server.url("/v1/uploads"))
        .header("X-Api-Key", key)
        .multipart(Form::new().part("file", part))
        .send()
        .unwrap()
}

/// HLS playlists and ffconcat lists, whatever they point at, never reach ffmpeg: not as uploads
/// (415), and not as downloaded `video_url`s (the job fails at once, naming the URL, not a path).
#[test]
fn playlists_and_lists_of_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[("CLEARBG_ALLOW_PRIVATE_URLS", "1")]);
    let (a, b) = (server.key("tenant-a"), server.key("tenant-b"));
    // Tenant A has a finished output on disk; B knows where outputs live.
    let upload = server.upload(&a, &person_clip(dir.path(), 0.5));
    let job = json_ok(server.post_json(&a, "/v1/jobs", &json!({"video_url": upload["video_url"], "model": "light"})));
    let (done, _) = server.wait(&a, job["id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!(done["status"], "completed");
    let output = server.data.join(format!("objects/outputs/{}.webm", done["id"].as_str().unwrap()));
    assert!(output.is_file());
    let playlist = |target: &Path| {
        format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:0.001,\nfile://{}\n#EXT-X-ENDLIST\n",
            target.display()
        )
        .into_bytes()
    };
    let local = playlist(Path::new("/etc/passwd"));
    let cross_tenant = playlist(&output);
    let concat = format!("ffconcat version 1.0\nfile {}\n", output.display()).into_bytes();
    // A live playlist (no end) whose one segment is another live playlist: ffprobe would wait.
    let live = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2,\n/live.m3u8\n".to_vec();
    for (name, bytes) in
        [("local.mp4", &local), ("cross.mp4", &cross_tenant), ("list.mp4", &concat), ("live.mp4", &live)]
    {
        let started = Instant::now();
        let body = expect_error(upload_bytes(&server, &b, name, bytes.clone()), 415, "unsupported_media_type");
        assert!(started.elapsed() < Duration::from_secs(5), "{name}: {:?}", started.elapsed());
        assert!(body["error"]["message"].as_str().unwrap().contains("playlists"), "{body}");
    }

    let base = serve_routes(vec![
        ("/local.mp4", local),
        ("/cross.mp4", cross_tenant),
        ("/list.mp4", concat),
        ("/live.m3u8", live),
    ]);
    for path in ["/local.mp4", "/cross.mp4", "/list.mp4", "/live.m3u8"] {
        let url = format!("{base}{path}");
        let created = Instant::now();
        let job = json_ok(server.post_json(&b, "/v1/jobs", &json!({"video_url": url, "model": "light"})));
        assert!(created.elapsed() < Duration::from_secs(5), "creating a URL job does not read it");
        let (job, _) = server.wait(&b, job["id"].as_str().unwrap(), Duration::from_secs(30));
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!(job["error_code"], "invalid_input", "{job}");
        let error = job["error"].as_str().unwrap();
        assert!(!error.contains(server.data.to_str().unwrap()) && !error.contains("/tmp"), "no host paths: {error}");
        assert_eq!(job["credits_used"], 0, "{job}");
    }
    assert!(processes_with(server.data.to_str().unwrap()).is_empty(), "no ffmpeg or ffprobe left running");
}

/// Frames that would cost gigabytes are refused when the job is made, before any decoding: an
/// 8192x8192 frame (a 200 KB file), a canvas of that size, and a subject scaled past it.
#[test]
fn memory_bombs_are_refused_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[]);
    let key = server.key("a");
    let big = dir.path().join("big.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi", "-i", "color=c=red:s=8192x8192:d=0.04", "-frames:v", "1"])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .arg(&big)
        .status()
        .unwrap();
    assert!(made.success());
    let upload = server.upload(&key, &big);
    let started = Instant::now();
    let body = expect_error(
        server.post_json(&key, "/v1/jobs", &json!({"video_url": upload["video_url"], "model": "light"})),
        422,
        "invalid_request",
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(body["error"]["details"][0]["field"], "video_url");
    assert!(body["error"]["message"].as_str().unwrap().contains("megapixels"), "{body}");

    let small = server.upload(&key, &person_clip(dir.path(), 0.3));
    let body = expect_error(
        server.post_json(
            &key,
            "/v1/jobs",
            &json!({"video_url": small["video_url"], "model": "light", "composition": {"canvas": {"width": 8192, "height": 8192}}}),
        ),
        422,
        "invalid_request",
    );
    assert_eq!(body["error"]["details"][0]["field"], "composition.canvas", "{body}");
    assert_eq!(json_ok(server.get(&key, "/v1/jobs"))["total"], 0, "nothing was queued");
}

/// `bg_image_url` naming another key's upload is refused whatever host the link names, with
/// the very answer a file that does not exist gets.
#[test]
fn another_keys_files_cannot_be_named_in_any_url_form() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[("CLEARBG_WORKERS", "0")]);
    let (a, b) = (server.key("a"), server.key("b"));
    let clip = person_clip(dir.path(), 0.3);
    let theirs = server.upload(&a, &clip);
    let mine = server.upload(&b, &clip);
    let id = theirs["video_id"].as_str().unwrap();
    let path = theirs["video_url"].as_str().unwrap().split_once("/files/").unwrap().1.to_string();
    let refusal = |image_url: &str| {
        let r = server.post_json(
            &b,
            "/v1/jobs",
            &json!({"video_url": mine["video_url"], "model": "light", "output_format": "mp4", "bg_image_url": image_url}),
        );
        let body = expect_error(r, 422, "invalid_request");
        assert_eq!(body["error"]["details"][0]["field"], "bg_image_url", "{body}");
        body["error"]["details"][0]["message"].clone()
    };
    let ours = refusal(theirs["video_url"].as_str().unwrap());
    let elsewhere = refusal(&format!("https://cdn.example.com/files/{path}"));
    let presigned = refusal(&format!("https://s3.example.com/bucket/uploads/{id}.mp4?X-Amz-Signature=x"));
    let missing = refusal(&format!("{}/files/uploads/vid_{}.mp4", server.base, "0".repeat(32)));
    assert_eq!(ours, missing, "another key's file and no file look alike");
    assert_eq!((elsewhere, presigned), (missing.clone(), missing));
    // Tenant B's video_url naming A's upload gets the same answer.
    let r = server.post_json(&b, "/v1/jobs", &json!({"video_url": theirs["video_url"], "model": "light"}));
    expect_error(r, 422, "invalid_request");
}

/// A key with no credits makes no worker spend CPU: an upload whose duration the header does
/// not state is measured (by counting its packets) and refused with 402 at creation; a URL,
/// whose duration is unknown until downloaded, is refused for the empty balance; and an input
/// whose duration cannot be established at all is refused for everyone.
#[test]
fn a_key_without_credits_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[("CLEARBG_INITIAL_CREDITS", "0")]);
    let key = server.key("broke");
    // Written to a pipe, a WebM carries no duration in its header.
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=3"])
        .args(["-c:v", "libvpx-vp9", "-deadline", "realtime", "-f", "webm", "pipe:1"])
        .output()
        .unwrap();
    let live = dir.path().join("live.webm");
    std::fs::write(&live, out.stdout).unwrap();
    let upload = server.upload(&key, &live);
    let body = expect_error(
        server.post_json(&key, "/v1/jobs", &json!({"video_url": upload["video_url"], "model": "light"})),
        402,
        "insufficient_credits",
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("needs 2.25 credits"), "{body}");
    let r = server.post_json(&key, "/v1/jobs", &json!({"video_url": "https://example.com/a.mp4", "model": "light"}));
    expect_error(r, 402, "insufficient_credits");
    // A WebM with no frames: no stated duration and nothing to count (ffprobe refuses it).
    let empty = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=0.04"])
        .args(["-frames:v", "0", "-c:v", "libvpx-vp9", "-f", "webm", "pipe:1"])
        .output()
        .unwrap();
    let path = dir.path().join("empty.webm");
    std::fs::write(&path, &empty.stdout).unwrap();
    let up = server.upload(&key, &path);
    let r = server.post_json(&key, "/v1/jobs", &json!({"video_url": up["video_url"], "model": "light"}));
    let body = expect_error(r, 422, "invalid_request");
    assert_eq!(body["error"]["details"][0]["field"], "video_url", "{body}");
    let jobs = json_ok(server.get(&key, "/v1/jobs"));
    assert_eq!(jobs["total"], 0, "no job was made: {jobs}");
}

/// A connection that trickles its request head, or sits idle, is closed.
#[test]
fn slow_and_idle_connections_are_closed() {
    let server =
        Server::start(&[("CLEARBG_WORKERS", "0"), ("CLEARBG_HEADER_TIMEOUT", "1s"), ("CLEARBG_IDLE_TIMEOUT", "2s")]);
    let closed_within = |mut stream: TcpStream, limit: Duration| {
        stream.set_read_timeout(Some(limit)).unwrap();
        let started = Instant::now();
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        assert!(started.elapsed() < limit, "still open after {:?}", started.elapsed());
        sink
    };
    // Slowloris: a head that never ends.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(slow, "GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    closed_within(slow, Duration::from_secs(5));
    // Silent from the start.
    closed_within(TcpStream::connect(("127.0.0.1", server.port)).unwrap(), Duration::from_secs(5));
    // A keep-alive connection that finished its request and then says nothing.
    let mut idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(idle, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let answer = closed_within(idle, Duration::from_secs(8));
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "the request itself was served");
}

/// Guessing keys from one address stops working: each wrong key counts against the address,
/// and past the budget the address is refused before any key is looked at.
#[test]
fn failed_authentication_is_throttled_per_address() {
    let server = Server::start(&[("CLEARBG_WORKERS", "0"), ("CLEARBG_AUTH_FAILURE_LIMIT", "5/min")]);
    let key = server.key("a");
    for n in 0..5 {
        expect_error(server.get(&format!("cbg_wrong_{n}"), "/v1/jobs"), 401, "invalid_api_key");
    }
    let r = server.get("cbg_wrong_6", "/v1/jobs");
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, 429, "rate_limited");
    expect_error(server.get(&key, "/v1/jobs"), 429, "rate_limited");
    let r = client().get(server.url("/v1/admin/keys")).header("X-Admin-Token", "guess").send().unwrap();
    expect_error(r, 429, "rate_limited");
}

/// The key-less legacy routes are limited per address, and an operator can turn them off.
#[test]
fn legacy_routes_are_limited_and_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let clip = person_clip(dir.path(), 0.3);
    let legacy_upload = |server: &Server| {
        let part = Part::bytes(std::fs::read(&clip).unwrap()).file_name("clip.mp4");
        client().post(server.url("/api/upload")).multipart(Form::new().part("file", part)).send().unwrap()
    };
    let limited = Server::start(&[
        ("CLEARBG_WORKERS", "0"),
        ("CLEARBG_LEGACY_RATE_LIMIT", "2/h"),
        ("CLEARBG_ALLOW_PRIVATE_URLS", "1"),
    ]);
    let upload = json_ok(legacy_upload(&limited));
    let job = client()
        .post(limited.url("/api/process"))
        .json(&json!({"video_url": upload["video_url"], "model": "light"}))
        .send()
        .unwrap();
    json_ok(job);
    let refused = legacy_upload(&limited);
    assert!(refused.headers().contains_key("retry-after"));
    expect_error(refused, 429, "rate_limited");

    let off = Server::start(&[("CLEARBG_WORKERS", "0"), ("CLEARBG_LEGACY_API", "0")]);
    expect_error(legacy_upload(&off), 404, "not_found");
    let r =
        client().post(off.url("/api/process")).json(&json!({"video_url": "https://example.com/a.mp4"})).send().unwrap();
    expect_error(r, 404, "not_found");
}

/// A 429 for job starts reports the starts' budget, not the request budget's.
#[test]
fn a_start_refusal_carries_the_start_budget() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[("CLEARBG_WORKERS", "0"), ("CLEARBG_START_RATE_LIMIT", "1/min")]);
    let key = server.key("a");
    let upload = server.upload(&key, &person_clip(dir.path(), 0.3));
    let body = json!({"video_url": upload["video_url"], "model": "light"});
    json_ok(server.post_json(&key, "/v1/jobs", &body));
    let refused = server.post_json(&key, "/v1/jobs", &body);
    let limit = refused.headers()["x-ratelimit-limit"].to_str().unwrap().to_string();
    assert_eq!(limit, "1", "the start budget's limit, not the request budget's 1200");
    expect_error(refused, 429, "rate_limited");
}

/// `/health` reads the database's tables: a database file overwritten with garbage is degraded.
#[test]
fn health_notices_a_corrupt_database() {
    let server = Server::start(&[("CLEARBG_WORKERS", "0")]);
    assert_eq!(client().get(server.url("/health")).send().unwrap().status().as_u16(), 200);
    if std::env::var("CLEARBG_TEST_DATABASE").as_deref() == Ok("postgres") {
        return; // the SQLite file is what this test corrupts
    }
    // The database, its write-ahead log (where recent pages live) and the log's shared index
    // alike, as a failing disk would. (With the index intact, a connection whose cache holds
    // every table's first page may rightly answer from its cache: it saw no commit.)
    for file in ["clearbg.db", "clearbg.db-wal", "clearbg.db-shm"] {
        let path = server.data.join(file);
        let len = std::fs::metadata(&path).map(|m| m.len() as usize).unwrap_or(0);
        if len > 0 {
            std::fs::write(&path, vec![0x5au8; len]).unwrap();
        }
    }
    let r = client().get(server.url("/health")).send().unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().unwrap();
    assert_eq!(body["checks"]["database"], false, "{body}");
}
