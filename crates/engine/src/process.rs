//! Child processes (ffmpeg, ffprobe) that are always reaped.
//!
//! Two hazards shape this module. A chatty child blocks forever once its stderr pipe is full,
//! so stderr is drained on its own thread and only its tail is kept for error messages. And a
//! child whose reader went away blocks forever in `write()` (ffmpeg's SIGTERM handler cannot
//! break that), so dropping a [`Child`] kills it with SIGKILL and waits for it.

use std::io::Read;
use std::process::{ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use crate::error::{EngineError, Result};

/// How much of a child's stderr we keep for error messages.
const STDERR_TAIL_BYTES: usize = 4096;

/// A running ffmpeg/ffprobe child whose stderr is being drained.
pub(crate) struct Child {
    inner: std::process::Child,
    stage: &'static str,
    stderr: Option<JoinHandle<String>>,
    reaped: bool,
}

impl Child {
    /// Starts `program` with piped stdout and stderr; stdin is piped when `with_stdin`.
    pub(crate) fn spawn(program: &str, args: &[String], stage: &'static str, with_stdin: bool) -> Result<Child> {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(if with_stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tracing::debug!(program, ?args, "spawning");
        let mut inner = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => EngineError::ToolMissing { tool: program.to_string() },
            _ => EngineError::Io { context: format!("starting {program}"), source: e },
        })?;
        let mut pipe = inner.stderr.take().expect("stderr is piped");
        let stderr = std::thread::Builder::new()
            .name(format!("{stage}-stderr"))
            .spawn(move || {
                let mut tail = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * STDERR_TAIL_BYTES {
                        tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                    }
                }
                String::from_utf8_lossy(&tail).into_owned()
            })
            .map_err(EngineError::io("starting stderr reader"))?;
        Ok(Child { inner, stage, stderr: Some(stderr), reaped: false })
    }

    pub(crate) fn take_stdout(&mut self) -> ChildStdout {
        self.inner.stdout.take().expect("stdout is piped and taken once")
    }

    pub(crate) fn take_stdin(&mut self) -> ChildStdin {
        self.inner.stdin.take().expect("stdin is piped and taken once")
    }

    /// Kills the child at once (SIGKILL); used when the pipeline fails or is cancelled.
    pub(crate) fn kill(&mut self) {
        if !self.reaped {
            let _ = self.inner.kill();
        }
    }

    /// Waits for the child and turns a failing exit into an error carrying its stderr tail.
    pub(crate) fn finish(mut self) -> Result<String> {
        let status = self.wait_status()?;
        let stderr = self.stderr_text();
        if status.success() {
            Ok(stderr)
        } else {
            Err(EngineError::Ffmpeg { stage: self.stage, message: describe_failure(status, &stderr) })
        }
    }

    fn wait_status(&mut self) -> Result<ExitStatus> {
        let status = self.inner.wait().map_err(EngineError::io(format!("waiting for {}", self.stage)))?;
        self.reaped = true;
        Ok(status)
    }

    fn stderr_text(&mut self) -> String {
        self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.inner.kill();
            let _ = self.inner.wait();
        }
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
    }
}

/// The last meaningful line(s) of a tool's stderr, or its exit status when it said nothing.
fn describe_failure(status: ExitStatus, stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return format!("exited with {status}");
    }
    let start = lines.len().saturating_sub(3);
    lines[start..].join(" / ")
}

/// Runs a short command to completion and returns its stdout (used for ffprobe).
pub(crate) fn run_to_string(program: &str, args: &[String], stage: &'static str) -> Result<String> {
    let mut child = Child::spawn(program, args, stage, false)?;
    let mut out = String::new();
    child.take_stdout().read_to_string(&mut out).map_err(EngineError::io(format!("reading {program} output")))?;
    child.finish()?;
    Ok(out)
}
