//! Child processes (ffmpeg, ffprobe) that are always reaped, never outlive their deadline, and
//! can be killed all at once.
//!
//! Three hazards shape this module. A chatty child blocks forever once its stderr pipe is full,
//! so stderr is drained on its own thread and only its tail is kept for error messages. A child
//! whose reader went away blocks forever in `write()` (ffmpeg's SIGTERM handler cannot break
//! that), so dropping a [`Child`] kills it with SIGKILL and waits for it. And a child reading a
//! hostile file may simply never finish, so short commands run under a [`Watch`]: a deadline,
//! and the caller's cancel flag, looked at every few milliseconds. Every running child is also
//! listed, so a process that must exit now can kill them all ([`kill_all`]).

use std::collections::HashSet;
use std::io::Read;
use std::process::{ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{EngineError, Result};

/// How much of a child's stderr we keep for error messages.
const STDERR_TAIL_BYTES: usize = 4096;
/// How often a watched child's deadline and cancel flag are looked at.
const POLL: Duration = Duration::from_millis(20);

/// Process ids of the children that are running now.
static RUNNING: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

fn running() -> std::sync::MutexGuard<'static, Option<HashSet<u32>>> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Kills (SIGKILL) every ffmpeg and ffprobe child this process has running: the last step of a
/// shutdown that cannot wait for them. Their owners still reap them if they get the chance.
pub fn kill_all() -> usize {
    let pids: Vec<u32> = running().as_ref().map(|set| set.iter().copied().collect()).unwrap_or_default();
    for &pid in &pids {
        // SAFETY: kill(2) has no memory effects; the pid is one of our children not yet reaped
        // (it leaves the list before it is waited for), so it cannot name another process.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    pids.len()
}

/// When a short-lived child must stop: at its deadline, or as soon as its caller gives up.
pub(crate) struct Watch<'a> {
    /// Time after which the child is killed and the command fails with [`EngineError::TimedOut`].
    pub deadline: Instant,
    /// The caller's cancel flag: true kills the child and fails with [`EngineError::Cancelled`].
    pub cancelled: &'a dyn Fn() -> bool,
}

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
        running().get_or_insert_with(HashSet::new).insert(inner.id());
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
        self.forget();
        let status = self.inner.wait().map_err(EngineError::io(format!("waiting for {}", self.stage)))?;
        self.reaped = true;
        Ok(status)
    }

    /// Takes the child off the list of running children, just before it is reaped.
    fn forget(&self) {
        if let Some(set) = running().as_mut() {
            set.remove(&self.inner.id());
        }
    }

    fn stderr_text(&mut self) -> String {
        self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.inner.kill();
            self.forget();
            let _ = self.inner.wait();
        }
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
    }
}

/// The last meaningful line(s) of a tool's stderr, or its exit status when it said nothing.
fn describe_failure(status: ExitStatus, stderr: &str) -> String {
    let lines: Vec<String> = stderr.lines().map(|l| without_addresses(l.trim())).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return format!("exited with {status}");
    }
    let start = lines.len().saturating_sub(3);
    lines[start..].join(" / ")
}

/// ffmpeg's log lines name their source as `[h264 @ 0x55d1046b2ac0]`: the address means nothing
/// to a user (and tells an attacker where the heap is), so it goes.
fn without_addresses(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(" @ 0x") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 5..];
        let hex = after.bytes().take_while(u8::is_ascii_hexdigit).count();
        rest = &after[hex..];
    }
    out.push_str(rest);
    out
}

/// Runs a short command to completion under `watch` and returns its stdout (used for ffprobe).
pub(crate) fn run_to_string(program: &str, args: &[String], stage: &'static str, watch: &Watch) -> Result<String> {
    let mut child = Child::spawn(program, args, stage, false)?;
    let mut stdout = child.take_stdout();
    let reader = std::thread::Builder::new()
        .name(format!("{stage}-stdout"))
        .spawn(move || {
            let mut out = String::new();
            stdout.read_to_string(&mut out).map(|_| out)
        })
        .map_err(EngineError::io("starting a reader"))?;
    let started = Instant::now();
    // The child closes its stdout when it exits; it is reaped (by `finish`) only then, so that
    // it is never reaped while still on the list of running children.
    while !reader.is_finished() {
        if (watch.cancelled)() {
            return Err(EngineError::Cancelled);
        }
        if Instant::now() >= watch.deadline {
            // Dropping the child kills and reaps it; its stdout then closes and the reader ends.
            return Err(EngineError::TimedOut { stage, seconds: started.elapsed().as_secs() });
        }
        std::thread::sleep(POLL);
    }
    let out = reader
        .join()
        .map_err(|_| EngineError::Io {
            context: format!("reading {program} output"),
            source: std::io::Error::other("the reader panicked"),
        })?
        .map_err(EngineError::io(format!("reading {program} output")))?;
    child.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_past_its_deadline_is_killed_and_reaped() {
        let started = Instant::now();
        let watch = Watch { deadline: started + Duration::from_millis(300), cancelled: &|| false };
        let err = run_to_string("sleep", &["30".to_string()], "probe", &watch).unwrap_err();
        assert!(matches!(err, EngineError::TimedOut { stage: "probe", .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        assert!(running().as_ref().is_none_or(|set| set.is_empty()), "a child is still listed as running");
    }

    #[test]
    fn a_cancelled_caller_stops_its_child() {
        let started = Instant::now();
        let cancel_at = started + Duration::from_millis(200);
        let watch = Watch { deadline: started + Duration::from_secs(60), cancelled: &|| Instant::now() > cancel_at };
        let err = run_to_string("sleep", &["30".to_string()], "probe", &watch).unwrap_err();
        assert!(matches!(err, EngineError::Cancelled), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    }

    #[test]
    fn heap_addresses_are_left_out_of_messages() {
        assert_eq!(
            without_addresses("[h264 @ 0x55d1046b2ac0] [IMGUTILS @ 0x7ffc77446880] Picture size 8192x8192"),
            "[h264] [IMGUTILS] Picture size 8192x8192"
        );
        assert_eq!(without_addresses("plain line"), "plain line");
    }
}
