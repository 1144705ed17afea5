//! Single-member etcd clusters from the system's `/usr/bin/etcd`: a throwaway one per test, or
//! one in a directory of the caller's that outlives the program (the dev cluster).
//!
//! `Etcd::start()` runs etcd with a fresh data directory and free client and peer ports on
//! 127.0.0.1 and waits until it reports itself healthy. Fault tests stop, kill and restart it;
//! a restart keeps the data directory and the ports, so clients can reconnect to the same
//! endpoint. Dropping the value kills the server and removes the directory.
//!
//! `Etcd::start_in(dir, ...)` does the same in `dir` (kept), `Etcd::open_in` starts the server of
//! such a directory again on its ports, and `Etcd::detach` leaves the server running when the
//! value goes; a server in a kept directory is stopped gracefully (SIGTERM) on drop.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::ports::free_tcp_ports;
use crate::process::{ChildProcess, HarnessDir, HarnessError};
use rustix::process::Signal;

/// Environment variable naming the etcd binary, overriding `/usr/bin/etcd`.
pub const BINARY_ENV: &str = "STRONGROOM_ETCD";

const DEFAULT_BINARY: &str = "/usr/bin/etcd";
const MEMBER_NAME: &str = "strongroom-test";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
const START_ATTEMPTS: usize = 5;

/// A running etcd server in its own directory.
#[derive(Debug)]
pub struct Etcd {
    binary: PathBuf,
    data_dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    log_dir: PathBuf,
    server: Option<ChildProcess>,
    // Declared last: removed (if temporary) after the server has stopped.
    dir: HarnessDir,
}

impl Etcd {
    /// Starts a server and waits until it is healthy.
    pub fn start() -> Result<Self, HarnessError> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("strongroom-etcd-")
            .tempdir()
            .map_err(|e| HarnessError::io("cannot create a temporary directory", e))?;
        let log_dir = dir.path().to_path_buf();
        Self::start_fresh(binary, HarnessDir::Temp(dir), log_dir)
    }

    /// Like [`Etcd::start`] in `dir` (created if missing; it must not hold a data directory
    /// yet), which is kept: the data in `<dir>/data`, the logs (`etcd.stderr.log`, ...) in
    /// `log_dir`.
    pub fn start_in(dir: &Path, log_dir: &Path) -> Result<Self, HarnessError> {
        let binary = find_binary()?;
        create_dirs(dir, log_dir)?;
        if dir.join("data").exists() {
            return Err(HarnessError::Misuse(format!(
                "{} already holds an etcd data directory: start it with Etcd::open_in",
                dir.display()
            )));
        }
        Self::start_fresh(
            binary,
            HarnessDir::Kept(dir.to_path_buf()),
            log_dir.to_path_buf(),
        )
    }

    /// Starts the server of a directory [`Etcd::start_in`] prepared, with its data and on its
    /// ports from before, and waits until it is healthy. The directory is kept.
    pub fn open_in(
        dir: &Path,
        log_dir: &Path,
        client_port: u16,
        peer_port: u16,
    ) -> Result<Self, HarnessError> {
        let binary = find_binary()?;
        let data_dir = dir.join("data");
        if !data_dir.is_dir() {
            return Err(HarnessError::Misuse(format!(
                "{} holds no etcd data directory",
                dir.display()
            )));
        }
        create_dirs(dir, log_dir)?;
        let mut etcd = Self {
            binary,
            data_dir,
            client_port,
            peer_port,
            log_dir: log_dir.to_path_buf(),
            server: None,
            dir: HarnessDir::Kept(dir.to_path_buf()),
        };
        etcd.spawn_server()?;
        Ok(etcd)
    }

    fn start_fresh(
        binary: PathBuf,
        dir: HarnessDir,
        log_dir: PathBuf,
    ) -> Result<Self, HarnessError> {
        let mut etcd = Self {
            binary,
            data_dir: dir.path().join("data"),
            client_port: 0,
            peer_port: 0,
            log_dir,
            server: None,
            dir,
        };
        for attempt in 1..=START_ATTEMPTS {
            let ports = free_tcp_ports(2)?;
            let (Some(&client), Some(&peer)) = (ports.first(), ports.get(1)) else {
                return Err(HarnessError::Unexpected("no ports were chosen".to_owned()));
            };
            etcd.client_port = client;
            etcd.peer_port = peer;
            match etcd.spawn_server() {
                Ok(()) => return Ok(etcd),
                Err(e) if e.is_address_in_use() && attempt < START_ATTEMPTS => {
                    // A failed first start can leave a half-initialized member behind.
                    std::fs::remove_dir_all(&etcd.data_dir).ok();
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(HarnessError::Unexpected(format!(
            "etcd found no free ports in {START_ATTEMPTS} attempts"
        )))
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port on 127.0.0.1.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The peer port on 127.0.0.1.
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server's log files.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The process id of the server, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(ChildProcess::id)
    }

    /// Leaves the server running when this value is dropped and returns its pid (`None` when
    /// no server runs). Only for a server whose directory is kept ([`Etcd::start_in`],
    /// [`Etcd::open_in`]): stop it later by its pid (SIGTERM, see [`crate::detached`]).
    pub fn detach(&mut self) -> Result<Option<u32>, HarnessError> {
        if !self.dir.is_kept() {
            return Err(HarnessError::Misuse(
                "a server in a temporary directory cannot outlive it: use Etcd::start_in"
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

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> Result<bool, HarnessError> {
        match &mut self.server {
            Some(server) => Ok(server.try_status()?.is_none()),
            None => Ok(false),
        }
    }

    /// Stops the server gracefully (SIGTERM), killing it if it does not exit in time.
    pub fn stop(&mut self) -> Result<(), HarnessError> {
        if let Some(mut server) = self.server.take() {
            server.stop_with(Signal::TERM, STOP_GRACE)?;
        }
        Ok(())
    }

    /// Kills the server (SIGKILL) as a crash would.
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        if let Some(mut server) = self.server.take() {
            server.kill()?;
        }
        Ok(())
    }

    /// Starts the server again with the same data and ports (stopping it first if it runs),
    /// and waits until it is healthy.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop()?;
        self.spawn_server()
    }

    /// The tail of the server's logs.
    pub fn log_tail(&self) -> Option<String> {
        self.server.as_ref().map(ChildProcess::log_tail)
    }

    fn spawn_server(&mut self) -> Result<(), HarnessError> {
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(&self.binary);
        // A clean environment: stray ETCD_* variables would override the flags.
        command.env_clear().current_dir(self.dir.path());
        if std::env::consts::ARCH == "aarch64" {
            // etcd 3.4 marks arm64 as unsupported unless told otherwise.
            command.env("ETCD_UNSUPPORTED_ARCH", "arm64");
        }
        command
            .args(["--name", MEMBER_NAME])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .arg("--initial-cluster")
            .arg(format!("{MEMBER_NAME}={peer_url}"))
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        let mut server = ChildProcess::spawn("etcd", command, &self.log_dir)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        let waited = server.wait_until("healthy", START_TIMEOUT, || Ok(is_healthy(addr)));
        if let Err(e) = waited {
            // Stop before another attempt or before the error is returned.
            let _ = server.kill();
            return Err(e);
        }
        self.server = Some(server);
        Ok(())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Nothing useful can be done with an error while dropping; ChildProcess kills on drop.
        // A server whose data is kept is stopped gracefully; a detached one keeps running.
        let _ = if self.dir.is_kept() {
            self.stop()
        } else {
            self.kill()
        };
    }
}

fn find_binary() -> Result<PathBuf, HarnessError> {
    let binary = std::env::var_os(BINARY_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY));
    if !binary.is_file() {
        return Err(HarnessError::NotFound {
            what: format!("etcd at {}", binary.display()),
            hint: "install the Debian package etcd-server, or run deploy/dev/setup.sh".to_owned(),
        });
    }
    Ok(binary)
}

fn create_dirs(dir: &Path, log_dir: &Path) -> Result<(), HarnessError> {
    for d in [dir, log_dir] {
        std::fs::create_dir_all(d)
            .map_err(|e| HarnessError::io(format!("cannot create {}", d.display()), e))?;
    }
    Ok(())
}

/// Asks etcd's `/health` endpoint (plain HTTP on the client port) whether the member is
/// healthy, which includes having a leader.
fn is_healthy(addr: SocketAddr) -> bool {
    let ask = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, HEALTH_TIMEOUT)?;
        stream.set_read_timeout(Some(HEALTH_TIMEOUT))?;
        stream.set_write_timeout(Some(HEALTH_TIMEOUT))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    ask()
        .map(|r| {
            let status_ok = r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200");
            status_ok && r.contains("\"health\":\"true\"")
        })
        .unwrap_or(false)
}
