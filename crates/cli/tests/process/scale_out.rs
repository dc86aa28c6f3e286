//! Scale-out for real: API and worker processes that share only a PostgreSQL database and an S3
//! server (Garage), as on separate hosts. Every accepted job completes exactly once while a
//! worker is killed mid-job and the API process is restarted mid-flight.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::common::scaleout::{Garage, PgDatabase, WorkerProcess};
use crate::common::*;
use serde_json::{json, Value};

const JOBS: usize = 30;

/// One attempt of a job, from its audit trail: who ran it and how it ended.
#[derive(Debug)]
struct Attempt {
    worker: String,
    ended: String,
}

/// A job's attempts, numbered as the store numbers them, built from `/v1/jobs/{id}/events`.
fn attempt_log(events: &[Value]) -> BTreeMap<i64, Attempt> {
    let mut attempts = BTreeMap::new();
    for e in events {
        let n = e["attempt"].as_i64().unwrap();
        match (e["from"].as_str(), e["to"].as_str().unwrap()) {
            (Some("pending"), "processing") => {
                let worker = e["worker"].as_str().unwrap().to_string();
                let old = attempts.insert(n, Attempt { worker, ended: "running".into() });
                assert!(old.is_none(), "attempt {n} claimed twice: {events:?}");
            }
            (Some("processing"), to @ ("completed" | "failed" | "pending")) => {
                let attempt = attempts.get_mut(&n).unwrap_or_else(|| panic!("attempt {n} ended unclaimed: {events:?}"));
                assert_eq!(attempt.ended, "running", "attempt {n} ended twice: {events:?}");
                attempt.ended = match to {
                    "pending" => format!("lost ({})", e["reason"].as_str().unwrap()),
                    other => other.to_string(),
                };
            }
            _ => {}
        }
    }
    attempts
}

#[test]
fn one_api_and_three_workers_on_postgres_and_s3_complete_every_job_exactly_once() {
    let db = PgDatabase::create();
    let s3 = Garage::start();
    let mut env: Vec<(String, String)> = s3.env();
    env.push(("CLEARBG_DATABASE_URL".into(), db.url.clone()));
    // A short lease, so the killed worker's job is taken up again within seconds. Not shorter:
    // three workers share 2 cores with PostgreSQL, S3 and the other tests, and a CI machine with
    // a cold cache optimises each model's graph on its first job; at 5 s a worker that was not
    // killed once missed its renewals for that long and lost a job it was still running.
    env.push(("CLEARBG_LEASE".into(), "15s".into()));
    // The test polls every job many times a second while the workers (slow on a loaded machine)
    // take them up: the per-key request limit is not what it is about.
    env.push(("CLEARBG_RATE_LIMIT".into(), "100000/min".into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let api = Server::spawn_with(&["--no-workers"], &env_refs);
    let key = api.key("scale");
    let dir = tempfile::tempdir().unwrap();
    // Each worker serves its own /health and /metrics, as a worker host would for monitoring.
    let ops: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|n| {
            let mut env = env.clone();
            env.push(("CLEARBG_METRICS_LISTEN".into(), ops[n].clone()));
            WorkerProcess::start(dir.path(), &format!("worker{n}"), &env)
        })
        .collect();

    // Workers wake on NOTIFY: each connects its listener soon after it is ready.
    for w in &workers {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !w.log_text().contains("listening for queued jobs") {
            assert!(Instant::now() < deadline, "workers wake on NOTIFY:\n{}", w.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // The upload goes to S3 as a multipart upload; its link is presigned by S3 and still names
    // our upload, so jobs read it from the bucket rather than fetching a URL.
    let upload = api.upload(&key, &person_clip(dir.path(), 3.0));
    let video_url = upload["video_url"].as_str().unwrap().to_string();
    assert!(video_url.starts_with(&s3.endpoint) && video_url.contains("X-Amz-Signature="), "{video_url}");
    let mut ids = Vec::new();
    let submit = |api: &Server, ids: &mut Vec<String>, n: usize| {
        for _ in 0..n {
            let job = json_ok(api.post_json(&key, "/v1/jobs", &json!({"video_url": video_url, "model": "light"})));
            ids.push(job["id"].as_str().unwrap().to_string());
        }
    };
    submit(&api, &mut ids, JOBS / 2);

    // Kill -9 the worker process that is in the middle of a job. A light job on this small clip
    // takes a second or two and progress is stored twice a second, so a job seen running may
    // finish before the kill lands: the worker is frozen first (SIGSTOP), and killed only if its
    // job is still unfinished then; otherwise it is let go on and another job is looked for.
    let (victim, victim_job) = {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "no job was caught running:\n{}", api.log_text());
            let running = ids.iter().find(|id| {
                let job = json_ok(api.get(&key, &format!("/v1/jobs/{id}")));
                let progress = job["progress"].as_f64().unwrap();
                job["status"] == "processing" && progress > 0.0 && progress < 50.0
            });
            let Some(id) = running else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let Some(n) = workers.iter().position(|w| w.log_text().contains(id.as_str())) else { continue };
            workers[n].signal("STOP");
            if json_ok(api.get(&key, &format!("/v1/jobs/{id}")))["status"] == "processing" {
                break (n, id.clone());
            }
            eprintln!("{id} finished before worker{n} was frozen: letting it go on");
            workers[n].signal("CONT");
        }
    };
    workers[victim].kill9();
    eprintln!("killed worker{victim} (kill -9) while it ran {victim_job}");

    // Restart the API process mid-flight (kill -9, then a new process on the same port), and
    // keep submitting through the new one.
    let mut api = api;
    api.kill9();
    let api = api.restart(&[]);
    submit(&api, &mut ids, JOBS - JOBS / 2);

    let deadline = Instant::now() + Duration::from_secs(600);
    let jobs: HashMap<String, Value> = ids
        .iter()
        .map(|id| {
            let left = deadline.saturating_duration_since(Instant::now());
            let (job, _) = api.wait(&key, id, left);
            (id.clone(), job)
        })
        .collect();

    // The per-job attempt log: every job completed, exactly once, by one attempt of one worker;
    // the killed worker's job was lost once and completed elsewhere.
    let killed = {
        let text = workers[victim].log_text();
        let at = text.find("worker ready worker=").expect("worker ids are logged") + "worker ready worker=".len();
        text[at..].split_whitespace().next().unwrap().to_string()
    };
    let mut completed_by_killed = 0;
    for id in &ids {
        let job = &jobs[id];
        assert_eq!(job["status"], "completed", "{job}");
        let events = json_ok(api.get(&key, &format!("/v1/jobs/{id}/events")))["items"].as_array().unwrap().clone();
        let attempts = attempt_log(&events);
        eprintln!("{id}: {attempts:?}");
        let completed: Vec<_> = attempts.values().filter(|a| a.ended == "completed").collect();
        assert_eq!(completed.len(), 1, "{id} completed once: {attempts:?}");
        completed_by_killed += completed.iter().filter(|a| a.worker == killed).count();
        assert_eq!(attempts.len() as i64, job["attempts"].as_i64().unwrap(), "{id}: {attempts:?}");
        assert!(attempts.values().all(|a| a.ended == "completed" || a.ended.starts_with("lost")), "{attempts:?}");
        if *id == victim_job {
            assert_eq!(attempts.len(), 2, "the killed worker's job ran twice: {attempts:?}");
            assert_eq!(attempts[&1].worker, killed, "{attempts:?}");
            assert!(attempts[&1].ended.contains("stopped renewing its lease"), "{attempts:?}");
            assert_ne!(attempts[&1].worker, attempts[&2].worker);
        } else {
            assert_eq!(attempts.len(), 1, "{id}: {attempts:?}");
        }
    }

    // Exactly once in the money too: one charge per job, and the balance is what the ledger says.
    let charges = db.query("SELECT job_id, COUNT(*) FROM credit_ledger WHERE kind = 'charge' GROUP BY job_id");
    assert_eq!(charges.len(), JOBS, "{charges:?}");
    assert!(charges.iter().all(|row| row.ends_with("|1")), "{charges:?}");
    let mismatched = db.query(
        "SELECT fingerprint FROM api_keys WHERE credits <> (SELECT COALESCE(SUM(amount), 0) FROM credit_ledger l WHERE l.key_fingerprint = api_keys.fingerprint)",
    );
    assert!(mismatched.is_empty(), "{mismatched:?}");

    // Every output is in the bucket, served by presigned links, and is what the job says.
    for (n, id) in ids.iter().enumerate().step_by(7) {
        let job = &jobs[id];
        let url = job["output_url"].as_str().unwrap();
        assert!(url.starts_with(&s3.endpoint) && url.contains("X-Amz-Signature="), "{url}");
        let path = dir.path().join(format!("out-{n}.webm"));
        download(url, &path);
        assert_eq!(sha256_of(&path), job["output_sha256"].as_str().unwrap());
        let (_, _, alpha) = decode_alpha(&path);
        assert_eq!(alpha.len(), 90, "3 s at 30 fps");
    }

    // Monitoring sees it all: the API's gauges come from the database, a worker's series from
    // the jobs it ran.
    let metric = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
    };
    let api_metrics = client().get(api.url("/metrics")).send().unwrap().text().unwrap();
    assert_eq!(metric(&api_metrics, "clearbg_jobs{status=\"completed\"}"), JOBS as f64);
    assert_eq!(metric(&api_metrics, "clearbg_queue_depth"), 0.0);
    // The two surviving workers ran every job but those the killed one finished before it died
    // (its lost attempt is counted nowhere: the engine never finished it).
    let mut frames = 0.0;
    for (n, ops) in ops.iter().enumerate().filter(|(n, _)| *n != victim) {
        let text = client().get(format!("http://{ops}/metrics")).send().unwrap().text().unwrap();
        frames += metric(&text, "clearbg_frames_processed_total{model=\"light\"}");
        assert!(metric(&text, "clearbg_credits_charged_millicredits_total{model=\"light\"}") > 0.0, "{text}");
        let health = json_ok(client().get(format!("http://{ops}/health")).send().unwrap());
        assert_eq!(health["status"], "healthy", "worker{n}: {health}");
        assert_eq!(health["checks"]["model_light"], true, "worker{n}: {health}");
        expect_error(client().get(format!("http://{ops}/v1/jobs")).send().unwrap(), 404, "not_found");
    }
    assert_eq!(frames, 90.0 * (JOBS - completed_by_killed) as f64, "frames on the survivors");

    // Nothing runs on: the queue is empty and no lease is held.
    let left = db.query("SELECT COUNT(*) FROM jobs WHERE status <> 'completed' OR lease_owner IS NOT NULL");
    assert_eq!(left, ["0"]);
    drop(workers);
}

#[test]
fn uploads_stream_to_s3_in_parts_and_only_presigned_links_read_them() {
    let s3 = Garage::start();
    let env = s3.env();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::spawn(&env_refs);
    let key = server.key("big");
    let dir = tempfile::tempdir().unwrap();

    // A lossless clip of noise: about 20 MB, so several 5 MB parts.
    let clip = dir.path().join("noise.mp4");
    let noise = "nullsrc=s=640x480:r=10,geq=random(1)*255:128:128";
    let lossless = ["-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p"];
    let input = ["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", noise];
    run("ffmpeg", &[&input[..], &lossless[..], &[clip.to_str().unwrap()]].concat());
    let size = std::fs::metadata(&clip).unwrap().len();
    assert!(size > 12_000_000, "{size} bytes");

    let upload = server.upload(&key, &clip);
    assert_eq!(upload["size"].as_u64(), Some(size));
    let url = upload["video_url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/{}/uploads/", s3.endpoint, s3.bucket)), "{url}");
    let copy = dir.path().join("copy.mp4");
    let headers = download(url, &copy);
    assert_eq!(sha256_of(&copy), upload["sha256"].as_str().unwrap(), "the bucket holds the bytes sent");
    // S3 marks an object assembled from a multipart upload with `-<parts>` in its ETag.
    let etag = headers["etag"].to_str().unwrap().trim_matches('"').to_string();
    let parts: u32 = etag.rsplit_once('-').map(|(_, n)| n.parse().unwrap()).unwrap_or(1);
    assert!(parts >= 3, "a multipart upload of {size} bytes: ETag {etag}");

    // The signature is the storage's: an altered link is refused by S3 itself, and this
    // service's own /files/ route has nothing to serve for a bucket.
    let altered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    assert_eq!(client().get(&altered).send().unwrap().status().as_u16(), 403);
    let unsigned = url.split('?').next().unwrap();
    assert_eq!(client().get(unsigned).send().unwrap().status().as_u16(), 403);
    let object = url.split(&format!("/{}/", s3.bucket)).nth(1).unwrap().split('?').next().unwrap();
    expect_error(
        client().get(server.url(&format!("/files/{object}?expires=9999999999&sig=00"))).send().unwrap(),
        403,
        "invalid_signature",
    );
    let health = json_ok(client().get(server.url("/health")).send().unwrap());
    assert_eq!(health["checks"]["storage"], true, "{health}");
}
