//! `strongroom dev up|status|down` and `strongroom keys` end to end, with the real binary in a
//! scratch working directory: the dev cluster comes up in the background, a key is generated
//! through `.dev/cluster.env`, the cluster goes down with no process left, and after the next
//! `dev up` the same key is still there.
//!
//! One test: the cluster costs aux info and a key generation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use strongroom_devenv::detached;
use strongroom_devenv::process::strongroom_binary;
use tempfile::TempDir;

/// A scratch working directory for `strongroom dev ...`; `dev down` runs when it goes, so a
/// failing test leaves no process behind.
struct DevDir {
    bin: PathBuf,
    dir: TempDir,
}

impl DevDir {
    fn new() -> Self {
        let bin = strongroom_binary().unwrap();
        let dir = tempfile::Builder::new()
            .prefix("strongroom-dev-cluster-")
            .tempdir()
            .unwrap();
        // As root, PostgreSQL runs as the postgres user, which must reach .dev/postgres.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Self { bin, dir }
    }

    fn dev(&self) -> PathBuf {
        self.dir.path().join(".dev")
    }

    fn command(&self, args: &[&str], env: &[(String, String)]) -> Command {
        let mut command = Command::new(&self.bin);
        command.args(args).current_dir(self.dir.path());
        // Only what the test hands in: no cluster settings from the caller's environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STRONGROOM") {
                command.env_remove(&key);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs `strongroom <args>`, which must succeed, and returns its stdout.
    fn run(&self, args: &[&str], env: &[(String, String)]) -> String {
        let output = self.command(args, env).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "`strongroom {}` failed with {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n{}",
            args.join(" "),
            output.status,
            self.node_log_tails()
        );
        stdout
    }

    /// Runs `strongroom <args> --json` and parses its output.
    fn json(&self, args: &[&str], env: &[(String, String)]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.run(&args, env);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "`strongroom {}` printed no JSON ({e}): {stdout}",
                args.join(" ")
            )
        })
    }

    /// The pids recorded in .dev/pids.
    fn recorded_pids(&self) -> Vec<(String, u32)> {
        detached::recorded(&self.dev())
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.pid))
            .collect()
    }

    /// The end of every node log, for failure messages.
    fn node_log_tails(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = fs::read_dir(self.dev().join("logs")) else {
            return out;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths
            .iter()
            .filter(|p| p.to_string_lossy().ends_with("stderr.log"))
        {
            let text = fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            out.push_str(&format!("--- {} ---\n{tail}\n", path.display()));
        }
        out
    }
}

impl Drop for DevDir {
    fn drop(&mut self) {
        // Before the directory goes; a no-op when the test already stopped the cluster.
        if let Ok(output) = self.command(&["dev", "down"], &[]).output() {
            if !output.status.success() {
                eprintln!(
                    "cleanup `strongroom dev down` failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
}

/// `export NAME=value` lines of `.dev/cluster.env`, as `source` would set them.
fn read_env_file(path: &Path) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .map(|assignment| {
            let (name, value) = assignment.split_once('=').unwrap();
            let value = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                Some(quoted) => quoted.replace("'\\''", "'"),
                None => value.to_owned(),
            };
            (name.to_owned(), value)
        })
        .collect()
}

fn find_key<'a>(list: &'a Value, key_id: &str) -> &'a Value {
    list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id)
        .unwrap_or_else(|| panic!("key {key_id} is not in the list: {list:#}"))
}

#[test]
fn dev_cluster_keeps_its_keys_across_down_and_up() {
    let dev = DevDir::new();

    // ---- up: provisioned, in the background, with its environment file ----------------------
    let up = dev.json(&["dev", "up"], &[]);
    assert_eq!(up["state"], "started", "{up:#}");
    assert_eq!(up["threshold"], 2);
    let env = read_env_file(&dev.dev().join("cluster.env"));
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} missing from cluster.env: {env:?}"))
    };
    assert_eq!(var("STRONGROOM_API_URLS").split(',').count(), 3);
    for name in [
        "STRONGROOM_CA_CERT",
        "STRONGROOM_CLIENT_CERT",
        "STRONGROOM_CLIENT_KEY",
    ] {
        assert!(Path::new(&var(name)).is_file(), "{name}");
    }
    let approvers: Vec<String> = var("STRONGROOM_APPROVER_KEYS")
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(approvers.len(), 3);
    assert!(approvers[0].ends_with(".dev/approvers/dev-approver-1.key"));
    assert_eq!(fs::read_to_string(&approvers[0]).unwrap().trim().len(), 64);
    let info: Value =
        serde_json::from_str(&fs::read_to_string(dev.dev().join("cluster.json")).unwrap()).unwrap();
    assert_eq!(
        (info["nodes"].as_u64(), info["threshold"].as_u64()),
        (Some(3), Some(2))
    );
    // Again while it runs: nothing to do.
    assert_eq!(dev.json(&["dev", "up"], &[])["state"], "running");

    // ---- a key through the environment file ---------------------------------------------------
    let key = dev.json(
        &[
            "keys",
            "create",
            "--name",
            "t",
            "--threshold",
            "2",
            "--wait",
        ],
        &env,
    );
    assert_eq!(key["state"], "ready", "{key:#}");
    let key_id = key["key_id"].as_str().unwrap().to_owned();
    let xpub = key["xpub"].as_str().unwrap().to_owned();
    assert!(xpub.starts_with("tpub"), "{xpub}");
    let listed = dev.json(&["keys", "list"], &env);
    let entry = find_key(&listed, &key_id);
    assert_eq!(entry["state"], "ready");
    assert_eq!(entry["xpub"], xpub.as_str());
    assert_eq!(entry["name"], "t");

    // ---- down: every recorded process ends, the pid files go ----------------------------------
    let pids = dev.recorded_pids();
    let names: Vec<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["node-1", "node-2", "node-3", "etcd", "postgres"]);
    let down = dev.json(&["dev", "down"], &[]);
    assert_eq!(down["was_running"], true, "{down:#}");
    for (name, pid) in &pids {
        // An empty marker: any live process with that pid counts.
        assert!(
            !detached::is_running(*pid, ""),
            "{name} (pid {pid}) survived `dev down`"
        );
    }
    assert!(dev.recorded_pids().is_empty());
    assert_eq!(dev.json(&["dev", "status"], &[])["state"], "stopped");
    assert_eq!(dev.json(&["dev", "down"], &[])["was_running"], false);

    // ---- up again: the same cluster, the same key ---------------------------------------------
    let again = dev.json(&["dev", "up"], &[]);
    assert_eq!(again["state"], "restarted", "{again:#}");
    assert_eq!(again["api_urls"], up["api_urls"]);
    assert_eq!(read_env_file(&dev.dev().join("cluster.env")), env);
    let shown = dev.json(&["keys", "show", &key_id], &env);
    assert_eq!(shown["state"], "ready", "{shown:#}");
    assert_eq!(shown["xpub"], xpub.as_str());
    let down = dev.json(&["dev", "down"], &[]);
    assert_eq!(down["was_running"], true, "{down:#}");
}
