//! `video_url` and `bg_image_url` on other hosts: downloaded by the worker, redirects followed,
//! size capped, and private addresses refused unless the operator allows them.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;
use serde_json::json;

/// A small file server on loopback: `/clip.mp4`, `/bg.png`, `/moved` (302 to the clip),
/// `/slow.mp4` (never finishes), else 404.
fn file_server(clip: PathBuf, image: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (clip, image) = (clip.clone(), image.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                }
                let mut stream = stream;
                if path == "/slow.mp4" {
                    // Trickles for a minute: a download a cancel must interrupt.
                    let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n");
                    for _ in 0..600 {
                        if stream.write_all(&[0u8; 64]).is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    return;
                }
                let (head, body) = match path.as_str() {
                    "/clip.mp4" => ("200 OK\r\nContent-Type: video/mp4".to_string(), std::fs::read(&clip).unwrap()),
                    "/bg.png" => ("200 OK\r\nContent-Type: image/png".to_string(), std::fs::read(&image).unwrap()),
                    "/moved" => ("302 Found\r\nLocation: /clip.mp4".to_string(), Vec::new()),
                    _ => ("404 Not Found".to_string(), b"no".to_vec()),
                };
                let _ =
                    write!(stream, "HTTP/1.1 {head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(&body);
            });
        }
    });
    port
}

#[test]
fn urls_are_downloaded_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let port = file_server(person_clip(dir.path(), 1.0), fixture("astronaut.png"));
    let server = Server::start(&[("CLEARBG_ALLOW_PRIVATE_URLS", "1")]);
    let key = server.key("a");
    let base = format!("http://127.0.0.1:{port}");
    let create = |body: serde_json::Value| {
        json_ok(server.post_json(&key, "/v1/jobs", &body))["id"].as_str().unwrap().to_string()
    };

    let direct = create(json!({"video_url": format!("{base}/clip.mp4"), "model": "light"}));
    let moved = create(json!({"video_url": format!("{base}/moved"), "model": "light", "output_format": "mp4",
        "bg_type": "image", "bg_image_url": format!("{base}/bg.png")}));
    let missing = create(json!({"video_url": format!("{base}/nothing.mp4"), "model": "light"}));
    let bad_image = create(json!({"video_url": format!("{base}/clip.mp4"), "model": "light", "output_format": "mp4",
        "background": {"type": "image", "image_url": format!("{base}/gone.png")}}));

    let (job, _) = server.wait(&key, &direct, Duration::from_secs(60));
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["input"]["kind"], "url");
    let (job, _) = server.wait(&key, &moved, Duration::from_secs(60));
    assert_eq!(job["status"], "completed", "a redirect is followed and the image background applied: {job}");
    let (job, _) = server.wait(&key, &missing, Duration::from_secs(60));
    assert_eq!((job["status"].as_str(), job["error_code"].as_str()), (Some("failed"), Some("fetch_failed")));
    assert!(job["error"].as_str().unwrap().contains("404"), "{job}");
    assert_eq!(job["video_url"], format!("{base}/nothing.mp4"), "the failed job keeps its input reference");
    let (job, _) = server.wait(&key, &bad_image, Duration::from_secs(60));
    assert_eq!(job["error_code"], "fetch_failed", "{job}");
    assert!(job["error"].as_str().unwrap().starts_with("bg_image_url"), "{job}");
}

#[test]
fn a_cancel_interrupts_a_download() {
    let dir = tempfile::tempdir().unwrap();
    let port = file_server(person_clip(dir.path(), 1.0), fixture("astronaut.png"));
    let server = Server::start(&[("CLEARBG_ALLOW_PRIVATE_URLS", "1")]);
    let key = server.key("a");
    let job = json_ok(server.post_json(
        &key,
        "/v1/jobs",
        &json!({"video_url": format!("http://127.0.0.1:{port}/slow.mp4"), "model": "light"}),
    ));
    let id = job["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while json_ok(server.get(&key, &format!("/v1/jobs/{id}")))["status"] != "processing" {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = std::time::Instant::now();
    let job = json_ok(server.post_json(&key, &format!("/v1/jobs/{id}/cancel"), &json!({})));
    assert_eq!((job["status"].as_str(), job["error_code"].as_str()), (Some("failed"), Some("cancelled")), "{job}");
    assert!(started.elapsed() < Duration::from_secs(5), "cancel took {:?}", started.elapsed());
}

#[test]
fn downloads_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let port = file_server(person_clip(dir.path(), 1.0), fixture("astronaut.png"));
    let server = Server::start(&[("CLEARBG_ALLOW_PRIVATE_URLS", "1"), ("CLEARBG_MAX_UPLOAD_BYTES", "1000")]);
    let key = server.key("a");
    let job = json_ok(server.post_json(
        &key,
        "/v1/jobs",
        &json!({"video_url": format!("http://127.0.0.1:{port}/clip.mp4"), "model": "light"}),
    ));
    let (job, _) = server.wait(&key, job["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(job["error_code"], "input_too_large", "{job}");
}

/// A host name is checked where it resolves: a name for a private address gets through creation
/// (only literal addresses are known then) and is refused by the worker before connecting.
#[test]
fn names_that_resolve_to_private_addresses_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = file_server(person_clip(dir.path(), 1.0), fixture("astronaut.png"));
    let host =
        String::from_utf8(std::process::Command::new("hostname").output().unwrap().stdout).unwrap().trim().to_string();
    let addrs: Vec<_> = (host.as_str(), port).to_socket_addrs().map(|a| a.collect()).unwrap_or_default();
    if addrs.is_empty()
        || !addrs.iter().all(|a: &std::net::SocketAddr| {
            a.ip().is_loopback() || matches!(a.ip(), std::net::IpAddr::V4(v4) if v4.is_private())
        })
    {
        eprintln!("skipped: host name {host:?} does not resolve to private addresses only ({addrs:?})");
        return;
    }
    let server = Server::start(&[]);
    let key = server.key("a");
    let job = json_ok(server.post_json(
        &key,
        "/v1/jobs",
        &json!({"video_url": format!("http://{host}:{port}/clip.mp4"), "model": "light"}),
    ));
    let (job, _) = server.wait(&key, job["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(job["error_code"], "url_not_allowed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("CLEARBG_ALLOW_PRIVATE_URLS"), "{job}");
}
