//! `strongroom audit`: export a node's audit log as a bundle (through the node API), and
//! verify a bundle offline (no cluster, no network).
//!
//! `verify` exits with status 1 when the bundle fails, after printing the report (text, or the
//! report's JSON with `--json`), so scripts can rely on the status alone.

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use strongroom_audit::export::{CHAIN_PATH, EXPORT_PATH};
use strongroom_audit::{
    AuditChain, AuditEntry, BundleContents, Checkpoint, VerifyReport, parse_export, verify_bundle,
    write_bundle,
};
use strongroom_client::ApiClient;
use strongroom_transport::Subject;
use strongroom_transport::pki::{certs_from_pem, identity_of};

use crate::api_args::{ApiArgs, explain};
use crate::output::Output;

/// Seqs asked for per export request: keeps each answer well within the client's timeout and
/// body limit.
const EXPORT_PAGE: u64 = 10_000;

/// `strongroom audit`: the tamper-evident audit log (export a bundle, verify it offline).
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify an exported bundle offline: the node certificate's chain to the cluster CA,
    /// every checkpoint signature, the hash chain and sequence continuity. Exits 1 on failure.
    Verify {
        /// The bundle directory (manifest.json, entries.jsonl, checkpoints.jsonl, chain.pem,
        /// ca.pem).
        bundle: PathBuf,
        /// The cluster CA certificate you trust (PEM). Without it the bundle's own ca.pem is
        /// used and the report warns that the bundle vouched for itself.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
    },
    /// Export one node's audit log into a new bundle directory and verify it against the
    /// cluster CA this client trusts (needs the auditor or admin role).
    Export {
        #[command(flatten)]
        api: ApiArgs,
        /// The bundle directory to create (must not exist, or be empty).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// First seq to export [default: the start of the log].
        #[arg(long, value_name = "SEQ")]
        from_seq: Option<u64>,
        /// Last seq to export [default: the newest entry].
        #[arg(long, value_name = "SEQ")]
        to_seq: Option<u64>,
        /// Whose log: the node at this position in the API URLs (0 is the first).
        #[arg(long, value_name = "INDEX", default_value_t = 0)]
        node: usize,
    },
}

pub(crate) fn run(args: AuditArgs, out: &Output) -> anyhow::Result<()> {
    match args.command {
        AuditCommand::Verify { bundle, ca } => {
            let report = verify_bundle(&bundle, ca.as_deref());
            finish(out, serde_json::to_value(&report)?, &report, String::new())
        }
        AuditCommand::Export {
            api,
            out: dir,
            from_seq,
            to_seq,
            node,
        } => {
            if let (Some(from), Some(to)) = (from_seq, to_seq) {
                if from > to {
                    bail!("--from-seq {from} is after --to-seq {to}");
                }
            }
            let trusted_ca = api.config()?.ca_cert;
            let client = api.client()?;
            let runtime = super::runtime()?;
            let exported = runtime.block_on(fetch(&client, node, from_seq.unwrap_or(0), to_seq))?;
            export(out, &dir, &trusted_ca, &exported)
        }
    }
}

/// Prints the report; exits with status 1 when verification failed.
fn finish(
    out: &Output,
    json: Value,
    report: &VerifyReport,
    text_before: String,
) -> anyhow::Result<()> {
    out.report(json, || format!("{text_before}{report}"));
    if !report.ok {
        // The report is the answer: exit without an extra error message (which would make
        // `--json` output two documents).
        let _ = std::io::stdout().flush();
        std::process::exit(1);
    }
    Ok(())
}

/// What one node answered.
struct Exported {
    chain: AuditChain,
    cluster_id: String,
    node_id: String,
    entries: Vec<AuditEntry>,
    checkpoints: Vec<Checkpoint>,
}

/// Reads the node's certificate chain, then its log from `from` (to `to`, or its newest
/// entry) page by page.
async fn fetch(
    client: &ApiClient,
    node: usize,
    from: u64,
    to: Option<u64>,
) -> anyhow::Result<Exported> {
    let answer = client.get_at(node, CHAIN_PATH).await.map_err(explain)?;
    let who = answer.node.clone();
    let chain: AuditChain = serde_json::from_value(answer.into_result().map_err(explain)?)
        .with_context(|| format!("node {who} answered {CHAIN_PATH} with an unexpected body"))?;
    let leaf = certs_from_pem(&chain.chain_pem)
        .map_err(|e| anyhow::anyhow!("node {who}: its certificate chain is unusable: {e}"))?;
    let identity = leaf
        .first()
        .map(identity_of)
        .transpose()
        .with_context(|| format!("node {who}: its certificate names no identity"))?
        .with_context(|| format!("node {who} sent an empty certificate chain"))?;
    let Subject::Node(node_id) = &identity.subject else {
        bail!(
            "node {who} sent a certificate of {}, not of a node",
            identity.uri()
        );
    };

    let who = who.as_str();
    let (entries, checkpoints) = fetch_log(
        |path| async move {
            let (status, body) = client.get_text_at(node, &path).await.map_err(explain)?;
            if status != 200 {
                bail!("node {who} answered {status} to {path}: {}", problem(&body));
            }
            Ok(body)
        },
        from,
        to,
    )
    .await
    .with_context(|| format!("exporting the audit log of node {who}"))?;
    Ok(Exported {
        cluster_id: identity.cluster.to_string(),
        node_id: node_id.to_string(),
        chain,
        entries,
        checkpoints,
    })
}

/// Reads entries `from..=to` (or to the newest) and their checkpoints through `get`, which
/// answers an export path with the body of a 200 answer, page by page.
async fn fetch_log<F, Fut>(
    mut get: F,
    from: u64,
    to: Option<u64>,
) -> anyhow::Result<(Vec<AuditEntry>, Vec<Checkpoint>)>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    let mut entries: Vec<AuditEntry> = Vec::new();
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut next = from;
    loop {
        if to.is_some_and(|to| next > to) {
            break;
        }
        let page_end = next.saturating_add(EXPORT_PAGE - 1);
        let page_end = to.map_or(page_end, |to| to.min(page_end));
        let path = format!("{EXPORT_PATH}?from_seq={next}&to_seq={page_end}");
        let body = get(path.clone()).await?;
        let (page, page_checkpoints) =
            parse_export(&body).with_context(|| format!("the answer to {path}"))?;
        let Some(last) = page.last().map(|e| e.seq) else {
            break;
        };
        // Only checkpoints of entries this page holds: one the node signed after it read
        // the page would point past the bundle's end.
        for c in page_checkpoints {
            if c.seq >= next && c.seq <= last && checkpoints.last().is_none_or(|p| c.seq > p.seq) {
                checkpoints.push(c);
            }
        }
        entries.extend(page);
        if last == u64::MAX {
            break;
        }
        // A page may end early (the log's end, or a node that caps its answers): go on from
        // the last entry received; an empty page ends the export.
        next = last + 1;
    }
    Ok((entries, checkpoints))
}

/// Writes the bundle, verifies it against `trusted_ca` and reports both.
fn export(out: &Output, dir: &Path, trusted_ca: &Path, e: &Exported) -> anyhow::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    let manifest = write_bundle(
        dir,
        &BundleContents {
            cluster_id: &e.cluster_id,
            node_id: &e.node_id,
            exported_at_unix_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            entries: &e.entries,
            checkpoints: &e.checkpoints,
            chain_pem: &e.chain.chain_pem,
            ca_pem: &e.chain.ca_pem,
        },
    )?;
    let report = verify_bundle(dir, Some(trusted_ca));
    let range = match (manifest.first_seq, manifest.last_seq) {
        (Some(a), Some(b)) => format!(" (seq {a}..{b})"),
        _ => String::new(),
    };
    let text = format!(
        "exported {} entries{range} and {} checkpoints of node {} to {}\n\
         verified against {}:\n",
        manifest.entries,
        manifest.checkpoints,
        e.node_id,
        dir.display(),
        trusted_ca.display()
    );
    let json = json!({
        "bundle": dir.display().to_string(),
        "manifest": manifest,
        "verification": report,
    });
    finish(out, json, &report, text)
}

/// The detail of a problem document, or the body itself.
fn problem(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("detail")
                .or_else(|| v.get("title"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| body.chars().take(512).collect())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use strongroom_audit::export::export_lines;
    use strongroom_audit::{AuditEvent, EventKind, GENESIS_PREV_HASH, verify_chain};

    use super::*;

    /// A node's log behind the export contract, answering at most `cap` entries per request
    /// (but every checkpoint of the range asked for).
    struct FakeNode {
        entries: Vec<AuditEntry>,
        checkpoints: Vec<Checkpoint>,
        cap: usize,
        requests: RefCell<Vec<String>>,
    }

    impl FakeNode {
        fn new(n: u64, checkpoint_every: u64, cap: usize) -> FakeNode {
            let mut prev = GENESIS_PREV_HASH;
            let entries: Vec<AuditEntry> = (0..n)
                .map(|seq| {
                    let e = AuditEvent::new("node-1", EventKind::VoteCast)
                        .seal(seq, seq, prev)
                        .unwrap();
                    prev = e.hash;
                    e
                })
                .collect();
            let checkpoints = entries
                .iter()
                .filter(|e| e.seq % checkpoint_every == checkpoint_every - 1)
                .map(|e| Checkpoint {
                    cluster_id: "vault".into(),
                    node_id: "node-1".into(),
                    seq: e.seq,
                    head_hash: e.hash,
                    time_unix_ms: e.seq,
                    signature: [0; 64],
                })
                .collect();
            FakeNode {
                entries,
                checkpoints,
                cap,
                requests: RefCell::new(Vec::new()),
            }
        }

        fn answer(&self, path: &str) -> anyhow::Result<String> {
            self.requests.borrow_mut().push(path.to_owned());
            let query = path
                .strip_prefix("/v1/audit/export?")
                .context("wrong path")?;
            let mut from = 0;
            let mut to = u64::MAX;
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some(("from_seq", v)) => from = v.parse()?,
                    Some(("to_seq", v)) => to = v.parse()?,
                    _ => bail!("unexpected query {pair}"),
                }
            }
            let entries: Vec<AuditEntry> = self
                .entries
                .iter()
                .filter(|e| (from..=to).contains(&e.seq))
                .take(self.cap)
                .cloned()
                .collect();
            let checkpoints: Vec<Checkpoint> = self
                .checkpoints
                .iter()
                .filter(|c| (from..=to).contains(&c.seq))
                .cloned()
                .collect();
            Ok(export_lines(&entries, &checkpoints)?)
        }
    }

    async fn export(node: &FakeNode, from: u64, to: Option<u64>) -> (Vec<u64>, Vec<u64>) {
        let (entries, checkpoints) = fetch_log(|path| async move { node.answer(&path) }, from, to)
            .await
            .unwrap();
        verify_chain(&entries).unwrap();
        (
            entries.iter().map(|e| e.seq).collect(),
            checkpoints.iter().map(|c| c.seq).collect(),
        )
    }

    #[tokio::test]
    async fn pages_cover_the_whole_log_once() {
        let node = FakeNode::new(23, 5, 7);
        let (entries, checkpoints) = export(&node, 0, None).await;
        assert_eq!(entries, (0..23).collect::<Vec<_>>());
        assert_eq!(checkpoints, [4, 9, 14, 19]);
        // 0..6, 7..13, 14..20, 21..22, then an empty page ends it.
        assert_eq!(node.requests.borrow().len(), 5);
    }

    #[tokio::test]
    async fn a_range_stays_within_its_bounds() {
        let node = FakeNode::new(23, 5, 100);
        let (entries, checkpoints) = export(&node, 5, Some(12)).await;
        assert_eq!(entries, (5..=12).collect::<Vec<_>>());
        assert_eq!(checkpoints, [9]);
        assert_eq!(
            *node.requests.borrow(),
            ["/v1/audit/export?from_seq=5&to_seq=12"]
        );
    }

    #[tokio::test]
    async fn an_empty_log_exports_nothing_and_errors_propagate() {
        let node = FakeNode::new(0, 5, 100);
        assert_eq!(export(&node, 0, None).await, (vec![], vec![]));
        let err = fetch_log(
            |_| async { Err::<String, _>(anyhow::anyhow!("node node-1 answered 403")) },
            0,
            None,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("403"), "{err}");
    }
}
