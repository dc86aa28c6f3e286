//! The API over real HTTP on loopback, against servers that run in this test process: the same
//! `Application` that `clearbg serve` runs (real SQLite or PostgreSQL, real object storage, the
//! real engine in its worker), started in milliseconds and without a process of its own. What
//! needs a process — signals, `kill -9`, the log, a changed environment — is in `tests/process`.
//!
//! `CLEARBG_TEST_DATABASE=postgres` runs every test on a PostgreSQL database of its own.

#[path = "../common/mod.rs"]
mod common;

mod credits;
mod errors;
mod fetch;
mod flow;
mod hostile;
mod idempotency;
mod limits;
