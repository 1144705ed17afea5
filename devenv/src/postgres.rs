//! PostgreSQL servers from the system's server binaries: a throwaway one per test, or one in a
//! directory of the caller's that outlives the program (the dev cluster).
//!
//! `Postgres::start()` runs `initdb` into a fresh temporary directory and starts `postgres` on
//! 127.0.0.1 with a free port; its unix socket lives in the same directory, so nothing is
//! shared with another test or with a system server. The superuser is `strongroom` and
//! authentication is `trust` (loopback only). Dropping the value stops the server and removes
//! the directory.
//!
//! `Postgres::start_in(dir, ...)` does the same in `dir` (kept), `Postgres::open_in` starts the
//! server of such a directory again on its port, and `Postgres::detach` leaves the server
//! running when the value goes.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, `initdb` and `postgres`
//! run as the `postgres` system user (created by Debian's `postgresql` package), and the
//! server's directory is handed to that user, which must be able to reach it.
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::ports::free_tcp_port;
use crate::process::{ChildProcess, HarnessDir, HarnessError, effective_uid, run};

/// The superuser that `initdb` creates.
pub const SUPERUSER: &str = "strongroom";
/// Environment variable naming a directory with `initdb` and `postgres`, overriding the
/// search under `/usr/lib/postgresql`.
pub const BIN_DIR_ENV: &str = "STRONGROOM_PG_BIN";

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 5;
const PACKAGE_HINT: &str = "install the Debian package postgresql, or run deploy/dev/setup.sh";
/// Longest unix socket path the kernel accepts (`sun_path` holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What a test server promises about committed transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `fsync=off`, `full_page_writes=off`: a committed transaction survives the server being
    /// killed (its WAL is in the kernel's page cache) but not a machine crash. Commits stay
    /// synchronous (`synchronous_commit=on`), so tests that kill the server, and then check
    /// that nothing committed was lost, remain meaningful. The default: much faster on
    /// shared test machines.
    #[default]
    SurvivesProcessCrash,
    /// PostgreSQL's own defaults: every commit is flushed to disk, as in production.
    SurvivesPowerLoss,
}

/// A running PostgreSQL server in its own directory.
#[derive(Debug)]
pub struct Postgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    durability: Durability,
    run_as: Option<UnixUser>,
    log_dir: PathBuf,
    server: Option<ChildProcess>,
    // Declared last: removed (if temporary) after the server has stopped.
    dir: HarnessDir,
}

impl Postgres {
    /// Starts a server with the default (fast) durability.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with(Durability::default())
    }

    /// Starts a server with the given durability.
    pub fn start_with(durability: Durability) -> Result<Self, HarnessError> {
        let (bin_dir, run_as) = server_setup()?;
        let dir = tempfile::Builder::new()
            .prefix("strongroom-pg-")
            .tempdir_in(temp_base(run_as.is_some()))
            .map_err(|e| HarnessError::io("cannot create a temporary directory", e))?;
        let log_dir = dir.path().to_path_buf();
        Self::init_and_start(HarnessDir::Temp(dir), log_dir, durability, bin_dir, run_as)
    }

    /// Like [`Postgres::start_with`] in `dir` (created if missing; it must not hold a data
    /// directory yet), which is kept: the data in `<dir>/data`, the logs
    /// (`postgres.stderr.log`, ...) in `log_dir`. As root, `dir` is handed to the `postgres`
    /// user, which must be able to reach it (every parent directory searchable by it).
    pub fn start_in(
        dir: &Path,
        log_dir: &Path,
        durability: Durability,
    ) -> Result<Self, HarnessError> {
        let (bin_dir, run_as) = server_setup()?;
        prepare_kept_dir(dir, log_dir, run_as.as_ref())?;
        if dir.join("data").exists() {
            return Err(HarnessError::Misuse(format!(
                "{} already holds a PostgreSQL data directory: start it with Postgres::open_in",
                dir.display()
            )));
        }
        Self::init_and_start(
            HarnessDir::Kept(dir.to_path_buf()),
            log_dir.to_path_buf(),
            durability,
            bin_dir,
            run_as,
        )
    }

    /// Starts the server of a directory [`Postgres::start_in`] prepared, on `port` (its port
    /// before), and waits until it accepts connections. The directory is kept.
    pub fn open_in(
        dir: &Path,
        log_dir: &Path,
        port: u16,
        durability: Durability,
    ) -> Result<Self, HarnessError> {
        let (bin_dir, run_as) = server_setup()?;
        let data_dir = dir.join("data");
        if !data_dir.join("PG_VERSION").is_file() {
            return Err(HarnessError::Misuse(format!(
                "{} holds no PostgreSQL data directory (no PG_VERSION)",
                data_dir.display()
            )));
        }
        prepare_kept_dir(dir, log_dir, run_as.as_ref())?;
        let mut postgres = Self {
            bin_dir,
            data_dir,
            port,
            durability,
            run_as,
            log_dir: log_dir.to_path_buf(),
            server: None,
            dir: HarnessDir::Kept(dir.to_path_buf()),
        };
        postgres.spawn_after_crash()?;
        Ok(postgres)
    }

    fn init_and_start(
        dir: HarnessDir,
        log_dir: PathBuf,
        durability: Durability,
        bin_dir: PathBuf,
        run_as: Option<UnixUser>,
    ) -> Result<Self, HarnessError> {
        if let Some(user) = &run_as {
            chown(dir.path(), Some(user.uid), Some(user.gid)).map_err(|e| {
                HarnessError::io(
                    format!("cannot hand {} to postgres", dir.path().display()),
                    e,
                )
            })?;
        }
        let data_dir = dir.path().join("data");

        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .arg("--pgdata")
            .arg(&data_dir)
            .args(["--username", SUPERUSER, "--auth", "trust"])
            .args(["--encoding", "UTF8", "--locale", "C", "--no-sync"]);
        prepare(&mut initdb, dir.path(), run_as.as_ref());
        run(initdb)?;

        let mut postgres = Self {
            bin_dir,
            data_dir,
            port: 0,
            durability,
            run_as,
            log_dir,
            server: None,
            dir,
        };
        for attempt in 1..=START_ATTEMPTS {
            postgres.port = free_tcp_port()?;
            match postgres.spawn_server() {
                Ok(()) => return Ok(postgres),
                Err(e) if e.is_address_in_use() && attempt < START_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        }
        Err(HarnessError::Unexpected(format!(
            "PostgreSQL found no free port in {START_ATTEMPTS} attempts"
        )))
    }

    /// Leaves the server running when this value is dropped and returns its pid (`None` when
    /// no server runs). Only for a server whose directory is kept ([`Postgres::start_in`],
    /// [`Postgres::open_in`]): stop it later by its pid (SIGINT, see [`crate::detached`]).
    pub fn detach(&mut self) -> Result<Option<u32>, HarnessError> {
        if !self.dir.is_kept() {
            return Err(HarnessError::Misuse(
                "a server in a temporary directory cannot outlive it: use Postgres::start_in"
                    .to_owned(),
            ));
        }
        let Some(mut server) = self.server.take() else {
            return Ok(None);
        };
        if server.try_status()?.is_some() {
            return Ok(None);
        }
        Ok(Some(server.detach()))
    }

    /// The process id of the server, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(ChildProcess::id)
    }

    /// The durability the server runs with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The directory holding the server's log files.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's unix socket (unless its path is too long for a
    /// socket; then the server listens on TCP only).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A connection URL for the `postgres` database as the superuser.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// A connection URL for `database` as the superuser.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database and returns its connection URL.
    pub fn create_database(&self, name: &str) -> Result<String, HarnessError> {
        let mut createdb = Command::new(self.bin_dir.join("createdb"));
        createdb
            .args(["--host", "127.0.0.1", "--username", SUPERUSER])
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--")
            .arg(name);
        run(createdb)?;
        Ok(self.url_for(name))
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> Result<bool, HarnessError> {
        match &mut self.server {
            Some(server) => Ok(server.try_status()?.is_none()),
            None => Ok(false),
        }
    }

    /// Stops the server with a fast shutdown (SIGINT, what `pg_ctl stop -m fast` sends:
    /// sessions are ended, then a checkpoint is written), killing it if it does not exit
    /// in time. The data directory is kept for [`Postgres::restart`].
    pub fn stop(&mut self) -> Result<(), HarnessError> {
        if let Some(mut server) = self.server.take() {
            server.stop_with(Signal::INT, STOP_GRACE)?;
        }
        Ok(())
    }

    /// Kills the server (SIGKILL) as a crash would: no shutdown checkpoint, and the next
    /// start runs crash recovery.
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        if let Some(mut server) = self.server.take() {
            server.kill()?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and data directory (stopping it first if it
    /// runs), and waits until it accepts connections.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop()?;
        self.spawn_after_crash()
    }

    /// Starts the server, retrying while processes of a killed server are still exiting.
    fn spawn_after_crash(&mut self) -> Result<(), HarnessError> {
        // After a kill, the old server's background processes notice their postmaster is gone
        // and exit within moments; until then PostgreSQL refuses to start on the same data.
        let started = Instant::now();
        loop {
            match self.spawn_server() {
                Err(e) if left_behind_by_killed_server(&e) && started.elapsed() < STOP_GRACE => {
                    thread::sleep(Duration::from_millis(200));
                }
                result => return result,
            }
        }
    }

    /// The tail of the server's logs.
    pub fn log_tail(&self) -> Option<String> {
        self.server.as_ref().map(ChildProcess::log_tail)
    }

    fn spawn_server(&mut self) -> Result<(), HarnessError> {
        let socket = self.dir.path().join(format!(".s.PGSQL.{}", self.port));
        let socket_dir = if socket.as_os_str().len() <= MAX_SOCKET_PATH {
            self.dir.path().display().to_string()
        } else {
            // TCP only: every client of the harness connects over TCP.
            String::new()
        };
        let mut command = Command::new(self.bin_dir.join("postgres"));
        command
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={socket_dir}"))
            .args(["-c", "shared_buffers=32MB", "-c", "max_connections=100"])
            .args([
                "-c",
                "logging_collector=off",
                "-c",
                "log_destination=stderr",
            ]);
        if self.durability == Durability::SurvivesProcessCrash {
            command.args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        }
        prepare(&mut command, self.dir.path(), self.run_as.as_ref());
        let mut server = ChildProcess::spawn("postgres", command, &self.log_dir)?;
        let pid_file = self.data_dir.join("postmaster.pid");
        let pid = server.id();
        let waited = server.wait_until("accepting connections", START_TIMEOUT, || {
            Ok(postmaster_ready(&pid_file, pid))
        });
        if let Err(e) = waited {
            // Stop before another attempt or before the error is returned.
            let _ = server.kill();
            return Err(e);
        }
        self.server = Some(server);
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Nothing useful can be done with an error while dropping; ChildProcess kills on drop.
        // A detached server is no longer held here and keeps running.
        let _ = self.stop();
    }
}

/// A system user the server runs as when the tests run as root.
#[derive(Clone, Debug)]
struct UnixUser {
    uid: u32,
    gid: u32,
}

impl UnixUser {
    fn lookup(name: &str) -> Result<Self, HarnessError> {
        let mut getent = Command::new("getent");
        getent.args(["passwd", name]);
        let line = run(getent).map_err(|_| HarnessError::NotFound {
            what: format!("system user '{name}'"),
            hint: format!(
                "PostgreSQL refuses to run as root and the harness runs it as '{name}': {PACKAGE_HINT}"
            ),
        })?;
        // name:password:uid:gid:gecos:home:shell
        let mut fields = line.trim().split(':').skip(2);
        let mut number = || fields.next().and_then(|f| f.parse::<u32>().ok());
        match (number(), number()) {
            (Some(uid), Some(gid)) => Ok(Self { uid, gid }),
            _ => Err(HarnessError::Unexpected(format!(
                "cannot read uid and gid of '{name}' from `getent passwd {name}`: {line}"
            ))),
        }
    }
}

/// The server binaries, and the user to run them as (`postgres` when this process is root).
fn server_setup() -> Result<(PathBuf, Option<UnixUser>), HarnessError> {
    let bin_dir = find_bin_dir()?;
    let run_as = if effective_uid() == 0 {
        Some(UnixUser::lookup("postgres")?)
    } else {
        None
    };
    Ok((bin_dir, run_as))
}

/// Creates a kept server directory and its log directory; as root, checks that the `postgres`
/// user can reach the server directory and hands it over.
fn prepare_kept_dir(
    dir: &Path,
    log_dir: &Path,
    run_as: Option<&UnixUser>,
) -> Result<(), HarnessError> {
    for d in [dir, log_dir] {
        fs::create_dir_all(d)
            .map_err(|e| HarnessError::io(format!("cannot create {}", d.display()), e))?;
    }
    if let Some(user) = run_as {
        check_reachable(dir, user)?;
        chown(dir, Some(user.uid), Some(user.gid)).map_err(|e| {
            HarnessError::io(format!("cannot hand {} to postgres", dir.display()), e)
        })?;
    }
    Ok(())
}

/// Fails, naming the directory and the fix, when `user` cannot search every parent of `dir`.
fn check_reachable(dir: &Path, user: &UnixUser) -> Result<(), HarnessError> {
    let dir = fs::canonicalize(dir)
        .map_err(|e| HarnessError::io(format!("cannot resolve {}", dir.display()), e))?;
    for parent in dir.ancestors().skip(1) {
        let meta = fs::metadata(parent)
            .map_err(|e| HarnessError::io(format!("cannot read {}", parent.display()), e))?;
        let mode = meta.permissions().mode();
        let searchable = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !searchable {
            return Err(HarnessError::Misuse(format!(
                "PostgreSQL refuses to run as root, so it runs as the postgres user, which cannot \
                 reach {}: {} (mode {:o}) is not searchable by it. Use a directory whose parents \
                 are all searchable (e.g. under /srv or /tmp), allow it with \
                 `chmod o+x {}`, or run as a regular user",
                dir.display(),
                parent.display(),
                mode & 0o7777,
                parent.display()
            )));
        }
    }
    Ok(())
}

/// Sets up a server-side command: empty environment, working directory inside the test's
/// directory, and the `postgres` user when running as root.
fn prepare(command: &mut Command, dir: &Path, run_as: Option<&UnixUser>) {
    command
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LC_ALL", "C")
        .current_dir(dir);
    if let Some(user) = run_as {
        // std drops supplementary groups when switching from root to another uid.
        command.uid(user.uid).gid(user.gid);
    }
}

/// Where temporary directories go. A server running as `postgres` must be able to reach its
/// directory, so as root the system temporary directory is used only when every component of
/// its path is world-searchable, and `/tmp` otherwise.
fn temp_base(other_user: bool) -> PathBuf {
    let base = std::env::temp_dir();
    if !other_user {
        return base;
    }
    let searchable = base.ancestors().all(|p| {
        fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    });
    if searchable {
        base
    } else {
        PathBuf::from("/tmp")
    }
}

/// Whether a start failed only because processes of a killed server are still exiting.
fn left_behind_by_killed_server(error: &HarnessError) -> bool {
    match error {
        HarnessError::Exited { logs, .. } => {
            logs.contains("pre-existing shared memory block")
                || logs.contains("lock file \"postmaster.pid\" already exists")
        }
        _ => false,
    }
}

/// The newest PostgreSQL server binaries: `$STRONGROOM_PG_BIN`, else the highest version
/// under `/usr/lib/postgresql/<version>/bin`.
fn find_bin_dir() -> Result<PathBuf, HarnessError> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        return if dir.join("postgres").is_file() {
            Ok(dir)
        } else {
            Err(HarnessError::NotFound {
                what: format!("postgres in {} (from {BIN_DIR_ENV})", dir.display()),
                hint: format!("point {BIN_DIR_ENV} at a PostgreSQL bin directory, or unset it"),
            })
        };
    }
    let root = Path::new("/usr/lib/postgresql");
    let entries = fs::read_dir(root).map_err(|_| HarnessError::NotFound {
        what: "PostgreSQL server binaries under /usr/lib/postgresql".to_owned(),
        hint: PACKAGE_HINT.to_owned(),
    })?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = version_key(&entry.file_name().to_string_lossy())?;
            let bin = entry.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file())
                .then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
        .ok_or_else(|| HarnessError::NotFound {
            what: "PostgreSQL server binaries under /usr/lib/postgresql/<version>/bin".to_owned(),
            hint: PACKAGE_HINT.to_owned(),
        })
}

/// "15" → [15], "9.6" → [9, 6]; not a version → None.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// PostgreSQL writes its pid on line 1 of `postmaster.pid` and "ready" on line 8 once it
/// accepts connections (this is what `pg_ctl start -w` waits for). The pid tells a fresh file
/// from one a killed server left behind.
fn postmaster_ready(pid_file: &Path, pid: u32) -> bool {
    let Ok(text) = fs::read_to_string(pid_file) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines.first() == Some(&pid.to_string().as_str()) && lines.get(7) == Some(&"ready")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::describe;

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("10") > version_key("9.6"));
        assert!(version_key("17") > version_key("15"));
        assert_eq!(version_key("main"), None);
    }

    #[test]
    fn commands_are_described_for_errors() {
        let mut command = Command::new("initdb");
        command.args(["-D", "/x"]);
        assert_eq!(describe(&command), "initdb -D /x");
    }
}
