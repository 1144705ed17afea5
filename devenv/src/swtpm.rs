//! Software TPMs for attestation tests: `swtpm` (Debian `swtpm`) serving a TPM 2.0 on
//! loopback, one per node, with a measured boot simulated through `tpm2_pcrextend` (Debian
//! `tpm2-tools`). A node reaches its TPM through the TCTI [`Swtpm::tcti`]; the TPM state lives
//! in a temporary directory and the process is killed on drop.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{ChildProcess, HarnessError, run};

/// The tools the TPM tests and a node quoting with a TPM need.
pub const TOOLS: [&str; 9] = [
    "swtpm",
    "tpm2_createek",
    "tpm2_createak",
    "tpm2_evictcontrol",
    "tpm2_flushcontext",
    "tpm2_readpublic",
    "tpm2_pcrextend",
    "tpm2_pcrread",
    "tpm2_quote",
];

const START_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 5;

/// The tools of [`TOOLS`] that are not on `PATH`.
pub fn missing_tools() -> Vec<&'static str> {
    TOOLS.iter().copied().filter(|t| !on_path(t)).collect()
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// A running software TPM.
#[derive(Debug)]
pub struct Swtpm {
    name: String,
    port: u16,
    process: ChildProcess,
    // Declared last: removed after the process is gone.
    _state: tempfile::TempDir,
}

impl Swtpm {
    /// Starts a TPM 2.0 (already through `TPM2_Startup`) on two consecutive free loopback
    /// ports, logging to `<log_dir>/<name>.*.log`.
    pub fn start(name: &str, log_dir: &Path) -> Result<Self, HarnessError> {
        let missing = missing_tools();
        if !missing.is_empty() {
            return Err(HarnessError::NotFound {
                what: missing.join(", "),
                hint: "install the Debian packages swtpm and tpm2-tools (deploy/dev/setup.sh does)"
                    .into(),
            });
        }
        let state = tempfile::Builder::new()
            .prefix("strongroom-swtpm-")
            .tempdir()
            .map_err(|e| HarnessError::io("cannot create a temporary directory", e))?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port_pair()?;
            let mut command = Command::new("swtpm");
            command
                .args(["socket", "--tpm2", "--flags", "startup-clear"])
                .arg("--tpmstate")
                .arg(format!("dir={}", state.path().display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1));
            let mut process = ChildProcess::spawn(name, command, log_dir)?;
            let started = Instant::now();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            loop {
                if let Some(status) = process.try_status()? {
                    last = Some(HarnessError::Exited {
                        name: name.to_owned(),
                        status,
                        waiting_for: format!("listening on {addr}"),
                        logs: process.log_tail(),
                    });
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Ok(Self {
                        name: name.to_owned(),
                        port,
                        process,
                        _state: state,
                    });
                }
                if started.elapsed() > START_TIMEOUT {
                    let _ = process.kill();
                    last = Some(HarnessError::Timeout {
                        name: name.to_owned(),
                        waiting_for: format!("listening on {addr}"),
                        waited: START_TIMEOUT,
                        logs: process.log_tail(),
                    });
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::Unexpected("swtpm did not start".into())))
    }

    /// The tpm2-tools TCTI of this TPM (`[attestation.tpm] tcti` of the node using it).
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Extends `measurement` into PCR `index` of the SHA-256 bank, as a boot stage would.
    pub fn extend(&self, index: u8, measurement: &[u8; 32]) -> Result<(), HarnessError> {
        let mut command = Command::new("tpm2_pcrextend");
        command
            .arg(format!("{index}:sha256={}", hex::encode(measurement)))
            .env("TPM2TOOLS_TCTI", self.tcti());
        run(command).map(drop)
    }

    /// The process id of the TPM.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The name it was started under.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A free loopback port whose successor is free too: swtpm's control channel goes on the port
/// after the server's, where the swtpm TCTI expects it.
fn free_port_pair() -> Result<u16, HarnessError> {
    for _ in 0..100 {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| HarnessError::io("cannot bind a loopback port", e))?;
        let port = first
            .local_addr()
            .map_err(|e| HarnessError::io("cannot read a bound port", e))?
            .port();
        if port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err(HarnessError::Unexpected(
        "no two consecutive free ports on loopback".into(),
    ))
}
