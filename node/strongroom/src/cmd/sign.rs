//! `strongroom sign`: hand the cluster a PSBT to sign, follow the request, list requests.
//!
//! A request goes through the states `voting` (every node evaluates it against its own
//! policy), `awaiting_approvals` (a policy asks for approver signatures: `strongroom
//! approve`), `approved`, `signing`, and ends `signed` (the signed PSBT and the transaction),
//! `rejected` (the policies said no; the decisions say why) or `failed`. The cluster is the one
//! `.dev/cluster.env` names (after `strongroom dev up` and `source .dev/cluster.env`), or the
//! one the API flags name. `--json` prints the API's JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use strongroom_bitcoin::bitcoin::base64::Engine as _;
use strongroom_bitcoin::bitcoin::base64::engine::general_purpose::STANDARD as BASE64;
use strongroom_client::{ApiClient, ClientError};

use crate::api_args::{ApiArgs, explain};
use crate::cmd::keys::{check_key_id, list_keys, text};
use crate::output::{Output, Reported, render_table};

/// The first bytes of every binary PSBT (BIP-174).
pub(crate) const PSBT_MAGIC: &[u8] = b"psbt\xff";
/// How long the server may hold one status request open until something changes.
const LONG_POLL_SECS: u64 = 10;
/// Shortest time between two status requests when the state has not changed.
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often a wait says that it is still waiting, when nothing changes.
const STILL_WAITING_INTERVAL: Duration = Duration::from_secs(30);
/// The states of a sign request, in the order a request goes through them.
pub(crate) const STATES: [&str; 9] = [
    "voting",
    "awaiting_approvals",
    "approved",
    "signing",
    "signed",
    "rejected",
    "failed",
    "expired",
    "cancelled",
];

/// `strongroom sign`: the API flags, shared by every subcommand, and the subcommand.
#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: SignCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SignCommand {
    /// Submit a PSBT for signing (needs the submitter role). Every node checks it against its
    /// own policy and votes; without --wait it returns at once with the request id.
    Submit {
        /// The PSBT: a file holding base64 text, or a binary PSBT.
        psbt: PathBuf,
        /// The key that signs (its id, as `strongroom keys list` shows it) [default: the
        /// cluster's only ready key].
        #[arg(long, value_name = "KEY_ID")]
        key: Option<String>,
        /// A note kept with the request and shown with it.
        #[arg(long, value_name = "TEXT")]
        memo: Option<String>,
        /// Wait until the request is signed, rejected or failed, and show it.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 600, value_name = "SECONDS", requires = "wait")]
        timeout: u64,
    },
    /// Show one request: state, digest, transaction summary, each node's decision with its
    /// reasons, approvals, and once signed the signed PSBT and the transaction.
    Status {
        /// The request id, as `sign submit` or `sign list` shows it.
        request_id: String,
    },
    /// Wait until a request is signed (exit 0), rejected or failed (exit 1, with the reasons),
    /// reporting each change of state on stderr.
    Wait {
        /// The request id.
        request_id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Cancel a request that is not yet being signed (its submitter or an admin): it ends
    /// `cancelled` on every node, which never signs it afterwards.
    Cancel {
        /// The request id.
        request_id: String,
    },
    /// List the sign requests: id, key, state, amount leaving the key, fee, time.
    List {
        /// Only requests in this state.
        #[arg(long, value_parser = STATES)]
        state: Option<String>,
    },
}

pub(crate) fn run(args: SignArgs, out: &Output) -> anyhow::Result<()> {
    // Bad input fails before anything is sent.
    let psbt = match &args.command {
        SignCommand::Submit { psbt, key, .. } => {
            if let Some(key) = key {
                check_key_id(key)?;
            }
            Some(read_psbt(psbt)?)
        }
        SignCommand::Status { request_id }
        | SignCommand::Wait { request_id, .. }
        | SignCommand::Cancel { request_id } => {
            check_request_id(request_id)?;
            None
        }
        SignCommand::List { .. } => None,
    };
    let api = args.api.client()?;
    let runtime = super::runtime()?;
    runtime.block_on(async {
        match args.command {
            SignCommand::Submit {
                key,
                memo,
                wait,
                timeout,
                ..
            } => {
                let psbt = psbt.unwrap_or_default();
                let key_id = match key {
                    Some(key) => key,
                    None => only_ready_key(&api).await?,
                };
                let submitted = submit(&api, &key_id, &psbt, memo.as_deref()).await?;
                if !wait {
                    let id = submitted.request_id.clone();
                    out.report(submitted.body.clone(), || {
                        let again = if submitted.existing {
                            " (this PSBT was submitted before: this is that request)"
                        } else {
                            ""
                        };
                        format!(
                            "sign request {id} submitted to {}{again}\n  key:   {key_id}\n  state: {}\n  \
                             follow it with `strongroom sign wait {id}` or `strongroom sign status {id}`\n",
                            submitted.node,
                            text(&submitted.body["state"]),
                        )
                    });
                    return Ok(());
                }
                out.progress(&format!(
                    "sign request {} submitted to {}; waiting for the outcome",
                    submitted.request_id, submitted.node
                ));
                let request = wait_for(
                    &api,
                    out,
                    submitted.index,
                    &submitted.request_id,
                    Duration::from_secs(timeout),
                )
                .await?;
                report_outcome(out, &request)
            }
            SignCommand::Status { request_id } => {
                let request = get_request(&api, None, &request_id, None).await?;
                out.report(request.clone(), || render_request(&request));
                Ok(())
            }
            SignCommand::Wait {
                request_id,
                timeout,
            } => {
                let request =
                    wait_for(&api, out, None, &request_id, Duration::from_secs(timeout)).await?;
                report_outcome(out, &request)
            }
            SignCommand::Cancel { request_id } => {
                let body = api
                    .post(&format!("/v1/sign-requests/{request_id}/cancel"), &serde_json::json!({}))
                    .await
                    .and_then(|r| r.into_result())
                    .map_err(|e| unknown_request(e, &request_id))?;
                out.report(body, || {
                    format!("sign request {request_id} cancelled: no node signs it any more\n")
                });
                Ok(())
            }
            SignCommand::List { state } => list(&api, out, state.as_deref()).await,
        }
    })
}

/// Reads a PSBT file: base64 text (whitespace anywhere ignored) or a binary PSBT; returns the
/// PSBT as base64.
pub(crate) fn read_psbt(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    psbt_base64(&bytes).with_context(|| format!("{}", path.display()))
}

/// The base64 of a PSBT given as binary (starting with the magic `psbt\xff`) or as base64 text.
fn psbt_base64(bytes: &[u8]) -> anyhow::Result<String> {
    if bytes.starts_with(PSBT_MAGIC) {
        return Ok(BASE64.encode(bytes));
    }
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if text.is_empty() {
        bail!("the file is empty: it should hold a PSBT (base64 text or binary)");
    }
    match BASE64.decode(&text) {
        Ok(decoded) if decoded.starts_with(PSBT_MAGIC) => Ok(text),
        Ok(_) => bail!(
            "the file holds base64, but not of a PSBT (a PSBT starts with the bytes 'psbt' 0xff)"
        ),
        Err(e) => bail!("the file holds neither a binary PSBT nor a base64 PSBT ({e})"),
    }
}

/// Request ids go into URL paths: only letters, digits, `-` and `_`.
pub(crate) fn check_request_id(id: &str) -> anyhow::Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!("'{id}' is no request id: `strongroom sign list` shows the requests with their ids");
    }
    Ok(())
}

/// The id of the cluster's only ready key, or an error saying to pass --key.
async fn only_ready_key(api: &ApiClient) -> anyhow::Result<String> {
    let keys = list_keys(api).await?;
    let ready: Vec<&Value> = keys.iter().filter(|k| k["state"] == "ready").collect();
    match ready.as_slice() {
        [key] => key["key_id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the cluster listed a key without key_id: {key}")),
        [] => bail!(
            "the cluster has no ready key: create one (`strongroom keys create --name <name> \
             --threshold <t> --wait`), then pass its id with --key"
        ),
        several => bail!(
            "the cluster has {} ready keys ({}): say which signs with --key <key id> \
             (`strongroom keys list` shows them)",
            several.len(),
            several
                .iter()
                .map(|k| format!("{} '{}'", short(&text(&k["key_id"])), text(&k["name"])))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A sign request a node accepted.
pub(crate) struct Submitted {
    pub(crate) request_id: String,
    /// Whether the node already had a request for this PSBT and key.
    pub(crate) existing: bool,
    /// The node that took it (an index into the client's URLs).
    pub(crate) index: Option<usize>,
    pub(crate) node: String,
    pub(crate) body: Value,
}

/// POST /v1/sign-requests.
pub(crate) async fn submit(
    api: &ApiClient,
    key_id: &str,
    psbt: &str,
    memo: Option<&str>,
) -> anyhow::Result<Submitted> {
    let mut body = json!({"key_id": key_id, "psbt": psbt});
    if let Some(memo) = memo {
        body["memo"] = json!(memo);
    }
    let response = api
        .post("/v1/sign-requests", &body)
        .await
        .map_err(explain)?;
    let node_url = response.url.clone();
    let node = response.node.clone();
    let body = response.into_result().map_err(|e| match e {
        ClientError::Api { kind, node, .. } if kind == "unknown-key" => anyhow::anyhow!(
            "node {node} knows no key {key_id}: `strongroom keys list` shows the keys"
        ),
        ClientError::Api {
            status: 400 | 422,
            detail,
            node,
            ..
        } => anyhow::anyhow!("node {node} refused the PSBT: {detail}"),
        other => explain(other),
    })?;
    let request_id = body["request_id"]
        .as_str()
        .with_context(|| {
            format!("node {node} accepted the request but sent no request_id: {body}")
        })?
        .to_owned();
    Ok(Submitted {
        request_id,
        existing: body["existing"].as_bool().unwrap_or(false),
        index: api.urls().iter().position(|u| *u == node_url),
        node,
        body,
    })
}

/// GET /v1/sign-requests/{id}, on node `index` or (None) the first node that answers; with
/// `wait_secs`, the node holds the request until the request changes or that time passes.
async fn get_request_raw(
    api: &ApiClient,
    index: Option<usize>,
    request_id: &str,
    wait_secs: Option<u64>,
) -> Result<Value, ClientError> {
    let mut path = format!("/v1/sign-requests/{request_id}");
    if let Some(secs) = wait_secs {
        let _ = write!(path, "?wait_secs={secs}");
    }
    let response = match index {
        Some(i) => api.get_at(i, &path).await?,
        None => api.get(&path).await?,
    };
    response.into_result()
}

/// An unknown request, said with the fix.
fn unknown_request(e: ClientError, request_id: &str) -> anyhow::Error {
    match e {
        ClientError::Api {
            status: 404, node, ..
        } => anyhow::anyhow!(
            "node {node} knows no sign request {request_id}: `strongroom sign list` shows the requests"
        ),
        other => explain(other),
    }
}

/// GET /v1/sign-requests/{id}.
pub(crate) async fn get_request(
    api: &ApiClient,
    index: Option<usize>,
    request_id: &str,
    wait_secs: Option<u64>,
) -> anyhow::Result<Value> {
    get_request_raw(api, index, request_id, wait_secs)
        .await
        .map_err(|e| unknown_request(e, request_id))
}

/// Whether a request in `state` has reached its end.
pub(crate) fn is_final(state: &str) -> bool {
    matches!(
        state,
        "signed" | "rejected" | "failed" | "expired" | "cancelled"
    )
}

/// Follows request `request_id` (on node `index`, or the first node that answers) with long
/// polls until it is signed, rejected or failed, and returns it; reports each change on stderr.
/// Fails after `limit`, or at once when the node does not know the request.
pub(crate) async fn wait_for(
    api: &ApiClient,
    out: &Output,
    index: Option<usize>,
    request_id: &str,
    limit: Duration,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let mut last_line = String::new();
    let mut last_report = Instant::now();
    loop {
        let remaining = limit.saturating_sub(started.elapsed());
        let wait_secs = remaining.as_secs().clamp(1, LONG_POLL_SECS);
        let asked = Instant::now();
        let last_seen = match get_request_raw(api, index, request_id, Some(wait_secs)).await {
            Ok(request) => {
                let state = text(&request["state"]);
                if is_final(&state) {
                    return Ok(request);
                }
                state_line(&request)
            }
            // The request is unknown, or this client may not see it: asking again will not
            // help. (Too many requests, or a timeout, may pass.)
            Err(e @ ClientError::Api { status, .. })
                if (400..500).contains(&status) && status != 408 && status != 429 =>
            {
                return Err(unknown_request(e, request_id));
            }
            // A node may restart meanwhile; keep asking until the time is up.
            Err(e) => format!("not answering ({e})"),
        };
        if last_seen != last_line {
            out.progress(&last_seen);
            last_line = last_seen;
            last_report = Instant::now();
        } else if last_report.elapsed() >= STILL_WAITING_INTERVAL {
            out.progress(&format!(
                "still {last_line} ({} s)",
                started.elapsed().as_secs()
            ));
            last_report = Instant::now();
        }
        if started.elapsed() >= limit {
            bail!(
                "sign request {request_id} was not done after {} s (last: {last_line}); it may \
                 still finish: `strongroom sign wait {request_id}`",
                limit.as_secs()
            );
        }
        // A node that answers at once (nothing to wait for, or an error) is not asked again
        // right away.
        let since = asked.elapsed();
        if since < MIN_POLL_INTERVAL {
            tokio::time::sleep(MIN_POLL_INTERVAL - since).await;
        }
    }
}

/// One line on where a request stands, e.g. "awaiting_approvals: needs 1 approval from
/// treasurers".
pub(crate) fn state_line(request: &Value) -> String {
    let state = text(&request["state"]);
    let id = text(&request["request_id"]);
    let what = match state.as_str() {
        "voting" => "the nodes are checking it against their policies".to_owned(),
        "awaiting_approvals" => {
            let mut s = needs_text(&request["needs"])
                .map(|needs| format!("needs {needs}"))
                .unwrap_or_else(|| "needs approvals from the policy's approvers".to_owned());
            let _ = write!(
                s,
                "; approve with `strongroom approve {id} --key <approver key file>`"
            );
            s
        }
        "approved" => "the policies allow it; signing starts".to_owned(),
        "signing" => "the nodes are signing".to_owned(),
        "signed" => return state,
        "rejected" => rejection_reasons(request),
        "failed" | "expired" | "cancelled" => text(&request["error"]),
        _ => return state,
    };
    format!("{state}: {what}")
}

/// "1 approval from treasurers", "2 approvals from treasurers (has 1)", from a request's
/// `needs`.
fn needs_text(needs: &Value) -> Option<String> {
    let required = needs["required"].as_u64()?;
    let have = needs["have"].as_u64().unwrap_or(0);
    let group = text(&needs["group"]);
    let plural = if required == 1 { "" } else { "s" };
    let mut s = format!("{required} approval{plural} from {group}");
    if have > 0 {
        let _ = write!(s, " (has {have})");
    }
    Some(s)
}

/// Why a request was rejected: each refusing node with its reasons.
fn rejection_reasons(request: &Value) -> String {
    let decisions = request["decisions"].as_array().cloned().unwrap_or_default();
    let refusals: Vec<String> = decisions
        .iter()
        .filter(|d| d["decision"] != "allow")
        .map(|d| {
            let reasons = reasons_of(d);
            let reasons = if reasons.is_empty() {
                "no reason given".to_owned()
            } else {
                reasons.join("; ")
            };
            format!(
                "{} {}: {reasons}",
                text(&d["node_id"]),
                text(&d["decision"])
            )
        })
        .collect();
    let error = request.get("error").filter(|e| !e.is_null()).map(text);
    match (refusals.is_empty(), error) {
        (true, Some(error)) => error,
        (true, None) => "the nodes' policies refused it".to_owned(),
        (false, _) => refusals.join(" | "),
    }
}

fn reasons_of(decision: &Value) -> Vec<String> {
    decision["reasons"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default()
}

/// Reports a request that has reached its end; a rejected or failed one is an error (after
/// the request itself is shown).
pub(crate) fn report_outcome(out: &Output, request: &Value) -> anyhow::Result<()> {
    out.report(request.clone(), || render_request(request));
    outcome(request)
}

/// Ok for a signed request; the reasons for a rejected or failed one.
pub(crate) fn outcome(request: &Value) -> anyhow::Result<()> {
    let id = text(&request["request_id"]);
    match request["state"].as_str() {
        Some("signed") => Ok(()),
        Some("rejected") => Err(Reported(format!(
            "sign request {id} was rejected: {}",
            rejection_reasons(request)
        ))
        .into()),
        Some(state @ ("failed" | "expired" | "cancelled")) => Err(Reported(format!(
            "sign request {id} {state}: {}",
            text(&request["error"])
        ))
        .into()),
        _ => Err(Reported(format!(
            "sign request {id} is {} and not done yet",
            text(&request["state"])
        ))
        .into()),
    }
}

async fn list(api: &ApiClient, out: &Output, state: Option<&str>) -> anyhow::Result<()> {
    let path = match state {
        Some(state) => format!("/v1/sign-requests?state={state}"),
        None => "/v1/sign-requests".to_owned(),
    };
    let body = api
        .get(&path)
        .await
        .map_err(explain)?
        .into_result()
        .map_err(explain)?;
    let requests = body["sign_requests"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    out.report(body, || render_list(&requests, state));
    Ok(())
}

/// The first 12 characters of a long id, and "…".
pub(crate) fn short(id: &str) -> String {
    if id.chars().count() <= 16 {
        return id.to_owned();
    }
    let head: String = id.chars().take(12).collect();
    format!("{head}…")
}

/// Satoshis with thousands separators: 1,234,567.
pub(crate) fn sats(v: &Value) -> String {
    match v.as_u64() {
        Some(n) => group_digits(n),
        None => text(v),
    }
}

pub(crate) fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut s = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            s.push(',');
        }
        s.push(c);
    }
    s
}

/// A time of the API for people: seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`;
/// text as it is.
pub(crate) fn timestamp(v: &Value) -> String {
    let Some(secs) = v.as_f64().filter(|s| s.is_finite() && *s >= 0.0) else {
        return text(v);
    };
    // Whole seconds; the fraction only matters to machines, which read --json.
    let secs = secs as u64;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date `days` days after 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// What a transaction does, from a request's `summary`: inputs, outputs, fee.
pub(crate) fn render_summary(summary: &Value) -> String {
    let mut s = String::new();
    if let Some(txid) = summary.get("txid").filter(|t| !t.is_null()) {
        let _ = writeln!(s, "{:<12} {}", "txid", text(txid));
    }
    let inputs = summary["inputs"].as_array().cloned().unwrap_or_default();
    if !inputs.is_empty() {
        let _ = writeln!(s, "inputs:");
        for input in &inputs {
            let path = input
                .get("path")
                .and_then(Value::as_str)
                .map(|p| format!(", {p}"))
                .unwrap_or_default();
            let owner = match input["ours"].as_bool() {
                Some(true) => format!("  (this key{path})"),
                Some(false) => "  (foreign)".to_owned(),
                None => String::new(),
            };
            let _ = writeln!(
                s,
                "  {}  {} sat{owner}",
                text(&input["previous_output"]),
                sats(&input["amount_sat"])
            );
        }
    }
    let outputs = summary["outputs"].as_array().cloned().unwrap_or_default();
    if !outputs.is_empty() {
        let _ = writeln!(s, "outputs:");
        let width = outputs
            .iter()
            .map(|o| sats(&o["amount_sat"]).len())
            .max()
            .unwrap_or(0);
        for output in &outputs {
            let change = if output["is_change"] == true {
                "  (change)"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  {}  {:>width$} sat{change}",
                text(&output["address"]),
                sats(&output["amount_sat"])
            );
        }
    }
    if !summary["fee_sat"].is_null() {
        let rate = summary["fee_rate_sat_per_vb"]
            .as_f64()
            .map(|r| format!(", {r:.2} sat/vB"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "{:<12} {} sat ({} vB{rate})",
            "fee",
            sats(&summary["fee_sat"]),
            text(&summary["vsize"])
        );
    }
    if !summary["spend_sat"].is_null() {
        let _ = writeln!(
            s,
            "{:<12} {} sat leave the key",
            "spend",
            sats(&summary["spend_sat"])
        );
    }
    s
}

/// A request for people: everything `sign status` shows.
pub(crate) fn render_request(request: &Value) -> String {
    let mut s = String::new();
    let row = |s: &mut String, label: &str, value: String| {
        let _ = writeln!(s, "{label:<12} {value}");
    };
    row(&mut s, "request", text(&request["request_id"]));
    row(&mut s, "key", text(&request["key_id"]));
    row(&mut s, "state", state_line(request));
    row(&mut s, "digest", text(&request["digest"]));
    for (label, key) in [("memo", "memo"), ("submitter", "submitter")] {
        if let Some(v) = request.get(key).filter(|v| !v.is_null()) {
            row(&mut s, label, text(v));
        }
    }
    for (label, key) in [("created", "created_at"), ("updated", "updated_at")] {
        if let Some(v) = request.get(key).filter(|v| !v.is_null()) {
            row(&mut s, label, timestamp(v));
        }
    }
    s.push_str(&render_summary(&request["summary"]));
    if let Some(needs) = needs_text(&request["needs"]) {
        row(&mut s, "needs", needs);
    }
    let decisions = request["decisions"].as_array().cloned().unwrap_or_default();
    if !decisions.is_empty() {
        let _ = writeln!(s, "decisions:");
        for d in &decisions {
            let policy = d
                .get("policy_hash")
                .filter(|p| !p.is_null())
                .map(|p| format!("  policy {}", short(&text(p))))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:<8} {}{policy}",
                text(&d["node_id"]),
                text(&d["decision"])
            );
            for reason in reasons_of(d) {
                let _ = writeln!(s, "           - {reason}");
            }
        }
    }
    let approvals = request["approvals"].as_array().cloned().unwrap_or_default();
    if !approvals.is_empty() {
        let _ = writeln!(s, "approvals:");
        for a in &approvals {
            let _ = writeln!(
                s,
                "  {}  verified {}",
                text(&a["approver"]),
                timestamp(&a["verified_at"])
            );
        }
    }
    if let Some(error) = request.get("error").filter(|e| !e.is_null()) {
        row(&mut s, "error", text(error));
    }
    if request["state"] == "signed" {
        row(&mut s, "signed psbt", text(&request["psbt"]));
        row(&mut s, "tx hex", text(&request["tx_hex"]));
    }
    s
}

fn render_list(requests: &[Value], state: Option<&str>) -> String {
    if requests.is_empty() {
        return match state {
            Some(state) => format!("no sign requests in state {state}\n"),
            None => "no sign requests yet: `strongroom sign submit <file.psbt> --key <key id>`\n"
                .to_owned(),
        };
    }
    let header = ["REQUEST ID", "KEY", "STATE", "SPEND", "FEE", "CREATED"];
    let rows: Vec<Vec<String>> = requests
        .iter()
        .map(|r| {
            vec![
                text(&r["request_id"]),
                short(&text(&r["key_id"])),
                text(&r["state"]),
                sats(&r["summary"]["spend_sat"]),
                sats(&r["summary"]["fee_sat"]),
                timestamp(&r["created_at"]),
            ]
        })
        .collect();
    render_table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        sign: SignArgs,
    }

    fn parse(args: &[&str]) -> Result<SignCommand, clap::Error> {
        let argv = std::iter::once("sign").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.sign.command)
    }

    fn request(state: &str) -> Value {
        json!({
            "request_id": "req-1", "key_id": "ab".repeat(32), "state": state,
            "digest": "11".repeat(32),
            "summary": {
                "txid": "cd".repeat(32),
                "inputs": [{"index": 0, "previous_output": format!("{}:0", "ee".repeat(32)),
                            "amount_sat": 200_000, "ours": true, "path": "0/0"}],
                "outputs": [
                    {"address": "bcrt1qdest", "amount_sat": 50_000, "is_change": false},
                    {"address": "bcrt1qchange", "amount_sat": 149_000, "is_change": true},
                ],
                "fee_sat": 1_000, "vsize": 141, "fee_rate_sat_per_vb": 7.092, "spend_sat": 50_000,
                "total_in_sat": 200_000,
            },
            "decisions": [
                {"node_id": "node-1", "decision": "allow", "reasons": ["allowed by rules[2] 'small-spend'"], "policy_hash": "ff".repeat(32)},
                {"node_id": "node-2", "decision": "deny", "reasons": ["an output pays an address on the denylist"], "policy_hash": "ff".repeat(32)},
            ],
            "approvals": [{"approver": "dev-approver-1", "verified_at": 1_735_689_600.25}],
            "needs": null, "psbt": "cHNidP8=", "tx_hex": "0200", "memo": "rent",
            "submitter": "dev", "error": null,
            "created_at": 1_735_689_599.5, "updated_at": 1_735_689_601.0, "node_id": "node-1",
        })
    }

    #[test]
    fn submit_takes_a_file_and_optional_flags() {
        match parse(&["submit", "tx.psbt"]).unwrap() {
            SignCommand::Submit {
                psbt,
                key,
                memo,
                wait,
                timeout,
            } => {
                assert_eq!(psbt, PathBuf::from("tx.psbt"));
                assert_eq!((key, memo, wait, timeout), (None, None, false, 600));
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "submit",
            "tx.psbt",
            "--key",
            "abcd",
            "--memo",
            "rent",
            "--wait",
            "--timeout",
            "30",
        ])
        .unwrap()
        {
            SignCommand::Submit {
                key,
                memo,
                wait,
                timeout,
                ..
            } => {
                assert_eq!(key.as_deref(), Some("abcd"));
                assert_eq!(memo.as_deref(), Some("rent"));
                assert!(wait);
                assert_eq!(timeout, 30);
            }
            other => panic!("{other:?}"),
        }
        // --timeout only with --wait; a file is required.
        assert!(parse(&["submit", "tx.psbt", "--timeout", "30"]).is_err());
        assert!(parse(&["submit"]).is_err());
    }

    #[test]
    fn wait_status_and_list_parse() {
        assert!(matches!(
            parse(&["wait", "req-1"]).unwrap(),
            SignCommand::Wait { request_id, timeout: 600 } if request_id == "req-1"
        ));
        assert!(matches!(
            parse(&["wait", "req-1", "--timeout", "5"]).unwrap(),
            SignCommand::Wait { timeout: 5, .. }
        ));
        assert!(matches!(
            parse(&["status", "req-1"]).unwrap(),
            SignCommand::Status { request_id } if request_id == "req-1"
        ));
        assert!(matches!(
            parse(&["list", "--state", "awaiting_approvals"]).unwrap(),
            SignCommand::List { state: Some(s) } if s == "awaiting_approvals"
        ));
        assert!(matches!(
            parse(&["list"]).unwrap(),
            SignCommand::List { state: None }
        ));
        assert!(parse(&["list", "--state", "pending"]).is_err());
    }

    #[test]
    fn psbt_files_may_be_binary_or_base64() {
        let binary = b"psbt\xff\x01\x00\x00".to_vec();
        let b64 = BASE64.encode(&binary);
        assert_eq!(psbt_base64(&binary).unwrap(), b64);
        // Base64 with a trailing newline, or wrapped over lines.
        assert_eq!(psbt_base64(format!("{b64}\n").as_bytes()).unwrap(), b64);
        let (a, b) = b64.split_at(4);
        assert_eq!(psbt_base64(format!("{a}\n{b}\n").as_bytes()).unwrap(), b64);
        let err = psbt_base64(b"hello world").unwrap_err().to_string();
        assert!(
            err.contains("neither a binary PSBT nor a base64 PSBT"),
            "{err}"
        );
        let err = psbt_base64(BASE64.encode(b"not a psbt").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not of a PSBT"), "{err}");
        assert!(psbt_base64(b" \n").is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tx.psbt");
        std::fs::write(&path, &binary).unwrap();
        assert_eq!(read_psbt(&path).unwrap(), b64);
        let err = read_psbt(&dir.path().join("missing.psbt"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn request_ids_are_path_safe() {
        assert!(check_request_id("req-1").is_ok());
        assert!(check_request_id(&"ab".repeat(32)).is_ok());
        assert!(check_request_id("6f1c2a9e-0000-4000-8000-000000000000").is_ok());
        for bad in ["", "../keys", "a/b", "a?b", "a b"] {
            assert!(check_request_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_shows_decisions_approvals_and_the_signed_transaction() {
        let text = render_request(&request("signed"));
        for part in [
            "req-1",
            "signed",
            &"11".repeat(32),
            "bcrt1qdest   50,000 sat",
            "bcrt1qchange  149,000 sat  (change)",
            "1,000 sat (141 vB, 7.09 sat/vB)",
            "50,000 sat leave the key",
            "node-1   allow  policy ffffffffffff…",
            "- allowed by rules[2] 'small-spend'",
            "node-2   deny",
            "- an output pays an address on the denylist",
            "dev-approver-1  verified 2025-01-01 00:00:00 UTC",
            "created      2024-12-31 23:59:59 UTC",
            "signed psbt  cHNidP8=",
            "tx hex       0200",
            "memo         rent",
            "200,000 sat  (this key, 0/0)",
        ] {
            assert!(text.contains(part), "{part:?} missing from\n{text}");
        }
        // Before it is signed, the PSBT shown would be the submitted one: not shown.
        let voting = render_request(&request("voting"));
        assert!(!voting.contains("signed psbt"), "{voting}");
        assert!(!voting.contains("tx hex"), "{voting}");
    }

    #[test]
    fn state_lines_say_what_is_awaited() {
        let mut r = request("awaiting_approvals");
        r["needs"] = json!({"group": "treasurers", "required": 1, "have": 0});
        let line = state_line(&r);
        assert!(
            line.starts_with("awaiting_approvals: needs 1 approval from treasurers;"),
            "{line}"
        );
        assert!(line.contains("strongroom approve req-1 --key"), "{line}");
        r["needs"] = json!({"group": "treasurers", "required": 2, "have": 1});
        assert!(state_line(&r).contains("needs 2 approvals from treasurers (has 1)"));
        assert_eq!(
            state_line(&request("signing")),
            "signing: the nodes are signing"
        );
    }

    #[test]
    fn rejected_and_failed_requests_are_errors_with_the_reasons() {
        assert!(outcome(&request("signed")).is_ok());
        let err = outcome(&request("rejected")).unwrap_err();
        assert!(err.downcast_ref::<Reported>().is_some());
        let err = err.to_string();
        assert!(
            err.contains("node-2 deny: an output pays an address on the denylist"),
            "{err}"
        );
        assert!(!err.contains("node-1"), "{err}");
        let mut failed = request("failed");
        failed["error"] = json!("signing timed out");
        let err = outcome(&failed).unwrap_err().to_string();
        assert!(err.contains("failed: signing timed out"), "{err}");
    }

    #[test]
    fn list_is_a_table() {
        let text = render_list(&[request("signed"), request("voting")], None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("REQUEST ID"));
        // Columns line up (counted in characters: the key is shortened with "…").
        let col = |line: &str, text: &str| line[..line.find(text).unwrap()].chars().count();
        assert_eq!(col(lines[0], "STATE"), col(lines[1], "signed"));
        assert_eq!(col(lines[0], "STATE"), col(lines[2], "voting"));
        assert_eq!(col(lines[0], "SPEND"), col(lines[1], "50,000"));
        assert!(lines[1].contains("abababababab…"));
        assert!(render_list(&[], Some("signed")).contains("no sign requests in state signed"));
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(timestamp(&json!(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(&json!(951_782_400)), "2000-02-29 00:00:00 UTC");
        assert_eq!(
            timestamp(&json!(1_709_251_199.9)),
            "2024-02-29 23:59:59 UTC"
        );
        assert_eq!(
            timestamp(&json!(4_107_542_400_u64)),
            "2100-03-01 00:00:00 UTC"
        );
        assert_eq!(timestamp(&json!("yesterday")), "yesterday");
        assert_eq!(timestamp(&Value::Null), "-");
        assert_eq!(timestamp(&json!(-1)), "-1");
    }

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(200_000), "200,000");
        assert_eq!(group_digits(2_100_000_000_000_000), "2,100,000,000,000,000");
    }
}
