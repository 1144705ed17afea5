//! Child processes for tests: output captured to log files, readiness waits with a deadline,
//! and no process outliving its test.
//!
//! Every error that concerns a running or exited process carries the tail of its logs, so a
//! failed start explains itself in the test output.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;

/// How many lines of each log an error shows.
const LOG_TAIL_LINES: usize = 30;
/// How many bytes at the end of a log are read to find those lines.
const LOG_TAIL_BYTES: u64 = 16 * 1024;
/// How often readiness checks and exit waits poll.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Everything that can go wrong while the harness runs servers and tools for a test.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A program the harness needs is not installed.
    #[error("{what} not found ({hint})")]
    NotFound {
        /// The program or file that is missing.
        what: String,
        /// How to install it.
        hint: String,
    },
    /// A child process exited while the harness still needed it.
    #[error("{name} exited with {status} before {waiting_for}\n{logs}")]
    Exited {
        /// The name the process was spawned under.
        name: String,
        /// Its exit status.
        status: ExitStatus,
        /// What the harness was waiting for.
        waiting_for: String,
        /// The tail of its logs.
        logs: String,
    },
    /// A child process did not become ready (or stop) in time.
    #[error("{name}: {waiting_for} did not happen within {waited:?}\n{logs}")]
    Timeout {
        /// The name the process was spawned under.
        name: String,
        /// What the harness was waiting for.
        waiting_for: String,
        /// How long it waited.
        waited: Duration,
        /// The tail of its logs.
        logs: String,
    },
    /// A short-lived tool (initdb, createdb, ...) failed.
    #[error("`{command}` failed with {status}\n{output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed.
        output: String,
    },
    /// The caller asked for something the harness cannot do in the current state.
    #[error("{0}")]
    Misuse(String),
    /// A system tool answered in a way the harness cannot use, or retries ran out.
    #[error("{0}")]
    Unexpected(String),
}

impl HarnessError {
    /// Wraps an I/O error with what the harness was doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether the failure looks like a port taken by someone else between choosing it and
    /// binding it, so that starting again on other ports may succeed.
    pub fn is_address_in_use(&self) -> bool {
        let logs = match self {
            Self::Exited { logs, .. } | Self::Timeout { logs, .. } => logs,
            _ => return false,
        };
        let logs = logs.to_ascii_lowercase();
        logs.contains("address already in use") || logs.contains("could not bind")
    }
}

/// A child process whose stdout and stderr go to log files, killed when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
}

impl ChildProcess {
    /// Spawns `command` with its output appended to `<log_dir>/<name>.stdout.log` and
    /// `<name>.stderr.log` (appended, so a restarted process keeps its earlier history).
    pub fn spawn(name: &str, mut command: Command, log_dir: &Path) -> Result<Self, HarnessError> {
        let stdout_log = log_dir.join(format!("{name}.stdout.log"));
        let stderr_log = log_dir.join(format!("{name}.stderr.log"));
        let stdout = open_log(&stdout_log)?;
        let stderr = open_log(&stderr_log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                HarnessError::io(format!("cannot start {name} ({})", describe(&command)), e)
            })?;
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout_log,
            stderr_log,
        })
    }

    /// The name the process was spawned under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating-system process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The log file that receives the process's standard output.
    pub fn stdout_log(&self) -> &Path {
        &self.stdout_log
    }

    /// The log file that receives the process's standard error.
    pub fn stderr_log(&self) -> &Path {
        &self.stderr_log
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>, HarnessError> {
        self.child
            .try_wait()
            .map_err(|e| HarnessError::io(format!("cannot query the state of {}", self.name), e))
    }

    /// Calls `ready` until it returns `true`; fails as soon as the process exits, or when
    /// `timeout` passes. A `ready` error ends the wait at once.
    pub fn wait_until<F>(
        &mut self,
        waiting_for: &str,
        timeout: Duration,
        mut ready: F,
    ) -> Result<(), HarnessError>
    where
        F: FnMut() -> Result<bool, HarnessError>,
    {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_status()? {
                return Err(HarnessError::Exited {
                    name: self.name.clone(),
                    status,
                    waiting_for: waiting_for.to_owned(),
                    logs: self.log_tail(),
                });
            }
            if ready()? {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(HarnessError::Timeout {
                    name: self.name.clone(),
                    waiting_for: waiting_for.to_owned(),
                    waited: started.elapsed(),
                    logs: self.log_tail(),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends `signal` to the process (no effect once it has exited).
    pub fn signal(&mut self, signal: Signal) -> Result<(), HarnessError> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        let pid = Pid::from_child(&self.child);
        match kill_process(pid, signal) {
            Ok(()) => Ok(()),
            // Exited between the check and the signal.
            Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(HarnessError::io(
                format!("cannot signal {} (pid {pid})", self.name),
                e.into(),
            )),
        }
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Result<ExitStatus, HarnessError> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if started.elapsed() >= timeout {
                return Err(HarnessError::Timeout {
                    name: self.name.clone(),
                    waiting_for: "exit".to_owned(),
                    waited: started.elapsed(),
                    logs: self.log_tail(),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Asks the process to stop with `signal`, and kills it if it has not exited within
    /// `grace`.
    pub fn stop_with(
        &mut self,
        signal: Signal,
        grace: Duration,
    ) -> Result<ExitStatus, HarnessError> {
        self.signal(signal)?;
        match self.wait_for_exit(grace) {
            Ok(status) => Ok(status),
            Err(HarnessError::Timeout { .. }) => self.kill(),
            Err(e) => Err(e),
        }
    }

    /// Leaves the process running: it is neither killed nor reaped when this value goes, and
    /// outlives this program (its output still goes to the log files). Returns its pid; from
    /// now on only that pid reaches it (see [`crate::detached`]).
    pub fn detach(self) -> u32 {
        let pid = self.id();
        // Forgetting the value skips the kill of `Drop`; `Child` itself holds no pipe (stdin is
        // null, the output goes to files), so nothing but a few bytes of memory is left behind.
        std::mem::forget(self);
        pid
    }

    /// Kills the process at once (SIGKILL, as a crash would end it) and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus, HarnessError> {
        if let Some(status) = self.try_status()? {
            return Ok(status);
        }
        // An error here means it exited meanwhile; wait() below reaps it either way.
        let _ = self.child.kill();
        self.child
            .wait()
            .map_err(|e| HarnessError::io(format!("cannot reap {}", self.name), e))
    }

    /// The last lines of both logs, labelled, for error messages.
    pub fn log_tail(&self) -> String {
        format!(
            "--- {} stderr ({}) ---\n{}--- {} stdout ({}) ---\n{}",
            self.name,
            self.stderr_log.display(),
            tail(&self.stderr_log, LOG_TAIL_LINES),
            self.name,
            self.stdout_log.display(),
            tail(&self.stdout_log, LOG_TAIL_LINES),
        )
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Nothing useful can be done with an error while dropping.
        let _ = self.kill();
    }
}

/// The directory a server or a cluster lives in: a temporary one, removed on drop (tests), or
/// one given by the caller that outlives this program (the dev cluster).
#[derive(Debug)]
pub(crate) enum HarnessDir {
    /// Removed when dropped.
    Temp(TempDir),
    /// Kept: the caller's.
    Kept(PathBuf),
}

impl HarnessDir {
    pub(crate) fn path(&self) -> &Path {
        match self {
            Self::Temp(dir) => dir.path(),
            Self::Kept(path) => path,
        }
    }

    /// Whether the directory outlives this value.
    pub(crate) fn is_kept(&self) -> bool {
        matches!(self, Self::Kept(_))
    }
}

/// Runs a short-lived tool to completion and fails with its output if it does not succeed.
pub fn run(mut command: Command) -> Result<String, HarnessError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HarnessError::io(format!("cannot run `{}`", describe(&command)), e))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(HarnessError::CommandFailed {
            command: describe(&command),
            status: output.status,
            output: format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
        })
    }
}

/// A command line as it would be typed, for messages.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Environment variable naming a prebuilt `strongroom` binary to use instead of building one.
pub const STRONGROOM_BINARY_ENV: &str = "STRONGROOM_BINARY";

/// The `strongroom` binary of this build, brought up to date first. The build covers the whole
/// workspace, as the test command's own build step does, so both resolve the same features and
/// this is a no-op there (a `-p strongroom` build would resolve features differently and rebuild).
///
/// The build runs once per process; `$STRONGROOM_BINARY`, if set, names a binary to use instead
/// (nothing is built then).
pub fn strongroom_binary() -> Result<PathBuf, HarnessError> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    if let Some(path) = std::env::var_os(STRONGROOM_BINARY_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(HarnessError::NotFound {
                what: format!(
                    "strongroom binary {} (from {STRONGROOM_BINARY_ENV})",
                    path.display()
                ),
                hint: format!("point {STRONGROOM_BINARY_ENV} at a built binary, or unset it"),
            })
        };
    }
    // A panic elsewhere while holding the lock leaves nothing half-done here.
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = built.as_ref() {
        return Ok(path.clone());
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut command = Command::new(env!("CARGO"));
    command
        .args(["build", "--quiet", "--workspace", "--bins"])
        .arg("--manifest-path")
        .arg(manifest);
    let status = command
        .status()
        .map_err(|e| HarnessError::io(format!("cannot run `{}`", describe(&command)), e))?;
    if !status.success() {
        return Err(HarnessError::CommandFailed {
            command: describe(&command),
            status,
            output: "(printed above) building the strongroom binary failed".to_owned(),
        });
    }
    // <target>/debug/deps/<test>-<hash> → <target>/debug/strongroom
    let exe = std::env::current_exe()
        .map_err(|e| HarnessError::io("cannot find the running test binary", e))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir
        .file_name()
        .is_some_and(|name| name == "deps" || name == "examples")
    {
        dir.pop();
    }
    let path = dir.join("strongroom");
    if !path.is_file() {
        return Err(HarnessError::NotFound {
            what: format!("strongroom binary at {}", path.display()),
            hint: format!(
                "the workspace build did not produce it next to {}; set {STRONGROOM_BINARY_ENV}",
                exe.display()
            ),
        });
    }
    *built = Some(path.clone());
    Ok(path)
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn open_log(path: &Path) -> Result<File, HarnessError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| HarnessError::io(format!("cannot open log {}", path.display()), e))
}

/// The last `lines` lines of a file, or a note saying why there are none.
fn tail(path: &Path, lines: usize) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) if text.trim().is_empty() => "(empty)\n".to_owned(),
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all.iter().skip(start).fold(String::new(), |mut out, line| {
                out.push_str(line);
                out.push('\n');
                out
            })
        }
        Err(e) => format!("(cannot read: {e})\n"),
    }
}
