//! What the tests of this crate and of the `clearbg` binary share (feature `testing`, on for
//! tests only): a PostgreSQL database of a test's own.

use std::process::Command;

/// The PostgreSQL server the tests use: `CLEARBG_TEST_POSTGRES` (an admin URL), by default the
/// local one with trust authentication.
pub fn postgres_admin_url() -> String {
    std::env::var("CLEARBG_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Runs one statement with `psql`: plain and synchronous, so a database can be dropped from a
/// destructor whatever runtime the test had.
fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out =
        Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-tAc", sql]).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A database created for one test and dropped (with its connections) when this is dropped.
pub struct PgDatabase {
    /// Where to connect.
    pub url: String,
    admin: String,
    name: String,
}

impl PgDatabase {
    /// Creates a database with a name of its own on [`postgres_admin_url`]'s server.
    pub fn create() -> PgDatabase {
        let admin = postgres_admin_url();
        let name = format!("clearbg_test_{}", uuid::Uuid::new_v4().simple());
        psql(&admin, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} (set CLEARBG_TEST_POSTGRES): {e}"));
        let (server, _) = admin.rsplit_once('/').expect("a postgres URL has a path");
        PgDatabase { url: format!("{server}/{name}"), admin, name }
    }

    /// Runs one SQL query on this database; returns its rows, `|`-separated.
    pub fn query(&self, sql: &str) -> Vec<String> {
        psql(&self.url, sql).unwrap().lines().map(str::to_string).collect()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Err(e) = psql(&self.admin, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("dropping {}: {e}", self.name);
        }
    }
}
