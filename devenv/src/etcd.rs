//! A throwaway single-member etcd cluster per test, from the system's `/usr/bin/etcd`.
//!
//! `Etcd::start()` runs etcd with a fresh data directory and free client and peer ports on
//! 127.0.0.1 and waits until it reports itself healthy. Fault tests stop, kill and restart it;
//! a restart keeps the data directory and the ports, so clients can reconnect to the same
//! endpoint. Dropping the value kills the server and removes the directory.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;
use tempfile::TempDir;

use crate::ports::free_tcp_ports;
use crate::process::{ChildProcess, HarnessError};

/// Environment variable naming the etcd binary, overriding `/usr/bin/etcd`.
pub const BINARY_ENV: &str = "STRONGROOM_ETCD";

const DEFAULT_BINARY: &str = "/usr/bin/etcd";
const MEMBER_NAME: &str = "strongroom-test";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
const START_ATTEMPTS: usize = 5;

/// A running etcd server in its own temporary directory.
#[derive(Debug)]
pub struct Etcd {
    binary: PathBuf,
    data_dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    server: Option<ChildProcess>,
    // Declared last: removed after the server has stopped.
    dir: TempDir,
}

impl Etcd {
    /// Starts a server and waits until it is healthy.
    pub fn start() -> Result<Self, HarnessError> {
        let binary = std::env::var_os(BINARY_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY));
        if !binary.is_file() {
            return Err(HarnessError::NotFound {
                what: format!("etcd at {}", binary.display()),
                hint: "install the Debian package etcd-server, or run deploy/dev/setup.sh"
                    .to_owned(),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("strongroom-etcd-")
            .tempdir()
            .map_err(|e| HarnessError::io("cannot create a temporary directory", e))?;
        let mut etcd = Self {
            binary,
            data_dir: dir.path().join("data"),
            client_port: 0,
            peer_port: 0,
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

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
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
        let mut server = ChildProcess::spawn("etcd", command, self.dir.path())?;
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
        let _ = self.kill();
    }
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
