//! The service as an operator runs it: `clearbg serve` and `clearbg worker` processes, stopped by
//! signals and `kill -9`, read through their logs, given environments without ffmpeg, scaled out
//! over PostgreSQL and S3, driven by a browser and by schemathesis.

#[path = "../common/mod.rs"]
mod common;

mod durability;
mod ops;
mod scale_out;
mod schema;
mod video;
mod webapp;
mod webhooks;
