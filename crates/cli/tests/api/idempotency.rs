//! `Idempotency-Key`: a retried request returns the first answer and does nothing again, also
//! when the duplicates arrive at the same time; another request under the same key is a 409.

use crate::common::*;
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{json, Value};

fn post(server: &Server, api_key: &str, path: &str, idem: &str, body: &Value) -> (u16, Value, bool) {
    let r = client()
        .post(server.url(path))
        .header("X-Api-Key", api_key)
        .header("Idempotency-Key", idem)
        .json(body)
        .send()
        .unwrap();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    (r.status().as_u16(), r.json().unwrap(), replayed)
}

#[test]
fn a_retried_create_returns_the_same_job() {
    let server = Server::start(&[("CLEARBG_WORKERS", "0")]);
    let key = server.key("a");
    let body = json!({"video_url": "https://example.com/a.mp4", "model": "light", "auto_start": false});
    let (status, first, replayed) = post(&server, &key, "/v1/jobs", "create-1", &body);
    assert_eq!((status, replayed), (200, false));
    let (status, again, replayed) = post(&server, &key, "/v1/jobs", "create-1", &body);
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again, first, "the same body, byte for byte");
    assert_eq!(json_ok(server.get(&key, "/v1/jobs"))["total"], 1);

    let other_body = json!({"video_url": "https://example.com/b.mp4"});
    let (status, conflict, _) = post(&server, &key, "/v1/jobs", "create-1", &other_body);
    assert_eq!((status, conflict["error"]["code"].as_str()), (409, Some("idempotency_conflict")));

    // Keys belong to their API key: another key's identical Idempotency-Key is a new request.
    let other = server.key("b");
    let (_, theirs, replayed) = post(&server, &other, "/v1/jobs", "create-1", &body);
    assert!(!replayed);
    assert_ne!(theirs["id"], first["id"]);

    // A refusal is an answer too: replayed, not re-evaluated.
    let (status, bad, _) = post(&server, &key, "/v1/jobs", "bad-1", &json!({"model": "huge"}));
    let (status_again, bad_again, replayed) = post(&server, &key, "/v1/jobs", "bad-1", &json!({"model": "huge"}));
    assert_eq!((status, status_again, replayed), (422, 422, true));
    assert_eq!(bad, bad_again);
}

#[test]
fn concurrent_duplicates_resolve_to_one_job() {
    let server = Server::start(&[("CLEARBG_WORKERS", "0")]);
    let key = server.key("a");
    let body = json!({"video_url": "https://example.com/a.mp4", "auto_start": false, "metadata": {"n": 1}});
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20).map(|_| s.spawn(|| post(&server, &key, "/v1/jobs", "same", &body))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .map(|(st, b, _)| {
                assert_eq!(st, 200, "{b}");
                b["id"].as_str().unwrap().to_string()
            })
            .collect()
    });
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(json_ok(server.get(&key, "/v1/jobs"))["total"], 1);
}

#[test]
fn start_cancel_and_upload_are_idempotent() {
    let server = Server::start(&[("CLEARBG_WORKERS", "0")]);
    let key = server.key("a");
    let dir = tempfile::tempdir().unwrap();
    let clip = person_clip(dir.path(), 0.5);
    // Large enough that a replay which answered before reading the body would cut the client
    // off mid-send (the trailing bytes are ignored by MP4 readers).
    let mut bytes = std::fs::read(&clip).unwrap();
    bytes.resize(bytes.len() + 24_000_000, 0);
    let upload = |idem: &str| {
        let part = Part::bytes(bytes.clone()).file_name("clip.mp4");
        let r = client()
            .post(server.url("/v1/uploads"))
            .header("X-Api-Key", &key)
            .header("Idempotency-Key", idem)
            .multipart(Form::new().part("file", part))
            .send()
            .unwrap();
        json_ok(r)
    };
    let first = upload("up-1");
    assert_eq!(upload("up-1")["video_id"], first["video_id"]);
    let stored = std::fs::read_dir(server.data.join("objects/uploads")).unwrap().count();
    assert_eq!(stored, 1, "one file for two tries");

    let draft =
        json_ok(server.post_json(&key, "/v1/jobs", &json!({"video_url": first["video_url"], "auto_start": false})));
    let path = format!("/v1/jobs/{}/start", draft["id"].as_str().unwrap());
    let (s1, started, _) = post(&server, &key, &path, "start-1", &json!({"model": "light"}));
    let (s2, again, replayed) = post(&server, &key, &path, "start-1", &json!({"model": "light"}));
    assert_eq!((s1, s2, replayed), (200, 200, true));
    assert_eq!(started, again);
    // Without the header a second start is a state conflict, and changes nothing.
    expect_error(server.post_json(&key, &path, &json!({})), 409, "invalid_job_state");
    let trail = json_ok(server.get(&key, &format!("/v1/jobs/{}/events", draft["id"].as_str().unwrap())));
    let starts = trail["items"].as_array().unwrap().iter().filter(|e| e["reason"] == "started").count();
    assert_eq!(starts, 1);

    let cancel = format!("/v1/jobs/{}/cancel", draft["id"].as_str().unwrap());
    let (c1, cancelled, _) = post(&server, &key, &cancel, "cancel-1", &json!({}));
    let (c2, cancelled_again, replayed) = post(&server, &key, &cancel, "cancel-1", &json!({}));
    assert_eq!((c1, c2, replayed), (200, 200, true));
    assert_eq!(cancelled, cancelled_again);
    assert_eq!(cancelled["error_code"], "cancelled");

    let r = client()
        .post(server.url("/v1/jobs"))
        .header("X-Api-Key", &key)
        .header("Idempotency-Key", "x".repeat(300))
        .json(&json!({"video_url": "https://example.com/a.mp4"}))
        .send()
        .unwrap();
    expect_error(r, 422, "invalid_request");
}

/// A 402 is not kept: after a top-up, a retry under the same key runs.
#[test]
fn a_refusal_for_credit_is_not_replayed_after_a_top_up() {
    let server = Server::start(&[("CLEARBG_WORKERS", "0"), ("CLEARBG_INITIAL_CREDITS", "0")]);
    let admin = |path: &str, body: Value| {
        json_ok(client().post(server.url(path)).header("X-Admin-Token", ADMIN_TOKEN).json(&body).send().unwrap())
    };
    let created = admin("/v1/admin/keys", json!({"client_id": "broke"}));
    let key = created["api_key"].as_str().unwrap().to_string();
    let body = json!({"video_url": "https://example.com/a.mp4", "model": "light"});
    let (status, refused, _) = post(&server, &key, "/v1/jobs", "pay-1", &body);
    assert_eq!((status, refused["error"]["code"].as_str()), (402, Some("insufficient_credits")));
    admin("/v1/admin/keys/credits", json!({"key_fingerprint": created["key_fingerprint"], "amount": 100}));
    let (status, job, replayed) = post(&server, &key, "/v1/jobs", "pay-1", &body);
    assert_eq!((status, replayed), (200, false), "{job}");
    assert_eq!(json_ok(server.get(&key, "/v1/jobs"))["total"], 1);
}
