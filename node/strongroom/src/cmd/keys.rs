//! `strongroom keys`: create, list and show the cluster's threshold keys through the node API.
//!
//! The cluster is the one `.dev/cluster.env` names (after `strongroom dev up` and
//! `source .dev/cluster.env`), or the one the API flags name. `--json` prints the API's JSON.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use strongroom_client::{ApiClient, ClientError};

use crate::api_args::{ApiArgs, explain};
use crate::output::{Output, render_table};

/// How often `keys create --wait` asks for the key's state.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often `keys create --wait` reports that it is still waiting.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// `strongroom keys`: the API flags, shared by every subcommand, and the subcommand.
#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Generate a t-of-n key over every node of the cluster (needs the admin role). Without
    /// --wait it returns at once with the key id, while the nodes generate the key.
    Create {
        /// A name for the key (1 to 64 printable characters).
        #[arg(long)]
        name: String,
        /// Signers needed for a signature: 2 up to the number of nodes.
        #[arg(long)]
        threshold: u16,
        /// Wait until the key is ready (or has failed) and show it.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 600, value_name = "SECONDS", requires = "wait")]
        timeout: u64,
    },
    /// List the keys: id, name, state, threshold, fingerprint.
    List,
    /// Show one key: state, threshold, participants, xpub, fingerprint and descriptors.
    Show {
        /// The key id (64 hex digits, as `keys list` shows it).
        key_id: String,
    },
}

pub(crate) fn run(args: KeysArgs, out: &Output) -> anyhow::Result<()> {
    if let KeysCommand::Show { key_id } = &args.command {
        check_key_id(key_id)?;
    }
    let api = args.api.client()?;
    let runtime = super::runtime()?;
    runtime.block_on(async {
        match args.command {
            KeysCommand::Create {
                name,
                threshold,
                wait,
                timeout,
            } => {
                create(
                    &api,
                    out,
                    &name,
                    threshold,
                    wait.then(|| Duration::from_secs(timeout)),
                )
                .await
            }
            KeysCommand::List => list(&api, out).await,
            KeysCommand::Show { key_id } => {
                let key = get_key(&api, None, &key_id).await?;
                out.report(key.clone(), || render_key(&key));
                Ok(())
            }
        }
    })
}

async fn create(
    api: &ApiClient,
    out: &Output,
    name: &str,
    threshold: u16,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let Created {
        key_id,
        index,
        node,
        body: created,
    } = post_key(api, name, threshold).await?;
    let Some(limit) = wait else {
        out.report(created.clone(), || {
            format!(
                "key '{name}' ({threshold}-of-n) is being generated: {key_id}\n  \
                 state: {}\n  follow it with `strongroom keys show {key_id}`, or pass --wait next time\n",
                text(&created["state"])
            )
        });
        return Ok(());
    };
    out.progress(&format!(
        "generating key '{name}' ({key_id}) through {node}: the first key waits for the cluster's aux info (about a minute)"
    ));
    let key = wait_until_ready(api, out, index, name, &key_id, limit).await?;
    out.report(key.clone(), || render_key(&key));
    Ok(())
}

/// A key generation a node accepted.
pub(crate) struct Created {
    /// The new key's id.
    pub(crate) key_id: String,
    /// The node that took the request (an index into the client's URLs): it runs the
    /// generation and records its outcome.
    pub(crate) index: Option<usize>,
    /// That node's id.
    pub(crate) node: String,
    /// The API's answer.
    pub(crate) body: Value,
}

/// POST /v1/keys: starts generating a `threshold`-of-n key named `name`.
pub(crate) async fn post_key(
    api: &ApiClient,
    name: &str,
    threshold: u16,
) -> anyhow::Result<Created> {
    let response = api
        .post("/v1/keys", &json!({"name": name, "threshold": threshold}))
        .await
        .map_err(explain)?;
    let node_url = response.url.clone();
    let node = response.node.clone();
    let body = response.into_result().map_err(explain)?;
    let key_id = body["key_id"]
        .as_str()
        .with_context(|| format!("node {node} accepted the key but sent no key_id: {body}"))?
        .to_owned();
    Ok(Created {
        key_id,
        index: api.urls().iter().position(|u| *u == node_url),
        node,
        body,
    })
}

/// Polls key `key_id` (named `name`) on node `index` (or the first node that answers) until
/// it is ready, and returns it; fails when its generation failed or after `limit`. Reports
/// progress on stderr every few seconds.
pub(crate) async fn wait_until_ready(
    api: &ApiClient,
    out: &Output,
    index: Option<usize>,
    name: &str,
    key_id: &str,
    limit: Duration,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let last_seen = match get_key_raw(api, index, key_id).await {
            Ok(key) => {
                let state = text(&key["state"]);
                match state.as_str() {
                    "ready" => return Ok(key),
                    "failed" => bail!(
                        "key generation of '{name}' ({key_id}) failed: {}",
                        key.get("error")
                            .map(text)
                            .unwrap_or_else(|| "no reason given".to_owned())
                    ),
                    _ => state,
                }
            }
            // The node may restart meanwhile; keep asking until the time is up.
            Err(e) => format!("not answering ({e})"),
        };
        let waited = started.elapsed();
        if waited >= limit {
            bail!(
                "key '{name}' ({key_id}) was not ready after {} s (last state: {last_seen}); \
                 it may still finish: `strongroom keys show {key_id}`",
                limit.as_secs()
            );
        }
        if last_report.elapsed() >= PROGRESS_INTERVAL {
            let short: String = key_id.chars().take(12).collect();
            out.progress(&format!(
                "key {short}…: {last_seen} ({} s)",
                waited.as_secs()
            ));
            last_report = Instant::now();
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// GET /v1/keys: every key of the cluster.
pub(crate) async fn list_keys(api: &ApiClient) -> anyhow::Result<Vec<Value>> {
    let body = api
        .get("/v1/keys")
        .await
        .map_err(explain)?
        .into_result()
        .map_err(explain)?;
    Ok(body["keys"].as_array().cloned().unwrap_or_default())
}

async fn list(api: &ApiClient, out: &Output) -> anyhow::Result<()> {
    let body = api
        .get("/v1/keys")
        .await
        .map_err(explain)?
        .into_result()
        .map_err(explain)?;
    let keys = body["keys"].as_array().cloned().unwrap_or_default();
    out.report(body, || render_list(&keys));
    Ok(())
}

/// GET /v1/keys/{id}, on node `index` or (None) the first node that answers.
async fn get_key_raw(
    api: &ApiClient,
    index: Option<usize>,
    key_id: &str,
) -> Result<Value, ClientError> {
    let path = format!("/v1/keys/{key_id}");
    let response = match index {
        Some(i) => api.get_at(i, &path).await?,
        None => api.get(&path).await?,
    };
    response.into_result()
}

pub(crate) async fn get_key(
    api: &ApiClient,
    index: Option<usize>,
    key_id: &str,
) -> anyhow::Result<Value> {
    get_key_raw(api, index, key_id).await.map_err(|e| match e {
        ClientError::Api { kind, node, .. } if kind == "unknown-key" => anyhow::anyhow!(
            "node {node} knows no key {key_id}: `strongroom keys list` shows the keys"
        ),
        other => explain(other),
    })
}

pub(crate) fn check_key_id(key_id: &str) -> anyhow::Result<()> {
    if key_id.is_empty() || !key_id.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "'{key_id}' is no key id: key ids are hex digits, as `strongroom keys list` shows them"
        );
    }
    Ok(())
}

/// A JSON value for people: strings as they are, null as "-".
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn participants(key: &Value) -> Vec<String> {
    key["participants"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default()
}

fn threshold_of(key: &Value) -> String {
    let n = participants(key).len();
    match (key["threshold"].as_u64(), n) {
        (Some(t), n) if n > 0 => format!("{t}-of-{n}"),
        (Some(t), _) => format!("{t}-of-?"),
        _ => "-".to_owned(),
    }
}

fn render_key(key: &Value) -> String {
    let mut s = String::new();
    let descriptors = &key["descriptors"];
    let mut rows = vec![
        ("key id", text(&key["key_id"])),
        ("name", text(&key["name"])),
        ("state", text(&key["state"])),
        (
            "threshold",
            format!("{} ({})", threshold_of(key), participants(key).join(", ")),
        ),
        ("network", text(&key["network"])),
        ("xpub", text(&key["xpub"])),
        ("fingerprint", text(&key["fingerprint"])),
        ("receive", text(&descriptors["receive"])),
        ("change", text(&descriptors["change"])),
    ];
    if let Some(error) = key.get("error").filter(|e| !e.is_null()) {
        rows.push(("error", text(error)));
    }
    for (label, value) in rows {
        let _ = writeln!(s, "{label:<12} {value}");
    }
    s
}

fn render_list(keys: &[Value]) -> String {
    if keys.is_empty() {
        return "no keys yet: `strongroom keys create --name <name> --threshold <t> --wait`\n"
            .to_owned();
    }
    let header = [
        "KEY ID",
        "NAME",
        "STATE",
        "THRESHOLD",
        "NETWORK",
        "FINGERPRINT",
    ];
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                text(&k["key_id"]),
                text(&k["name"]),
                text(&k["state"]),
                threshold_of(k),
                text(&k["network"]),
                text(&k["fingerprint"]),
            ]
        })
        .collect();
    render_table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_key() -> Value {
        json!({
            "key_id": "ab".repeat(32), "name": "treasury", "state": "ready", "threshold": 2,
            "participants": ["node-1", "node-2", "node-3"], "network": "regtest",
            "xpub": "tpubXYZ", "fingerprint": "1a2b3c4d",
            "descriptors": {"receive": "wpkh([1a2b3c4d]tpubXYZ/0/*)", "change": "wpkh([1a2b3c4d]tpubXYZ/1/*)"},
        })
    }

    #[test]
    fn show_renders_every_field() {
        let text = render_key(&ready_key());
        for part in [
            "treasury",
            "2-of-3 (node-1, node-2, node-3)",
            "regtest",
            "tpubXYZ",
            "1a2b3c4d",
            "wpkh([1a2b3c4d]tpubXYZ/0/*)",
            "wpkh([1a2b3c4d]tpubXYZ/1/*)",
        ] {
            assert!(text.contains(part), "{part} missing from\n{text}");
        }
        assert!(!text.contains("error"));
        let mut failed = ready_key();
        failed["state"] = json!("failed");
        failed["error"] = json!("peer node-2 went away");
        assert!(render_key(&failed).contains("error        peer node-2 went away"));
    }

    #[test]
    fn list_is_a_table_with_aligned_columns() {
        let mut generating = ready_key();
        generating["name"] = json!("t");
        generating["state"] = json!("generating");
        generating["fingerprint"] = Value::Null;
        let text = render_list(&[ready_key(), generating]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("KEY ID"));
        let col = lines[0].find("STATE").unwrap();
        assert_eq!(&lines[1][col..col + 5], "ready");
        assert_eq!(&lines[2][col..col + 10], "generating");
        assert!(lines[2].ends_with('-'));
        assert!(render_list(&[]).contains("keys create"));
    }

    #[test]
    fn key_ids_are_hex() {
        assert!(check_key_id(&"0f".repeat(32)).is_ok());
        assert!(check_key_id("../health").is_err());
        assert!(check_key_id("").is_err());
    }
}
