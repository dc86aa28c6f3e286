//! schemathesis (PyPI, pinned in `scripts/schemathesis-requirements.txt`) against a live
//! `clearbg serve` and its own `/openapi.json`: every operation, with generated valid and invalid
//! input, must answer without a 5xx, with a status the description lists, the content type it
//! names and a body that conforms to its schema.
//!
//! Generated input includes arbitrary `video_url`s and `webhook_url`s, which a server would try
//! to fetch or call. So the server and schemathesis run together in a network namespace of their
//! own with nothing but loopback (`unshare --net`), and the server runs no worker
//! (`CLEARBG_WORKERS=0`): nothing generated can reach past this machine or start real work.
//! Rate limits are raised so that the run's own volume is not refused with 429s.
//!
//! `negative_data_rejection` (every schema-violating request must be refused) is not among the
//! checks: its one finding is that an empty query value (`?limit=`) means the default, which the
//! API does on purpose (`None | Some("")` in the handlers) and OpenAPI 3.1 cannot describe
//! (`allowEmptyValue` is deprecated, and utoipa does not emit it). It found one real bug first:
//! `composition.foreground.offset` given as an array was read as `{x: 0, y: 0}`; now a 422.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{clearbg_home, output_within};

const ADMIN_TOKEN: &str = "schemathesis-admin-token";

/// Starts the server, creates a key, waits for the description and runs schemathesis: all inside
/// the namespace, so this is one shell script.
const SCRIPT: &str = r#"
set -eu
ip link set lo up
KEY=$("$CLEARBG" keys create --client-id schemathesis)
"$CLEARBG" serve >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
"$ST" run "$BASE/openapi.json" --wait-for-schema 60 \
  -H "X-Api-Key: $KEY" -H "X-Admin-Token: $CLEARBG_ADMIN_TOKEN" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
  --phases examples,coverage,fuzzing,stateful --max-examples "$EXAMPLES" --seed 20261127 --workers 2 \
  --request-timeout 30 --suppress-health-check too_slow,filter_too_much \
  --report junit --report-junit-path "$REPORT" --output-truncate false
"#;

#[test]
fn schemathesis_finds_no_server_error_and_no_drift_from_the_description() {
    let st = clearbg_home().join("st-venv/bin/st");
    assert!(st.is_file(), "schemathesis is missing: run `make setup` (it builds {})", st.display());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let report = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts/schemathesis-junit.xml");
    std::fs::create_dir_all(report.parent().unwrap()).unwrap();
    let started = Instant::now();
    let child = Command::new("unshare")
        .args(["--net", "--", "bash", "-c", SCRIPT])
        // schemathesis keeps a cache (.schemathesis/) in its working directory: not in the tree.
        .current_dir(dir.path())
        .env("CLEARBG", env!("CARGO_BIN_EXE_clearbg"))
        .env("ST", &st)
        .env("BASE", "http://127.0.0.1:8080")
        .env("LOG", &log)
        .env("REPORT", &report)
        .env("EXAMPLES", "100")
        .env("CLEARBG_LISTEN", "127.0.0.1:8080")
        .env("CLEARBG_DATA_DIR", dir.path().join("data"))
        .env("CLEARBG_WORKERS", "0")
        .env("CLEARBG_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CLEARBG_RATE_LIMIT", "1000000/min")
        .env("CLEARBG_START_RATE_LIMIT", "1000000/min")
        // Generated keys are wrong by design, and the legacy routes are hit thousands of times:
        // the per-address budgets would otherwise leave their logic untested.
        .env("CLEARBG_AUTH_FAILURE_LIMIT", "1000000/min")
        .env("CLEARBG_LEGACY_RATE_LIMIT", "1000000/min")
        .env_remove("CLEARBG_PUBLIC_URL")
        .env_remove("CLEARBG_DATABASE_URL")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs (util-linux)");
    let out = output_within(child, Duration::from_secs(900));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
    let panics: Vec<&str> = server_log.lines().filter(|l| l.contains("panicked") || l.contains(" ERROR ")).collect();
    assert!(
        out.status.success(),
        "schemathesis failed ({:?}, {:.0}s):\n{stdout}\n{stderr}\nserver errors:\n{}",
        out.status,
        started.elapsed().as_secs_f64(),
        panics.join("\n")
    );
    assert!(panics.is_empty(), "the server logged errors under fuzzing:\n{}", panics.join("\n"));
    // The summary, for the record (test cases generated and passed, per phase).
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            ["Test cases", "Seed", "passed", "Examples", "Coverage", "Fuzzing", "Stateful", "Links", "links"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    eprintln!("schemathesis ran {:.0}s:\n{}", started.elapsed().as_secs_f64(), summary.join("\n"));
    // "Test cases:" then "  N generated, N passed" when nothing failed.
    let cases = stdout.lines().find(|l| l.contains(" generated, ")).unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    let numbers: Vec<u64> = cases.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    assert!(
        numbers.len() == 2 && numbers[0] == numbers[1] && numbers[0] > 1000,
        "every generated case must pass, and there must be many: {cases}\n{stdout}"
    );
}
