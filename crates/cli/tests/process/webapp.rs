//! The web app at `/`, end to end in Debian's headless Chromium driven by playwright-core
//! (`tests/browser/webapp.mjs`): a real key, a real clip dropped on the page, the `light` model on
//! a real `clearbg serve`, and the preview checked for playback and transparent pixels; then the
//! API reference at `/docs` must render every operation offline. The screenshots are kept at
//! `target/test-artifacts/webapp.png` and `webapp-docs.png`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[test]
fn a_person_removes_a_background_in_the_browser() {
    assert!(Path::new("/usr/bin/chromium").exists(), "Chromium is missing: run `make setup` (it installs Debian's)");
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `make setup` (npm ci in {})",
        browser_dir().display()
    );
    let server = Server::spawn(&[]);
    let key = server.key("browser");
    let dir = tempfile::tempdir().unwrap();
    let clip = person_clip(dir.path(), 1.0);
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let shot = artefacts.join("webapp.png");
    let _ = std::fs::remove_file(&shot);

    let started = Instant::now();
    let child = Command::new("node")
        .arg(browser_dir().join("webapp.mjs"))
        .current_dir(browser_dir())
        .env("CLEARBG_URL", &server.base)
        .env("CLEARBG_KEY", &key)
        .env("CLEARBG_CLIP", &clip)
        .env("CLEARBG_SHOT", &shot)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (installed with npm)");
    let out = output_within(child, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser run failed ({:?}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        server.log_text()
    );
    eprintln!("browser run: {:.1}s {}", started.elapsed().as_secs_f64(), stdout.trim());

    let facts: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(facts["title"], "clearbg: remove a video's background");
    assert_eq!(facts["stored_key"], true, "the key is kept in the browser");
    assert_eq!(facts["upload_progress"], 100.0);
    assert_eq!(facts["progress"], 100.0);
    // The finished job's speed (the `fps` extension field), e.g. "41.3 fps".
    let speed = facts["speed"].as_str().unwrap_or_default();
    assert!(
        speed.ends_with(" fps") && speed.trim_end_matches(" fps").parse::<f64>().is_ok_and(|f| f > 0.0),
        "{speed:?}"
    );
    assert_eq!(facts["plays"], true);
    assert_eq!((facts["alpha"]["width"].as_u64(), facts["alpha"]["height"].as_u64()), (Some(176), Some(144)));
    assert!(facts["alpha"]["transparent"].as_f64().unwrap() > 0.1, "{facts}");
    assert_eq!(facts["download"]["download"], true);

    // What the page did is what the API recorded: one completed light WebM job for this key.
    let jobs = json_ok(server.get(&key, "/v1/jobs"));
    assert_eq!(jobs["total"], 1, "{jobs}");
    let job = &jobs["items"][0];
    assert_eq!((job["status"].as_str(), job["model"].as_str()), (Some("completed"), Some("light")));
    assert_eq!((job["output_format"].as_str(), job["bg_type"].as_str()), (Some("webm"), Some("transparent")));
    assert_eq!(job["metadata"]["source"], "web");
    assert!(facts["download"]["href"].as_str().unwrap().contains(job["id"].as_str().unwrap()));

    assert!(facts["docs_operations"].as_u64().unwrap() >= 28, "every operation in /docs: {facts}");
    assert!(facts["docs_title"].as_str().unwrap().starts_with("clearbg"), "{facts}");
    assert!(artefacts.join("webapp-docs.png").is_file());

    let png = std::fs::read(&shot).expect("the screenshot is kept");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{} bytes", png.len());
}

/// The page and its files: content types, cache validators, a CSP that allows only this origin's
/// scripts and styles, and no address outside the server in any of them.
#[test]
fn the_page_is_embedded_and_self_contained() {
    let server = Server::spawn(&[("CLEARBG_WORKERS", "0")]);
    let page = client().get(server.url("/")).send().unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("style-src 'self'"), "{csp}");
    let etag = page.headers()["etag"].to_str().unwrap().to_string();
    let html = page.text().unwrap();
    let again = client().get(server.url("/")).header("If-None-Match", &etag).send().unwrap();
    assert_eq!(again.status(), 304);

    for (file, kind) in [("app.js", "text/javascript"), ("app.css", "text/css"), ("icon.svg", "image/svg+xml")] {
        let r = client().get(server.url(&format!("/app/{file}"))).send().unwrap();
        assert_eq!(r.status(), 200, "{file}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(kind), "{file}");
        assert_eq!(r.headers()["cache-control"], "no-cache");
        let text = r.text().unwrap();
        assert!(html.contains(&format!("/app/{file}")), "the page uses {file}");
        for (name, body) in [(file, text.as_str()), ("index.html", html.as_str())] {
            assert!(!body.contains("//cdn") && !body.contains("googleapis") && !body.contains("unpkg"), "{name}");
            assert!(!body.contains("src=\"http") && !body.contains("href=\"http"), "{name} loads from elsewhere");
        }
    }
    expect_error(client().get(server.url("/app/nope.js")).send().unwrap(), 404, "not_found");
}
