//! The helpers the API tests share: a real clearbg server on a loopback port with its own data
//! directory — run inside the test process ([`Server::start`]: the same `Application` that
//! `clearbg serve` runs, without a process to spawn) or as a `clearbg serve` child process
//! ([`Server::spawn`]: for what only a process shows, such as signals, `kill -9`, its log, its
//! environment or its ffmpeg children) — and keys, clips, polling and decoding alpha back.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod scaleout;

use clap::{CommandFactory, Parser};
use clearbg_service::{Application, Role};
use reqwest::blocking::{multipart, Client, Response};
use serde_json::Value;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running server; stopped when dropped.
pub struct Server {
    host: Host,
    /// A `clearbg serve` process (else an application in this process).
    spawned: bool,
    pub base: String,
    pub port: u16,
    pub data: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database of this server, when the suite runs on PostgreSQL.
    _pg: Option<scaleout::PgDatabase>,
}

/// Where a server runs.
enum Host {
    Process(Child),
    InProcess(Box<InProcess>),
    /// Stopped, between `stop` and `restart`.
    Stopped,
}

/// An `Application` on a runtime of its own, run until `stop` is sent.
struct InProcess {
    runtime: tokio::runtime::Runtime,
    app: clearbg_service::App,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// Stops it as a signal stops `clearbg serve`: requests finish, jobs are handed back.
    fn stop(self) {
        let InProcess { runtime, stop, done, .. } = self;
        let _ = stop.send(());
        let ended = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), done).await });
        // Not dropped: that would wait for an engine thread without limit.
        runtime.shutdown_timeout(Duration::from_millis(200));
        match ended {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("the server ended with an error: {e:#}"),
            Ok(Err(e)) => panic!("the server panicked: {e}"),
            Err(_) => panic!("the server did not stop within 30 s"),
        }
    }
}

/// `clearbg serve`'s settings, parsed as the command line parses them.
#[derive(Parser)]
struct ServeFlags {
    #[command(flatten)]
    config: clearbg_service::Config,
}

/// The flag of the setting whose environment twin is `name` (`CLEARBG_RETENTION` → `retention`).
fn flag_of(name: &str) -> String {
    let command = ServeFlags::command();
    let arg = command.get_arguments().find(|a| a.get_env().is_some_and(|e| e == name));
    let long = arg.and_then(|a| a.get_long()).unwrap_or_else(|| {
        panic!("{name} is not a `clearbg serve` setting: a test that needs it must use Server::spawn")
    });
    long.to_string()
}

/// A free port for a program that must be told one (Garage, a worker's `/health`), taken below
/// the system's ephemeral range (32768 and up on Linux): a port the system handed out for port 0
/// and then released could be handed out again to any of the servers the tests start on port 0
/// before the program binds it. Each is handed out once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // 10000..30000, from an offset of this process's own.
    let offset = std::process::id() % 200 * 100;
    loop {
        let port = 10_000 + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % 20_000;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

/// The port a server started on port 0 got, from its `serving HTTP` log line (`listen=…` in
/// text logs, `"listen":"…"` in JSON ones).
fn bound_port(child: &mut Child, log: &Path) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let port = text
            .lines()
            .filter(|l| l.contains("serving HTTP"))
            .find_map(|l| l.split("listen").nth(1)?.split("127.0.0.1:").nth(1))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
        if let Some(port) = port {
            return port;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("clearbg serve exited ({status}) before listening; log:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("clearbg serve did not say where it listens; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
}

impl Server {
    /// Starts a server in this process with a fresh data directory and extra settings, named by
    /// their `CLEARBG_*` variables.
    pub fn start(env: &[(&str, &str)]) -> Server {
        Server::start_with(&[], env)
    }

    /// Like [`Server::start`], with `clearbg serve` flags (`--no-workers`).
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::create(args, env, false)
    }

    /// Starts `clearbg serve` as a child process, with a fresh data directory and extra
    /// environment.
    pub fn spawn(env: &[(&str, &str)]) -> Server {
        Server::spawn_with(&[], env)
    }

    /// Like [`Server::spawn`], with `clearbg serve ARGS…`.
    pub fn spawn_with(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::create(args, env, true)
    }

    /// With `CLEARBG_TEST_DATABASE=postgres`, a server not given a database gets a fresh
    /// PostgreSQL database instead of its SQLite file, so the whole API suite can run on either.
    fn create(args: &[&str], env: &[(&str, &str)], process: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let pg = (std::env::var("CLEARBG_TEST_DATABASE").as_deref() == Ok("postgres")
            && !env.iter().any(|(k, _)| k == "CLEARBG_DATABASE_URL"))
        .then(scaleout::PgDatabase::create);
        if let Some(pg) = &pg {
            env.push(("CLEARBG_DATABASE_URL".into(), pg.url.clone()));
        }
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut server = Server::launch(data, None, args, env, 0, process);
        server._dir = Some(dir);
        server._pg = pg;
        server
    }

    /// Starts the server on `port`, or on a port the system picks (port 0, read back from the
    /// application or the process's log: no port is chosen here and then raced for).
    fn launch(
        data: PathBuf,
        port: Option<u16>,
        args: Vec<String>,
        env: Vec<(String, String)>,
        generation: u32,
        process: bool,
    ) -> Server {
        std::fs::create_dir_all(&data).unwrap();
        let log = data.with_file_name(format!("server-{generation}.log"));
        let listen = format!("127.0.0.1:{}", port.unwrap_or(0));
        let (host, port) = if process {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_clearbg"));
            cmd.arg("serve")
                .args(&args)
                .env("CLEARBG_DATA_DIR", &data)
                .env("CLEARBG_LISTEN", &listen)
                .env("CLEARBG_ADMIN_TOKEN", ADMIN_TOKEN)
                .env("CLEARBG_THREADS", "1")
                .env_remove("CLEARBG_PUBLIC_URL")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            for (k, v) in &env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("clearbg serve starts");
            let port = port.unwrap_or_else(|| bound_port(&mut child, &log));
            (Host::Process(child), port)
        } else {
            let in_process = Server::build(&data, &listen, &args, &env);
            let port = port.unwrap_or_else(|| in_process.app.config.listen.port());
            (Host::InProcess(Box::new(in_process)), port)
        };
        let server = Server {
            host,
            spawned: process,
            base: format!("http://127.0.0.1:{port}"),
            port,
            data,
            args,
            env,
            log,
            _dir: None,
            _pg: None,
        };
        server.wait_healthy();
        server
    }

    /// The application `clearbg serve` would run with these flags and settings, running.
    fn build(data: &Path, listen: &str, args: &[String], env: &[(String, String)]) -> InProcess {
        let mut flags = vec![
            "serve".to_string(),
            format!("--data-dir={}", data.display()),
            format!("--listen={listen}"),
            format!("--admin-token={ADMIN_TOKEN}"),
            "--threads=1".to_string(),
        ];
        flags.extend(env.iter().map(|(name, value)| format!("--{}={value}", flag_of(name))));
        let mut config = ServeFlags::try_parse_from(&flags).unwrap_or_else(|e| panic!("{flags:?}: {e}")).config;
        // As for a spawned server: links name the port it got, whatever the shell says.
        if !env.iter().any(|(name, _)| name == "CLEARBG_PUBLIC_URL") {
            config.public_url = None;
        }
        for arg in args {
            match arg.as_str() {
                "--no-workers" => config.workers = 0,
                other => panic!("{other}: not a flag an in-process server takes; use Server::spawn_with"),
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let application = runtime
            .block_on(Application::build(config, Role::Serve))
            .unwrap_or_else(|e| panic!("the server does not start: {e:#}"));
        let app = application.app().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = runtime.spawn(application.run_until(async move {
            let _ = stopped.await;
        }));
        InProcess { runtime, app, stop, done }
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = client().get(format!("{}/health", self.base)).send() {
                if r.status().is_success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server did not become healthy; log:\n{}", self.log_text());
    }

    /// A spawned server's log (an in-process server logs nowhere).
    pub fn log_text(&self) -> String {
        match self.host {
            Host::InProcess(_) => "(the server runs in the test process: no log)".into(),
            _ => std::fs::read_to_string(&self.log).unwrap_or_default(),
        }
    }

    fn child(&mut self) -> &mut Child {
        match &mut self.host {
            Host::Process(child) => child,
            _ => panic!("only a server started with Server::spawn is a process"),
        }
    }

    /// A spawned server's process id.
    pub fn pid(&self) -> u32 {
        match &self.host {
            Host::Process(child) => child.id(),
            _ => panic!("only a server started with Server::spawn is a process"),
        }
    }

    /// The graceful path: SIGTERM and wait, or the same stop for a server in this process.
    pub fn stop(&mut self) {
        match std::mem::replace(&mut self.host, Host::Stopped) {
            Host::Process(mut child) => {
                Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
                let deadline = Instant::now() + Duration::from_secs(30);
                while child.try_wait().unwrap().is_none() {
                    assert!(Instant::now() < deadline, "server ignored SIGTERM");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Host::InProcess(server) => server.stop(),
            Host::Stopped => {}
        }
    }

    /// kill -9: the crash path (a spawned server only).
    pub fn kill9(&mut self) {
        let child = self.child();
        Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
        child.wait().unwrap();
        self.host = Host::Stopped;
    }

    /// A new server of the same kind on the same data directory and port, with `extra`
    /// settings; one still running is stopped gracefully first.
    pub fn restart(mut self, extra: &[(&str, &str)]) -> Server {
        self.stop();
        let mut env = self.env.clone();
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        let generation = std::fs::read_dir(self.data.parent().unwrap()).unwrap().count() as u32;
        let (dir, pg) = (self._dir.take(), self._pg.take());
        let mut next =
            Server::launch(self.data.clone(), Some(self.port), self.args.clone(), env, generation, self.spawned);
        next._dir = dir;
        next._pg = pg;
        next
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A `clearbg` command on this server's database (for `clearbg keys …`).
    pub fn clearbg(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clearbg"));
        cmd.env("CLEARBG_DATA_DIR", &self.data).envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Creates an API key as `clearbg keys create` does, with the server's initial credits:
    /// with that command for a spawned server, in the store for one in this process.
    pub fn key(&self, client_id: &str) -> String {
        if let Host::InProcess(server) = &self.host {
            let app = &server.app;
            let created =
                server.runtime.block_on(app.store.create_key(client_id, None, app.config.initial_credits, None));
            return created.expect("a key is created").0;
        }
        let out = self.clearbg().args(["keys", "create", "--client-id", client_id]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout.lines().count(), 1, "the key is the only line on stdout: {stdout:?}");
        stdout.trim().to_string()
    }
    pub fn get(&self, key: &str, path: &str) -> Response {
        client().get(self.url(path)).header("X-Api-Key", key).send().unwrap()
    }

    pub fn post_json(&self, key: &str, path: &str, body: &Value) -> Response {
        client()
            .post(self.url(path))
            .header("X-Api-Key", key)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    }

    /// Uploads like the Python SDK: a `file` part with a file name and no part content type.
    pub fn upload(&self, key: &str, path: &Path) -> Value {
        let part = multipart::Part::bytes(std::fs::read(path).unwrap())
            .file_name(path.file_name().unwrap().to_string_lossy().into_owned());
        let r = client()
            .post(self.url("/v1/uploads"))
            .header("X-Api-Key", key)
            .multipart(multipart::Form::new().part("file", part))
            .send()
            .unwrap();
        json_ok(r)
    }

    /// Polls a job until it is completed or failed; returns it and every progress value seen.
    pub fn wait(&self, key: &str, id: &str, limit: Duration) -> (Value, Vec<f64>) {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let job = json_ok(self.get(key, &format!("/v1/jobs/{id}")));
            seen.push(job["progress"].as_f64().unwrap());
            if job["status"] == "completed" || job["status"] == "failed" {
                return (job, seen);
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still {} after {limit:?}:\n{}",
                job["status"],
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a job is processing with some progress.
    pub fn wait_processing(&self, key: &str, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let job = json_ok(self.get(key, &format!("/v1/jobs/{id}")));
            if job["status"] == "processing" && job["progress"].as_f64().unwrap() > 0.0 {
                return job;
            }
            assert!(job["status"] != "failed" && job["status"] != "completed", "job ended early: {job}");
            assert!(Instant::now() < deadline, "job never started: {job}\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pids of a spawned server's ffmpeg and ffprobe children.
    pub fn ffmpeg_children(&self) -> Vec<u32> {
        ffmpeg_children_of(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.host, Host::Stopped) {
            Host::Process(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Host::InProcess(server) if !std::thread::panicking() => server.stop(),
            // A failing test's server is left to its runtime's end, without a second panic.
            Host::InProcess(server) => server.runtime.shutdown_timeout(Duration::from_millis(200)),
            Host::Stopped => {}
        }
    }
}

pub fn ffmpeg_children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // comm is in parentheses; ppid is the second field after it.
        let Some((comm, rest)) = stat.split_once(") ") else { continue };
        let ppid: u32 = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == pid && (comm.ends_with("(ffmpeg") || comm.ends_with("(ffprobe")) {
            found.push(child);
        }
    }
    found
}

pub fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// Asserts a 2xx JSON response and returns its body.
pub fn json_ok(r: Response) -> Value {
    let status = r.status();
    let text = r.text().unwrap();
    assert!(status.is_success(), "HTTP {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// Asserts an error response: its status, its code, and that its request_id is the header's.
pub fn expect_error(r: Response, status: u16, code: &str) -> Value {
    let got = r.status().as_u16();
    let header = r.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_string());
    let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let text = r.text().unwrap();
    assert_eq!(got, status, "{text}");
    assert!(ct.starts_with("application/json"), "content type {ct:?} for {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(body["error"]["code"], code, "{text}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{text}");
    assert_eq!(body["error"]["request_id"].as_str(), header.as_deref(), "request_id must equal X-Request-Id");
    body
}

/// Waits for `child` (its stdout and stderr piped) and returns what it printed; kills it once
/// `limit` has passed, so a hung tool fails its test instead of hanging the suite.
pub fn output_within(mut child: Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    child.wait_with_output().unwrap()
}

/// Runs a tool (ffmpeg, ffprobe…) to success and returns its stdout.
pub fn run(cmd: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The set-up step's home, as the server under test finds it.
pub fn clearbg_home() -> PathBuf {
    std::env::var("CLEARBG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/clearbg"))
}

pub fn fixture(name: &str) -> PathBuf {
    clearbg_home().join("fixtures").join(name)
}

/// Whether the opt-in `video` model is installed (`make setup-video-matting`; CI installs it).
pub fn video_model_installed() -> bool {
    clearbg_home().join("models/rvm_mnv3.onnx").is_file()
}

/// The first `seconds` of the carphone clip (a real person, QCIF, 30 fps) as H.264 + AAC.
pub fn person_clip(dir: &Path, seconds: f64) -> PathBuf {
    let path = dir.join(format!("person-{seconds}.mp4"));
    run(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-i",
            fixture("carphone.mp4").to_str().unwrap(),
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            &seconds.to_string(),
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            path.to_str().unwrap(),
        ],
    );
    path
}

/// A clip cut just after its index (`moov`, which comes first): its bytes and its header pass
/// for a 2-second video, so an upload and a job are made of it; not one frame then decodes, so
/// the job fails in the worker at once, whatever the model. For tests that need that.
pub fn truncated_clip(dir: &Path) -> PathBuf {
    let full = dir.join("full.mp4");
    run(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25:duration=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-movflags",
            "+faststart",
            full.to_str().unwrap(),
        ],
    );
    let bytes = std::fs::read(&full).unwrap();
    let box_end = |at: usize| at + u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let moov = box_end(0); // ftyp first, then moov
    assert_eq!(&bytes[moov + 4..moov + 8], b"moov");
    let cut = dir.join("truncated.mp4");
    std::fs::write(&cut, &bytes[..box_end(moov) + 16]).unwrap();
    cut
}

/// A longer, larger clip that keeps a worker busy for several seconds.
pub fn long_clip(dir: &Path) -> PathBuf {
    let path = dir.join("long.mp4");
    run(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-stream_loop",
            "-1",
            "-i",
            fixture("carphone.mp4").to_str().unwrap(),
            "-t",
            "40",
            "-vf",
            "scale=640:480",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            path.to_str().unwrap(),
        ],
    );
    path
}

/// Downloads `url` to `dest`, returning the response's headers.
pub fn download(url: &str, dest: &Path) -> reqwest::header::HeaderMap {
    let r = client().get(url).send().unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    let headers = r.headers().clone();
    std::fs::write(dest, r.bytes().unwrap()).unwrap();
    headers
}

pub fn sha256_of(path: &Path) -> String {
    String::from_utf8(run("sha256sum", &[path.to_str().unwrap()]))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Width and height of a video's first stream.
pub fn video_size(path: &Path) -> (u32, u32) {
    let args = ["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0:s=x"];
    let probe = String::from_utf8(run("ffprobe", &[&args[..], &[path.to_str().unwrap()]].concat())).unwrap();
    let (w, h) = probe.trim().split_once('x').unwrap();
    (w.parse().unwrap(), h.parse().unwrap())
}

/// Frame count and the alpha plane of every frame of a video with alpha (libvpx for WebM alpha).
pub fn decode_alpha(path: &Path) -> (u32, u32, Vec<Vec<u8>>) {
    let (w, h) = video_size(path);
    let mut args = vec!["-nostdin", "-v", "error"];
    if path.extension().is_some_and(|e| e == "webm") {
        args.extend(["-c:v", "libvpx-vp9"]);
    }
    args.extend(["-i", path.to_str().unwrap(), "-f", "rawvideo", "-pix_fmt", "rgba", "-"]);
    let raw = run("ffmpeg", &args);
    let frame = (w * h * 4) as usize;
    assert_eq!(raw.len() % frame, 0);
    let frames = raw.chunks_exact(frame).map(|f| f.chunks_exact(4).map(|p| p[3]).collect()).collect();
    (w, h, frames)
}

/// Every frame as RGB, for composited outputs.
pub fn decode_rgb(path: &Path) -> (u32, u32, Vec<Vec<u8>>) {
    let (w, h) = video_size(path);
    let raw = run(
        "ffmpeg",
        &["-nostdin", "-v", "error", "-i", path.to_str().unwrap(), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
    );
    let frame = (w * h * 3) as usize;
    (w, h, raw.chunks_exact(frame).map(|f| f.to_vec()).collect())
}

/// Does the file have an audio stream?
pub fn has_audio(path: &Path) -> bool {
    let out = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "a",
            "-show_entries",
            "stream=codec_type",
            "-of",
            "csv=p=0",
            path.to_str().unwrap(),
        ],
    );
    !String::from_utf8(out).unwrap().trim().is_empty()
}

/// A tiny HTTP server on loopback answering `routes` (path → body); anything else is 404.
pub fn serve_routes(routes: Vec<(&'static str, Vec<u8>)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let routes = routes.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or(0);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                }
                let (status, body) = match routes.iter().find(|(p, _)| *p == path) {
                    Some((_, body)) => ("200 OK", body.clone()),
                    None => ("404 Not Found", b"no".to_vec()),
                };
                let mut stream = stream;
                let _ =
                    write!(stream, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(&body);
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// Processes whose command line holds `marker` (they would be this test's children or orphans).
pub fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}
