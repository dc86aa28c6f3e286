//! # clearbg-engine
//!
//! Everything clearbg knows about pixels, and nothing about HTTP, jobs or databases.
//!
//! A video flows through [`pipeline::remove_background`] in concurrent stages joined by bounded
//! queues, so memory stays flat however long the video is:
//!
//! ```text
//! probe ─► decode (ffmpeg child, raw YUV) ─► segment (ONNX model on keyframes, low-res mask
//!                                                   carried along the motion in between)
//!       ─► matte (temporal stabilisation + guided upsampling to full resolution)
//!       ─► encode (ffmpeg child: background, composition, format, original audio)
//! ```
//!
//! - [`container`] decides from a file's bytes whether ffmpeg may read it, and as what: only
//!   real video containers, each read with its own demuxer forced and no protocol but `file`.
//! - [`probe`] reads a video's facts with ffprobe and refuses what we cannot or will not process
//!   (size, area, rate, a duration that cannot be established), before anything is decoded.
//! - [`model`] pins, verifies and runs the neural models behind the tiers (ISNet in int8 on a CPU).
//! - [`keyframes`] decides on which frames the model runs; between keyframes the mask is carried
//!   along the picture's motion.
//! - [`matte`] turns a low-resolution mask into a steady full-resolution alpha matte.
//! - [`output`] describes what the user asked for: format, background, composition.
//! - [`video`] holds the ffmpeg command lines, decoder and encoders.
//! - [`pipeline`] runs the stages and reports progress; it is the only entry point a service needs.
#![deny(missing_docs)]

pub mod container;
pub mod error;
pub mod frame;
pub mod home;
pub mod keyframes;
pub mod matte;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod probe;
mod process;
pub mod video;

pub use error::{EngineError, Result};
pub use home::Home;
pub use keyframes::Keyframes;
pub use model::{Device, Precision, Runtime, Segmenter, Tier};
pub use output::{Anchor, Background, Composition, OutputFormat};
pub use pipeline::{remove_background, Progress, RemoveRequest, StageTimes, Summary};
pub use probe::{probe, Limits, VideoInfo};
pub use process::kill_all as kill_running_tools;
