//! The shared services a multi-host deployment runs on, started for real: a PostgreSQL database
//! of the test's own on the local server, a Garage S3 server, and `clearbg worker` processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub use clearbg_service::testing::PgDatabase;

/// Where `make setup` installs Garage.
pub fn garage_binary() -> PathBuf {
    let home = std::env::var("CLEARBG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/clearbg"));
    home.join("tools/bin/garage")
}

/// A single-node Garage server (a real S3 implementation, <https://garagehq.deuxfleurs.fr>)
/// in a temporary directory, with one bucket and one access key made at start-up.
pub struct Garage {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Garage {
    pub fn start() -> Garage {
        let binary = garage_binary();
        assert!(binary.is_file(), "{} is missing: run `make setup`", binary.display());
        let dir = tempfile::tempdir().unwrap();
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let root = dir.path();
        let config = root.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
                meta = root.join("meta").display(),
                data = root.join("data").display(),
                secret = "5b3c".repeat(16),
            ),
        )
        .unwrap();
        let log = root.join("garage.log");
        let (access_key, secret_key, bucket) =
            (format!("GK{}", "0123456789ab".repeat(2)), "c0ffee00".repeat(8), "clearbg".to_string());
        let child = Command::new(&binary)
            .args(["-c", config.to_str().unwrap(), "server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &secret_key)
            .env("GARAGE_DEFAULT_BUCKET", &bucket)
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("garage starts");
        let garage = Garage {
            child,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket,
            access_key,
            secret_key,
            log,
            _dir: dir,
        };
        // Ready when the CLI, over RPC, sees the bucket it was asked to make.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info = Command::new(&binary)
                .args(["-c", config.to_str().unwrap(), "bucket", "info", &garage.bucket])
                .output()
                .unwrap();
            if info.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "garage did not start: {}\n{}",
                String::from_utf8_lossy(&info.stderr),
                std::fs::read_to_string(&garage.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        garage
    }

    /// The settings that point clearbg at this bucket.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("CLEARBG_STORAGE_URL".into(), format!("s3://{}?endpoint={}&region=garage", self.bucket, self.endpoint)),
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
        ]
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `clearbg worker` process; killed when dropped.
pub struct WorkerProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Starts a worker with `env` and waits until its workers are ready.
    pub fn start(dir: &Path, name: &str, env: &[(String, String)]) -> WorkerProcess {
        let data = dir.join(name);
        std::fs::create_dir_all(&data).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_clearbg"))
            .arg("worker")
            .env("CLEARBG_DATA_DIR", &data)
            .env("CLEARBG_THREADS", "1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("clearbg worker starts");
        let worker = WorkerProcess { child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !worker.log_text().contains("worker ready") {
            assert!(Instant::now() < deadline, "worker did not start:\n{}", worker.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        worker
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (a name `kill` knows: `STOP`, `CONT`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill -{signal}");
    }

    pub fn kill9(&mut self) {
        self.signal("KILL");
        self.child.wait().unwrap();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
