//! Per-key rate limits: a burst runs into 429 with `Retry-After`, a client that waits that long
//! gets through, and job starts are counted on their own.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

fn header(r: &reqwest::blocking::Response, name: &str) -> u64 {
    r.headers().get(name).unwrap_or_else(|| panic!("{name} missing")).to_str().unwrap().parse().unwrap()
}

#[test]
fn a_burst_is_limited_and_a_client_that_backs_off_succeeds() {
    let server = Server::start(&[("CLEARBG_RATE_LIMIT", "5/s"), ("CLEARBG_WORKERS", "0")]);
    let key = server.key("a");
    let other = server.key("b");
    let remaining: Vec<u64> = (0..5)
        .map(|_| {
            let r = server.get(&key, "/v1/jobs");
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(header(&r, "x-ratelimit-limit"), 5);
            header(&r, "x-ratelimit-remaining")
        })
        .collect();
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    let refused = server.get(&key, "/v1/jobs");
    let retry_after = header(&refused, "retry-after");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert!(header(&refused, "x-ratelimit-reset") >= 1);
    expect_error(refused, 429, "rate_limited");
    assert_eq!(server.get(&other, "/v1/jobs").status().as_u16(), 200, "another key has its own budget");

    // A client that honours Retry-After gets through.
    std::thread::sleep(Duration::from_secs(retry_after));
    let r = server.get(&key, "/v1/jobs");
    assert_eq!(r.status().as_u16(), 200);

    // Admin routes count against the admin token's own budget; public routes are not limited.
    let r = client().get(server.url("/v1/admin/keys")).header("X-Admin-Token", ADMIN_TOKEN).send().unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "x-ratelimit-remaining")), (200, 4));
    let r = client().get(server.url("/health")).send().unwrap();
    assert!(r.headers().get("x-ratelimit-limit").is_none());
}

#[test]
fn job_starts_have_their_own_limit() {
    let server = Server::start(&[("CLEARBG_START_RATE_LIMIT", "2/min"), ("CLEARBG_WORKERS", "0")]);
    let key = server.key("a");
    let create = |auto_start: bool| {
        server.post_json(&key, "/v1/jobs", &json!({"video_url": "https://example.com/a.mp4", "auto_start": auto_start}))
    };
    for _ in 0..2 {
        json_ok(create(true));
    }
    let refused = create(true);
    assert!(header(&refused, "retry-after") >= 20);
    let body = expect_error(refused, 429, "rate_limited");
    assert!(body["error"]["message"].as_str().unwrap().contains("job starts"));
    // Drafts are not starts; starting one is.
    let draft = json_ok(create(false));
    let id = draft["id"].as_str().unwrap();
    expect_error(server.post_json(&key, &format!("/v1/jobs/{id}/start"), &json!({})), 429, "rate_limited");
    assert_eq!(
        json_ok(server.get(&key, &format!("/v1/jobs/{id}")))["status"],
        "created",
        "a refused start changes nothing"
    );
    assert_eq!(json_ok(server.get(&key, "/v1/jobs"))["total"], 3, "the refused create made no job");
}
