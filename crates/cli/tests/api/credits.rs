//! Credits, billing and usage against a real `clearbg serve`: reservations at start, charges at
//! completion, refunds on failure and cancel, 402 with nothing run, concurrent starts that never
//! overspend, the ledger that rebuilds the balance, the usage routes, and the admin and CLI ways
//! of changing a balance.

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// A key made with `clearbg keys create --initial-credits`, and its fingerprint.
fn key_with(server: &Server, client_id: &str, credits: &str) -> (String, String) {
    let out = server
        .clearbg()
        .args(["keys", "create", "--client-id", client_id, "--initial-credits", credits])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let fp = admin_key(server, client_id)["key_fingerprint"].as_str().unwrap().to_string();
    (key, fp)
}

fn admin(server: &Server, method: Method, path: &str, body: Option<Value>) -> reqwest::blocking::Response {
    let mut req = client()
        .request(method, server.url(path))
        .header("X-Admin-Token", ADMIN_TOKEN)
        .header("Content-Type", "application/json");
    if let Some(body) = body {
        req = req.body(body.to_string());
    }
    req.send().unwrap()
}

/// The admin list's item for `client_id`.
fn admin_key(server: &Server, client_id: &str) -> Value {
    let list = json_ok(admin(server, Method::GET, "/v1/admin/keys", None));
    list["items"].as_array().unwrap().iter().find(|k| k["client_id"] == client_id).cloned().expect("key listed")
}

fn balance(server: &Server, client_id: &str) -> f64 {
    admin_key(server, client_id)["credits"].as_f64().unwrap()
}

/// The key's ledger; asserts that the balance rebuilt from it equals the cached one and that no
/// row ever left the balance below zero.
fn ledger(server: &Server, fp: &str) -> Value {
    let l =
        json_ok(admin(server, Method::GET, &format!("/v1/admin/keys/ledger?key_fingerprint={fp}&limit=1000"), None));
    assert_eq!(l["credits"], l["ledger_credits"], "the ledger rebuilds the balance: {l}");
    for row in l["items"].as_array().unwrap() {
        assert!(row["balance_after"].as_f64().unwrap() >= 0.0, "never below zero: {row}");
    }
    l
}

fn job(server: &Server, key: &str, id: &str) -> Value {
    json_ok(server.get(key, &format!("/v1/jobs/{id}")))
}

fn create(server: &Server, key: &str, body: Value) -> Value {
    json_ok(server.post_json(key, "/v1/jobs", &body))
}

fn wait_status(server: &Server, key: &str, id: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let j = job(server, key, id);
        if j["status"] == status {
            return j;
        }
        assert!(std::time::Instant::now() < deadline, "job never {status}: {j}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn credits_are_reserved_at_start_charged_at_completion_and_refunded_on_failure_and_cancel() {
    let server = Server::start(&[]);
    let (key, fp) = key_with(&server, "billing", "100");
    assert_eq!(balance(&server, "billing"), 100.0);
    let dir = tempfile::tempdir().unwrap();
    // 1.5 s of `light`: ceil → 2 s × 45/60 = 1.5 credits.
    let clip = server.upload(&key, &person_clip(dir.path(), 1.5));

    // A draft holds nothing; its start reserves the cost; completion charges the real amount.
    let draft = create(&server, &key, json!({"video_url": clip["video_url"], "model": "light", "auto_start": false}));
    let id = draft["id"].as_str().unwrap().to_string();
    assert_eq!(draft["billing_status"], Value::Null);
    assert_eq!(draft["credits_reserved"], 0);
    let r = server.post_json(&key, &format!("/v1/jobs/{id}/start"), &json!({}));
    let start_request = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let started = json_ok(r);
    assert_eq!(started["billing_status"], "reserved", "{started}");
    assert_eq!(started["credits_reserved"], 1.5);
    assert_eq!(balance(&server, "billing"), 98.5);
    let (done, _) = server.wait(&key, &id, Duration::from_secs(120));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["billing_status"], "charged");
    assert_eq!(done["credits_used"], 1.5);
    assert_eq!(balance(&server, "billing"), 98.5);

    // A failure after the reservation refunds it: the background "image" is a video.
    let failing = create(
        &server,
        &key,
        json!({"video_url": clip["video_url"], "model": "light", "bg_type": "image", "bg_image_url": clip["video_url"]}),
    );
    assert_eq!(failing["billing_status"], "reserved");
    let (failed, _) = server.wait(&key, failing["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["billing_status"], "refunded");
    assert_eq!(failed["credits_used"], 0);
    assert_eq!(balance(&server, "billing"), 98.5);

    // Cancels refund: a queued job at once, a running one when its worker stops.
    let long = server.upload(&key, &long_clip(dir.path()));
    let running = create(&server, &key, json!({"video_url": long["video_url"], "model": "light"}));
    let running_id = running["id"].as_str().unwrap().to_string();
    // 40 s of light: 30 credits, or 30.75 if the clip runs a hair past 40 s.
    let long_cost = running["credits_reserved"].as_f64().unwrap();
    assert!(long_cost == 30.0 || long_cost == 30.75, "{running}");
    server.wait_processing(&key, &running_id);
    let queued = create(&server, &key, json!({"video_url": clip["video_url"], "model": "light"}));
    let queued_id = queued["id"].as_str().unwrap().to_string();
    assert_eq!(balance(&server, "billing"), 98.5 - long_cost - 1.5);
    let cancelled = json_ok(server.post_json(&key, &format!("/v1/jobs/{queued_id}/cancel"), &json!({})));
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["billing_status"].as_str()),
        (Some("failed"), Some("refunded"))
    );
    assert_eq!(balance(&server, "billing"), 98.5 - long_cost);
    json_ok(server.post_json(&key, &format!("/v1/jobs/{running_id}/cancel"), &json!({})));
    let stopped = wait_status(&server, &key, &running_id, "failed");
    assert_eq!(
        (stopped["error_code"].as_str(), stopped["billing_status"].as_str()),
        (Some("cancelled"), Some("refunded"))
    );
    assert_eq!(balance(&server, "billing"), 98.5);

    // Too little credit: 402 at start, nothing runs, nothing is held.
    json_ok(admin(
        &server,
        Method::POST,
        "/v1/admin/keys/credits",
        Some(json!({"key_fingerprint": fp, "amount": -98})),
    ));
    assert_eq!(balance(&server, "billing"), 0.5);
    let poor = create(&server, &key, json!({"video_url": clip["video_url"], "model": "light", "auto_start": false}));
    let poor_id = poor["id"].as_str().unwrap().to_string();
    let refused = expect_error(
        server.post_json(&key, &format!("/v1/jobs/{poor_id}/start"), &json!({})),
        402,
        "insufficient_credits",
    );
    assert!(refused["error"]["message"].as_str().unwrap().contains("1.5"), "{refused}");
    let still = job(&server, &key, &poor_id);
    assert_eq!((still["status"].as_str(), &still["billing_status"]), (Some("created"), &Value::Null));
    let before = json_ok(server.get(&key, "/v1/jobs?limit=1"))["total"].as_i64().unwrap();
    expect_error(
        server.post_json(&key, "/v1/jobs", &json!({"video_url": clip["video_url"], "model": "light"})),
        402,
        "insufficient_credits",
    );
    assert_eq!(json_ok(server.get(&key, "/v1/jobs?limit=1"))["total"].as_i64().unwrap(), before, "no job was made");
    // A shorter preview costs less and fits: 0.5 s → 1 s → 0.75 credits, too much still.
    expect_error(
        server.post_json(&key, &format!("/v1/jobs/{poor_id}/start"), &json!({"preview_duration": 0.5})),
        402,
        "insufficient_credits",
    );
    assert_eq!(balance(&server, "billing"), 0.5);

    // The ledger explains every change and rebuilds the balance.
    let l = ledger(&server, &fp);
    let kinds: Vec<&str> = l["items"].as_array().unwrap().iter().rev().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "grant", "reserve", "release", "charge", "reserve", "refund", "reserve", "reserve", "refund", "refund",
            "adjust"
        ]
    );

    // Usage: the events of the first job, each with its job and the request that caused it.
    let events = json_ok(server.get(&key, "/v1/usage/events?limit=100"));
    let of_first: Vec<&Value> =
        events["items"].as_array().unwrap().iter().filter(|e| e["job_id"] == id.as_str()).rev().collect();
    let types: Vec<&str> = of_first.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["created", "started", "reserved", "completed", "charged"]);
    assert_eq!(of_first[1]["request_id"], start_request.as_str());
    assert_eq!(of_first[4]["credits"], 1.5);
    let all_types: Vec<&str> =
        events["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    for t in ["failed", "cancelled", "refunded"] {
        assert!(all_types.contains(&t), "{t} in {all_types:?}");
    }
    let limited = json_ok(server.get(&key, "/v1/usage/events?limit=3"));
    assert_eq!(limited["items"].as_array().unwrap().len(), 3);

    let summary = json_ok(server.get(&key, "/v1/usage/summary?days=7"));
    assert_eq!(summary["days"], 7);
    assert_eq!(summary["total_jobs"], 5, "{summary}");
    assert_eq!(summary["completed_jobs"], 1);
    assert_eq!(summary["failed_jobs"], 3, "a failure and two cancels: {summary}");
    assert_eq!(summary["credits_used"], 1.5);
    let daily = summary["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 7, "one row per day, idle days included");
    let today = chrono_today();
    assert_eq!(daily[6]["date"], today.as_str());
    assert_eq!((daily[6]["jobs"].as_i64(), daily[6]["completed"].as_i64()), (Some(5), Some(1)));
    assert_eq!(daily[6]["credits_used"], 1.5);
    assert!(daily[..6].iter().all(|d| d["jobs"] == 0 && d["credits_used"] == 0), "{summary}");
    let one = json_ok(server.get(&key, "/v1/usage/summary?days=1"));
    assert_eq!(one["daily"].as_array().unwrap().len(), 1);
    assert_eq!(json_ok(server.get(&key, "/v1/usage/summary"))["days"], 7, "SDK default");

    for bad in ["days=0", "days=91", "days=abc", "days=-1"] {
        let e = expect_error(server.get(&key, &format!("/v1/usage/summary?{bad}")), 422, "invalid_request");
        assert_eq!(e["error"]["details"][0]["field"], "days");
    }
    for bad in ["limit=0", "limit=101", "limit=x"] {
        let e = expect_error(server.get(&key, &format!("/v1/usage/events?{bad}")), 422, "invalid_request");
        assert_eq!(e["error"]["details"][0]["field"], "limit");
    }
    expect_error(client().get(server.url("/v1/usage/summary")).send().unwrap(), 401, "missing_api_key");

    // Another key sees none of it.
    let (other, _) = key_with(&server, "other", "1");
    let theirs = json_ok(server.get(&other, "/v1/usage/summary?days=1"));
    assert_eq!((theirs["total_jobs"].as_i64(), &theirs["credits_used"]), (Some(0), &json!(0)));
    assert!(json_ok(server.get(&other, "/v1/usage/events"))["items"].as_array().unwrap().is_empty());
}

fn chrono_today() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%d"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// 100 simultaneous starts against a balance that covers 10: exactly 10 start, 90 get 402, the
/// balance ends at zero and the ledger agrees.
#[test]
fn concurrent_starts_never_spend_a_credit_twice() {
    // Rate limits are not what this test is about: 100 starts at once must all reach the ledger.
    let server = Server::start(&[
        ("CLEARBG_WORKERS", "0"),
        ("CLEARBG_RATE_LIMIT", "100000/min"),
        ("CLEARBG_START_RATE_LIMIT", "100000/min"),
    ]);
    // 0.9 s of light, billed as 1 s = 0.75 credits; 7.5 credits cover exactly 10 starts.
    let (key, fp) = key_with(&server, "racer", "7.5");
    let dir = tempfile::tempdir().unwrap();
    let clip = server.upload(&key, &person_clip(dir.path(), 0.9));
    let ids: Vec<String> = (0..100)
        .map(|_| {
            let d =
                create(&server, &key, json!({"video_url": clip["video_url"], "model": "light", "auto_start": false}));
            d["id"].as_str().unwrap().to_string()
        })
        .collect();

    let barrier = Arc::new(Barrier::new(ids.len()));
    let threads: Vec<_> = ids
        .iter()
        .map(|id| {
            let (url, key, barrier) = (server.url(&format!("/v1/jobs/{id}/start")), key.clone(), barrier.clone());
            std::thread::spawn(move || {
                let c = client();
                barrier.wait();
                let r = c
                    .post(url)
                    .header("X-Api-Key", key)
                    .header("Content-Type", "application/json")
                    .body("{}")
                    .send()
                    .unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().unwrap();
                (status, body)
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused = results.iter().filter(|(s, b)| *s == 402 && b["error"]["code"] == "insufficient_credits").count();
    assert_eq!((ok, refused), (10, 90), "{:?}", results.iter().map(|(s, _)| s).collect::<Vec<_>>());

    assert_eq!(balance(&server, "racer"), 0.0);
    let l = ledger(&server, &fp);
    assert_eq!(l["ledger_credits"], 0);
    let reserves = l["items"].as_array().unwrap().iter().filter(|r| r["kind"] == "reserve").count();
    assert_eq!(reserves, 10);
    let pending = json_ok(server.get(&key, "/v1/jobs?status=pending&limit=1"));
    let created = json_ok(server.get(&key, "/v1/jobs?status=created&limit=1"));
    assert_eq!((pending["total"].as_i64(), created["total"].as_i64()), (Some(10), Some(90)));
}

#[test]
fn admins_change_balances_and_prices_are_configurable() {
    let server = Server::start(&[
        ("CLEARBG_WORKERS", "0"),
        ("CLEARBG_PRICES", "light=30,pro=200.5"),
        ("CLEARBG_INITIAL_CREDITS", "250"),
    ]);
    let pricing = json_ok(client().get(server.url("/api/pricing")).send().unwrap());
    assert_eq!(
        pricing["model_pricing_credits_per_minute"],
        json!({"original": 60, "light": 30, "pro": 200.5, "human": 45, "video": 45})
    );
    let config = json_ok(admin(&server, Method::GET, "/v1/admin/config", None));
    assert_eq!(config["initial_credits"], 250);
    assert_eq!(config["prices_credits_per_minute"], "original=60,light=30,pro=200.5,human=45,video=45");
    assert!(!config.to_string().contains(ADMIN_TOKEN), "no secrets in the config");

    // A key made by the admin route gets the server's grant; the key itself is shown once.
    let made = json_ok(admin(&server, Method::POST, "/v1/admin/keys", Some(json!({"client_id": "acme", "note": "n"}))));
    let (key, fp) =
        (made["api_key"].as_str().unwrap().to_string(), made["key_fingerprint"].as_str().unwrap().to_string());
    assert_eq!(made["credits"], 250);
    let item = admin_key(&server, "acme");
    for field in ["client_id", "note", "key_fingerprint", "status", "credits", "created_at", "last_used_at"] {
        assert!(item.get(field).is_some(), "{field} in {item}");
    }
    assert!(item.get("api_key").is_none());

    // The configured price is what a start reserves: 1.5 s → 2 s × 30/60 = 1 credit.
    let dir = tempfile::tempdir().unwrap();
    let clip = server.upload(&key, &person_clip(dir.path(), 1.5));
    let started = create(&server, &key, json!({"video_url": clip["video_url"], "model": "light"}));
    assert_eq!((started["billing_status"].as_str(), &started["credits_reserved"]), (Some("reserved"), &json!(1)));
    assert_eq!(balance(&server, "acme"), 249.0);

    let credits = |body: Value| admin(&server, Method::POST, "/v1/admin/keys/credits", Some(body));
    let added = json_ok(credits(json!({"key_fingerprint": fp, "amount": 5.25, "note": "bonus"})));
    assert_eq!((&added["credits"], &added["change"]), (&json!(254.25), &json!(5.25)));
    expect_error(credits(json!({"key_fingerprint": "kfp_nope", "amount": 1})), 404, "not_found");
    for bad in [json!(0), json!("ten"), json!(0.0001), Value::Null] {
        let e = expect_error(credits(json!({"key_fingerprint": fp, "amount": bad})), 422, "invalid_request");
        assert_eq!(e["error"]["details"][0]["field"], "amount", "{e}");
    }
    let e = expect_error(credits(json!({"key_fingerprint": fp, "amount": -1000})), 422, "invalid_request");
    assert!(e["error"]["message"].as_str().unwrap().contains("below zero"), "{e}");
    expect_error(credits(json!({"amount": 1})), 422, "invalid_request");
    let r = client().post(server.url("/v1/admin/keys/credits")).body("{}").send().unwrap();
    expect_error(r, 401, "missing_admin_token");
    assert_eq!(balance(&server, "acme"), 254.25);

    // The CLI does the same on the database.
    let cli =
        |args: &[&str]| server.clearbg().args(["keys", "credits", "--key-fingerprint"]).args(args).output().unwrap();
    let out = cli(&[&fp, "--add", "-4.25", "--note", "correction"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "250");
    let out = cli(&[&fp, "--set", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    let out = cli(&[&fp, "--add", "-5"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("below zero"));
    let out = cli(&["kfp_nope", "--add", "1"]);
    assert!(!out.status.success());
    assert_eq!(balance(&server, "acme"), 3.0);
    let list = server.clearbg().args(["keys", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains(&format!("{fp}\tactive\tacme\t3\tn")));

    let l = ledger(&server, &fp);
    let notes: Vec<&str> = l["items"].as_array().unwrap().iter().filter_map(|r| r["note"].as_str()).collect();
    assert!(notes.contains(&"bonus") && notes.contains(&"correction"), "{notes:?}");
}

/// A `video_url` elsewhere is reserved by the worker once downloaded and probed; a balance too
/// small for it fails the job with `insufficient_credits` and charges nothing.
#[test]
fn url_inputs_are_reserved_after_download() {
    let dir = tempfile::tempdir().unwrap();
    let clip = person_clip(dir.path(), 1.5);
    let base = serve_routes(vec![("/clip.mp4", std::fs::read(clip).unwrap())]);
    let server = Server::start(&[("CLEARBG_ALLOW_PRIVATE_URLS", "1")]);
    let (key, fp) = key_with(&server, "urls", "2");
    let url = format!("{base}/clip.mp4");

    let first = create(&server, &key, json!({"video_url": url, "model": "light"}));
    assert_eq!(first["billing_status"], "pending", "{first}");
    let (done, _) = server.wait(&key, first["id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!((done["status"].as_str(), done["billing_status"].as_str()), (Some("completed"), Some("charged")));
    assert_eq!((&done["credits_reserved"], &done["credits_used"]), (&json!(1.5), &json!(1.5)));
    assert_eq!(balance(&server, "urls"), 0.5);

    let second = create(&server, &key, json!({"video_url": url, "model": "light"}));
    let (failed, _) = server.wait(&key, second["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(
        (failed["status"].as_str(), failed["error_code"].as_str()),
        (Some("failed"), Some("insufficient_credits"))
    );
    assert_eq!(failed["billing_status"], "refunded");
    assert_eq!(balance(&server, "urls"), 0.5);
    ledger(&server, &fp);

    // An empty balance is refused at start, even when the length is not known yet.
    json_ok(admin(
        &server,
        Method::POST,
        "/v1/admin/keys/credits",
        Some(json!({"key_fingerprint": fp, "amount": -0.5})),
    ));
    expect_error(server.post_json(&key, "/v1/jobs", &json!({"video_url": url})), 402, "insufficient_credits");
}
