//! Webhooks over real HTTP: a receiver on loopback checks every signature, fails deliveries on
//! demand, and records what arrived; the server retries with the same delivery id, shows each
//! event's state in `webhook_events`, and keeps pending deliveries across a restart.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "test-webhook-secret";

/// One request the receiver got, and what it answered.
#[derive(Clone, Debug)]
struct Received {
    event: String,
    delivery_id: String,
    timestamp: String,
    signature_ok: bool,
    body: Value,
    answered: u16,
}

/// A webhook receiver on loopback: answers 500 to the first `fail_first` requests, 503 to every
/// request while `refusing`, else 200; records each request.
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    refusing: Arc<AtomicBool>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let refusing = Arc::new(AtomicBool::new(false));
        let failures_left = Arc::new(AtomicUsize::new(fail_first));
        let (log, refuse) = (received.clone(), refusing.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, refuse, failures_left) = (log.clone(), refuse.clone(), failures_left.clone());
                std::thread::spawn(move || {
                    let Some((headers, body)) = read_request(&stream) else { return };
                    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
                    let timestamp = header("x-webhook-timestamp").unwrap_or_default();
                    let expected = sign(&timestamp, &body);
                    let answered = if refuse.load(Ordering::SeqCst) {
                        503
                    } else if failures_left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        500
                    } else {
                        200
                    };
                    log.lock().unwrap().push(Received {
                        event: header("x-webhook-event").unwrap_or_default(),
                        delivery_id: header("x-webhook-delivery-id").unwrap_or_default(),
                        signature_ok: header("x-webhook-signature").as_deref() == Some(expected.as_str()),
                        timestamp,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        answered,
                    });
                    let mut stream = stream;
                    let _ = write!(stream, "HTTP/1.1 {answered} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                });
            }
        });
        Receiver { port, received, refusing }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The accepted delivery of `event` for `job_id`.
    fn accepted(&self, job_id: &str, event: &str) -> Received {
        let found: Vec<Received> = self
            .received()
            .into_iter()
            .filter(|r| r.answered == 200 && r.event == event && r.body["data"]["id"] == job_id)
            .collect();
        assert_eq!(found.len(), 1, "exactly one accepted {event} for {job_id}: {:#?}", self.received());
        found.into_iter().next().unwrap()
    }
}

/// Header names (lower case) with their values.
type Headers = Vec<(String, String)>;

/// The headers and the body of one HTTP/1.1 request.
fn read_request(stream: &std::net::TcpStream) -> Option<(Headers, Vec<u8>)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 || header == "\r\n" {
            break;
        }
        let (k, v) = header.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let length: usize = headers.iter().find(|(k, _)| k == "content-length")?.1.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((headers, body))
}

/// What the official SDKs verify: "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body)).
fn sign(timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn webhook_server(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("CLEARBG_ALLOW_PRIVATE_URLS", "1"),
        ("CLEARBG_WEBHOOK_SECRET", SECRET),
        ("CLEARBG_WEBHOOK_RETRY_BASE", "200ms"),
    ];
    env.extend_from_slice(extra);
    Server::spawn(&env)
}

/// Polls the job until its `webhook_events` equal `expected`.
fn wait_events(server: &Server, key: &str, id: &str, expected: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = json_ok(server.get(key, &format!("/v1/jobs/{id}")));
        if job["webhook_events"] == expected {
            return job;
        }
        assert!(Instant::now() < deadline, "webhook_events never became {expected}: {job}\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every request carried a valid signature and consistent headers.
fn assert_well_formed(received: &[Received]) {
    assert!(!received.is_empty());
    for r in received {
        assert!(r.signature_ok, "bad signature: {r:?}");
        assert_eq!(r.body["event"], r.event.as_str(), "{r:?}");
        assert_eq!(r.body["delivery_id"], r.delivery_id.as_str(), "{r:?}");
        assert!(r.delivery_id.starts_with("whd_"), "{r:?}");
        assert!(r.timestamp.ends_with('Z') && r.timestamp.contains('T'), "RFC 3339 UTC: {r:?}");
        assert!(r.body["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{r:?}");
    }
}

fn create(server: &Server, key: &str, body: Value) -> String {
    json_ok(server.post_json(key, "/v1/jobs", &body))["id"].as_str().unwrap().to_string()
}

/// An upload a job can be made of that fails in the worker (a video cut in half).
fn not_a_video(server: &Server, key: &str, dir: &std::path::Path) -> Value {
    server.upload(key, &truncated_clip(dir))
}

#[test]
fn events_are_signed_retried_with_the_same_id_and_shown() {
    let receiver = Receiver::start(2);
    let server = webhook_server(&[]);
    let key = server.key("a");
    let dir = tempfile::tempdir().unwrap();
    let upload = server.upload(&key, &person_clip(dir.path(), 0.5));
    let id = create(
        &server,
        &key,
        json!({"video_url": upload["video_url"], "model": "light", "webhook_url": receiver.url()}),
    );

    let (job, _) = server.wait(&key, &id, Duration::from_secs(120));
    assert_eq!(job["status"], "completed", "{job}");
    let job = wait_events(&server, &key, &id, json!({"job.started": "sent", "job.completed": "sent"}));
    assert_eq!(job["webhook_url"], receiver.url());

    let received = receiver.received();
    assert_well_formed(&received);
    // Two failures, each retried with the same delivery id until accepted; one id per event.
    assert_eq!(received.iter().filter(|r| r.answered == 500).count(), 2, "{received:#?}");
    assert_eq!(received.len(), 4, "two failed attempts and two accepted ones: {received:#?}");
    for failed in received.iter().filter(|r| r.answered == 500) {
        assert!(
            received.iter().any(|r| r.answered == 200 && r.delivery_id == failed.delivery_id),
            "{} was never retried with the same id: {received:#?}",
            failed.delivery_id
        );
    }

    let started = receiver.accepted(&id, "job.started");
    assert_eq!(started.body["data"]["status"], "processing", "{:?}", started.body);
    assert!(started.body["data"]["output_url"].is_null());
    let completed = receiver.accepted(&id, "job.completed");
    assert_ne!(started.delivery_id, completed.delivery_id);
    let data = &completed.body["data"];
    assert_eq!((data["id"].as_str(), data["status"].as_str()), (Some(id.as_str()), Some("completed")));
    assert_eq!(data["output_sha256"], job["output_sha256"]);
    // The output_url in the body works: the receiver can fetch the result with it.
    let out = dir.path().join("out.webm");
    download(data["output_url"].as_str().expect("output_url in job.completed"), &out);
    assert_eq!(sha256_of(&out), job["output_sha256"].as_str().unwrap());
}

#[test]
fn failed_and_cancelled_jobs_are_announced() {
    let receiver = Receiver::start(0);
    let server = webhook_server(&[]);
    let key = server.key("a");
    let dir = tempfile::tempdir().unwrap();
    let upload = not_a_video(&server, &key, dir.path());
    let failed = create(&server, &key, json!({"video_url": upload["video_url"], "webhook_url": receiver.url()}));
    let draft = create(
        &server,
        &key,
        json!({"video_url": upload["video_url"], "webhook_url": receiver.url(), "auto_start": false}),
    );
    json_ok(server.post_json(&key, &format!("/v1/jobs/{draft}/cancel"), &json!({})));

    let job = wait_events(&server, &key, &failed, json!({"job.started": "sent", "job.failed": "sent"}));
    assert_eq!(job["status"], "failed");
    wait_events(&server, &key, &draft, json!({"job.cancelled": "sent"}));

    assert_well_formed(&receiver.received());
    let data = receiver.accepted(&failed, "job.failed").body["data"].clone();
    assert_eq!(data["status"], "failed");
    assert!(data["error"].as_str().is_some_and(|e| !e.is_empty()), "{data}");
    assert_eq!(data["error_code"], job["error_code"]);
    assert_ne!(data["error_code"], "cancelled");
    let data = receiver.accepted(&draft, "job.cancelled").body["data"].clone();
    assert_eq!((data["status"].as_str(), data["error_code"].as_str()), (Some("failed"), Some("cancelled")));
    assert_eq!(receiver.received().len(), 3, "nothing else was sent: {:#?}", receiver.received());
}

#[test]
fn pending_deliveries_survive_a_restart() {
    let receiver = Receiver::start(0);
    receiver.refusing.store(true, Ordering::SeqCst);
    let server = webhook_server(&[("CLEARBG_WEBHOOK_RETRY_BASE", "1s")]);
    let key = server.key("a");
    let dir = tempfile::tempdir().unwrap();
    let upload = not_a_video(&server, &key, dir.path());
    let id = create(&server, &key, json!({"video_url": upload["video_url"], "webhook_url": receiver.url()}));

    // Both events were attempted and refused, and are still pending when the server stops.
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver
        .received()
        .iter()
        .filter(|r| r.answered == 503)
        .map(|r| &r.event)
        .collect::<std::collections::HashSet<_>>()
        .len()
        < 2
    {
        assert!(Instant::now() < deadline, "no refused attempts: {:#?}\n{}", receiver.received(), server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let job = json_ok(server.get(&key, &format!("/v1/jobs/{id}")));
    assert_eq!(job["webhook_events"], json!({"job.started": "pending", "job.failed": "pending"}), "{job}");
    let mut server = server;
    server.stop();
    let refused = receiver.received();
    assert!(refused.iter().all(|r| r.answered == 503));

    receiver.refusing.store(false, Ordering::SeqCst);
    let server = server.restart(&[]);
    wait_events(&server, &key, &id, json!({"job.started": "sent", "job.failed": "sent"}));
    let received = receiver.received();
    assert_well_formed(&received);
    for event in ["job.started", "job.failed"] {
        let accepted = receiver.accepted(&id, event);
        assert!(
            refused.iter().any(|r| r.event == event && r.delivery_id == accepted.delivery_id),
            "the restarted server sent {event} with the id it had before: {received:#?}"
        );
    }
}

#[test]
fn a_private_webhook_url_is_refused_at_creation() {
    let server = Server::spawn(&[]);
    let key = server.key("a");
    for hook in ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://[::1]/hook", "http://169.254.169.254/"] {
        let body = expect_error(
            server.post_json(&key, "/v1/jobs", &json!({"video_url": "https://example.com/a.mp4", "webhook_url": hook})),
            422,
            "invalid_request",
        );
        assert_eq!(body["error"]["details"][0]["field"], "webhook_url", "{body}");
    }
    let draft = create(&server, &key, json!({"video_url": "https://example.com/a.mp4", "auto_start": false}));
    let body = expect_error(
        server.post_json(&key, &format!("/v1/jobs/{draft}/start"), &json!({"webhook_url": "http://10.0.0.1/hook"})),
        422,
        "invalid_request",
    );
    assert_eq!(body["error"]["details"][0]["field"], "webhook_url", "{body}");
}

/// A name that resolves to a private address is refused when the delivery resolves it (the
/// address rules of video_url), and never reached.
#[test]
fn a_name_resolving_to_a_private_address_is_refused_at_delivery() {
    let receiver = Receiver::start(0);
    let host =
        String::from_utf8(std::process::Command::new("hostname").output().unwrap().stdout).unwrap().trim().to_string();
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), receiver.port))
        .map(|a| a.collect())
        .unwrap_or_default();
    if addrs.is_empty()
        || !addrs.iter().all(|a| a.ip().is_loopback() || matches!(a.ip(), std::net::IpAddr::V4(v4) if v4.is_private()))
    {
        eprintln!("skipped: host name {host:?} does not resolve to private addresses only ({addrs:?})");
        return;
    }
    let server = Server::spawn(&[
        ("CLEARBG_WEBHOOK_SECRET", SECRET),
        ("CLEARBG_WEBHOOK_RETRY_BASE", "200ms"),
        ("CLEARBG_WEBHOOK_MAX_ATTEMPTS", "2"),
    ]);
    let key = server.key("a");
    let dir = tempfile::tempdir().unwrap();
    let upload = not_a_video(&server, &key, dir.path());
    let hook = format!("http://{host}:{}/hook", receiver.port);
    let id = create(&server, &key, json!({"video_url": upload["video_url"], "webhook_url": hook}));
    wait_events(&server, &key, &id, json!({"job.started": "failed", "job.failed": "failed"}));
    assert!(receiver.received().is_empty(), "{:#?}", receiver.received());
    assert!(server.log_text().contains("CLEARBG_ALLOW_PRIVATE_URLS"), "{}", server.log_text());
}
