//! Processes of a persistent cluster that outlive the program that started them (the dev
//! cluster of `strongroom dev up`), known only by their pid files.
//!
//! A persistent cluster (see [`crate::cluster::TestCluster::provision_in`]) records each process
//! it starts in `<dir>/pids/<name>.pid` (the pid, one line): `node-1`, ..., `postgres`, `etcd`.
//! A later program finds them there, asks whether they still run and stops them.
//!
//! A pid file can outlive its process (a crash, a reboot) and the pid can be reused by an
//! unrelated process. So a recorded process counts as running only when `/proc/<pid>` exists,
//! is not a zombie, and its command line names the cluster directory: every process of a
//! cluster is started with a path inside it (`--config`, `-D`, `--data-dir`).

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::process::HarnessError;

/// The directory, inside a persistent cluster's directory, holding its pid files.
pub const PIDS_DIR: &str = "pids";
/// Name of the PostgreSQL server's pid file (without `.pid`).
pub const POSTGRES: &str = "postgres";
/// Name of the etcd server's pid file (without `.pid`).
pub const ETCD: &str = "etcd";

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A process recorded in a pid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedProcess {
    /// The name of the pid file without `.pid`: `node-1`, `postgres`, `etcd`.
    pub name: String,
    /// The recorded pid.
    pub pid: u32,
    /// The pid file.
    pub pid_file: PathBuf,
    /// Whether the process still runs (see the module docs).
    pub running: bool,
}

/// How [`stop_all`] ended a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It exited after the polite signal.
    Exited,
    /// It did not exit within the grace period and was killed (SIGKILL).
    Killed,
    /// It was not running any more; only its pid file was removed.
    NotRunning,
}

/// A process [`stop_all`] dealt with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedProcess {
    /// As in [`RecordedProcess::name`].
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// What happened.
    pub outcome: StopOutcome,
    /// The signal it was asked to stop with (`SIGTERM`, `SIGINT`).
    pub signal: &'static str,
}

/// Writes `<cluster_dir>/pids/<name>.pid`.
pub fn record(cluster_dir: &Path, name: &str, pid: u32) -> Result<(), HarnessError> {
    let dir = cluster_dir.join(PIDS_DIR);
    fs::create_dir_all(&dir)
        .map_err(|e| HarnessError::io(format!("cannot create {}", dir.display()), e))?;
    let path = pid_file(cluster_dir, name);
    fs::write(&path, format!("{pid}\n"))
        .map_err(|e| HarnessError::io(format!("cannot write {}", path.display()), e))
}

/// Removes `<cluster_dir>/pids/<name>.pid` if it exists.
pub fn forget(cluster_dir: &Path, name: &str) {
    // A missing file is what we want; any other error leaves a stale file that the liveness
    // check sees through.
    let _ = fs::remove_file(pid_file(cluster_dir, name));
}

/// The pid file of process `name`.
pub fn pid_file(cluster_dir: &Path, name: &str) -> PathBuf {
    cluster_dir.join(PIDS_DIR).join(format!("{name}.pid"))
}

/// Every process recorded in `<cluster_dir>/pids`, nodes first (by name), then etcd and
/// PostgreSQL, each with whether it still runs. No pid directory: none.
pub fn recorded(cluster_dir: &Path) -> Result<Vec<RecordedProcess>, HarnessError> {
    let dir = cluster_dir.join(PIDS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(HarnessError::io(
                format!("cannot read {}", dir.display()),
                e,
            ));
        }
    };
    let marker = marker_of(cluster_dir);
    let mut found = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| HarnessError::io(format!("cannot read {}", dir.display()), e))?;
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pid"))
            .map(str::to_owned)
        else {
            continue;
        };
        let text = fs::read_to_string(&path)
            .map_err(|e| HarnessError::io(format!("cannot read {}", path.display()), e))?;
        let Ok(pid) = text.trim().parse::<u32>() else {
            // Half-written or foreign: nothing to stop, and a stale file is removed by stop_all.
            found.push(RecordedProcess {
                name,
                pid: 0,
                pid_file: path,
                running: false,
            });
            continue;
        };
        found.push(RecordedProcess {
            running: is_running(pid, &marker),
            name,
            pid,
            pid_file: path,
        });
    }
    found.sort_by(|a, b| {
        order(&a.name)
            .cmp(&order(&b.name))
            .then(a.name.cmp(&b.name))
    });
    Ok(found)
}

/// Stops every process recorded in `<cluster_dir>/pids`: first the nodes (SIGTERM, all at
/// once), then etcd (SIGTERM) and PostgreSQL (SIGINT: its fast shutdown, what
/// `pg_ctl stop -m fast` sends); each group is waited for and whatever still runs after
/// `grace` is killed (SIGKILL). Every pid file is removed, also those of processes that no
/// longer ran.
pub fn stop_all(cluster_dir: &Path, grace: Duration) -> Result<Vec<StoppedProcess>, HarnessError> {
    let processes = recorded(cluster_dir)?;
    let (nodes, servers): (Vec<_>, Vec<_>) = processes
        .into_iter()
        .partition(|p| p.name != POSTGRES && p.name != ETCD);
    let marker = marker_of(cluster_dir);
    let mut stopped = stop_group(&nodes, grace, &marker)?;
    stopped.extend(stop_group(&servers, grace, &marker)?);
    for p in nodes.iter().chain(&servers) {
        let _ = fs::remove_file(&p.pid_file);
    }
    Ok(stopped)
}

/// Whether `pid` is a live (not zombie) process whose command line contains `marker`.
pub fn is_running(pid: u32, marker: &str) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) else {
        return false;
    };
    // "<pid> (<comm>) <state> ...": the command name may itself hold spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z" | "X" | "x") | None) {
        return false;
    }
    match fs::read(proc_dir.join("cmdline")) {
        Ok(bytes) => {
            let cmdline: Vec<u8> = bytes
                .into_iter()
                .map(|b| if b == 0 { b' ' } else { b })
                .collect();
            String::from_utf8_lossy(&cmdline).contains(marker)
        }
        // Not readable (another user's process under hidepid): trust the pid.
        Err(_) => true,
    }
}

/// What the command line of every process of the cluster in `cluster_dir` contains.
pub fn marker_of(cluster_dir: &Path) -> String {
    let dir = fs::canonicalize(cluster_dir).unwrap_or_else(|_| cluster_dir.to_path_buf());
    format!("{}/", dir.display())
}

fn order(name: &str) -> u8 {
    match name {
        ETCD => 1,
        POSTGRES => 2,
        _ => 0,
    }
}

fn signal_for(name: &str) -> (Signal, &'static str) {
    if name == POSTGRES {
        (Signal::INT, "SIGINT")
    } else {
        (Signal::TERM, "SIGTERM")
    }
}

fn send(pid: u32, signal: Signal) -> Result<(), HarnessError> {
    let Some(target) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Ok(());
    };
    match kill_process(target, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(HarnessError::io(
            format!("cannot signal pid {pid}"),
            e.into(),
        )),
    }
}

fn stop_group(
    group: &[RecordedProcess],
    grace: Duration,
    marker: &str,
) -> Result<Vec<StoppedProcess>, HarnessError> {
    let mut stopped = Vec::new();
    let mut waiting = Vec::new();
    for p in group {
        let (signal, signal_name) = signal_for(&p.name);
        if p.running && is_running(p.pid, marker) {
            send(p.pid, signal)?;
            waiting.push(stopped.len());
        }
        stopped.push(StoppedProcess {
            name: p.name.clone(),
            pid: p.pid,
            outcome: StopOutcome::NotRunning,
            signal: signal_name,
        });
    }
    let deadline = Instant::now() + grace;
    for &i in &waiting {
        stopped[i].outcome = StopOutcome::Exited;
    }
    loop {
        let left: Vec<usize> = waiting
            .iter()
            .copied()
            .filter(|&i| is_running(stopped[i].pid, marker))
            .collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for &i in &left {
                send(stopped[i].pid, Signal::KILL)?;
                stopped[i].outcome = StopOutcome::Killed;
            }
            // SIGKILL cannot be ignored; wait briefly until the kernel has ended them.
            let until = Instant::now() + Duration::from_secs(5);
            while left.iter().any(|&i| is_running(stopped[i].pid, marker)) && Instant::now() < until
            {
                thread::sleep(POLL_INTERVAL);
            }
            break;
        }
        thread::sleep(POLL_INTERVAL);
    }
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_made_up_pid_does_not() {
        let me = std::process::id();
        assert!(is_running(me, ""));
        assert!(!is_running(me, "no such marker \u{1}"));
        assert!(!is_running(u32::MAX - 1, ""));
    }

    #[test]
    fn records_are_read_back_nodes_first_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        record(dir.path(), POSTGRES, u32::MAX - 1).unwrap();
        record(dir.path(), "node-2", u32::MAX - 2).unwrap();
        record(dir.path(), "node-1", u32::MAX - 3).unwrap();
        record(dir.path(), ETCD, u32::MAX - 4).unwrap();
        let names: Vec<String> = recorded(dir.path())
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["node-1", "node-2", ETCD, POSTGRES]);
        let stopped = stop_all(dir.path(), Duration::from_secs(1)).unwrap();
        assert!(stopped.iter().all(|s| s.outcome == StopOutcome::NotRunning));
        assert!(recorded(dir.path()).unwrap().is_empty());
        forget(dir.path(), "node-1");
    }
}
