//! `strongroom cluster`: the cluster CA, node and client certificates (and `cluster status`,
//! in [`super::cluster_status`]).
//!
//! Two ways to provision:
//!
//! - **dev** (`cluster init`): one command creates the CA (its key in a file, mode 0600), each
//!   node's identity key inside that node's token with its certificate, and client keys as files.
//! - **ceremony**: on each node, `cluster csr` has the token create (or reuse) the identity key
//!   and sign a certificate request with it; on the CA machine, `cluster sign` checks the
//!   request names the expected identity of this cluster and issues the certificate; back on the
//!   node, `cluster install` checks the certificate belongs to the token's key and chains to the
//!   CA before putting it in place.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;
use strongroom_keystore::{PinSource, Token, TokenConfig};
use strongroom_transport::pki::{
    CA_CERT_FILE, CA_KEY_FILE, CertificateDer, ClusterCa, SoftwareKey, Validity, cert_to_pem,
    certs_from_pem, create_csr, identity_of, write_secret_file,
};
use strongroom_transport::verify::check_node_certificate;
use strongroom_transport::{ClientName, ClusterId, NodeId, SpiffeId, Subject};

use crate::output::Output;
use crate::token_args::TokenArgs;

/// Roles a client may have (the node configuration assigns them; the certificate only names
/// the client).
const CLIENT_ROLES: [&str; 4] = ["submitter", "approver", "admin", "auditor"];

/// Placeholder for the node id in `--token-label` and `--pin-file` during `cluster init`.
const NODE_PLACEHOLDER: &str = "{node}";

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// A node's view of the cluster through its API: members, leases, connections, the leader
    /// and each peer's attestation (admitted, or refused with the field that did not match).
    Status(super::cluster_status::StatusArgs),
    /// Dev way: create the CA (key in a file), each node's key in its own token with its
    /// certificate, and client keys as files. Name each node's token with `{node}` in
    /// --token-label (and --pin-file), e.g. --token-label 'strongroom-dev-{node}'.
    Init {
        /// Cluster id (lowercase letters, digits, '-').
        #[arg(long)]
        cluster_id: String,
        /// Node ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// Clients as name:role, comma-separated; roles: submitter, approver, admin, auditor.
        #[arg(long, value_delimiter = ',')]
        clients: Vec<String>,
        /// Directory to write into (created; must not already hold a CA).
        #[arg(long)]
        out: PathBuf,
        /// Validity of the CA certificate, days.
        #[arg(long, default_value_t = 3650)]
        ca_days: u32,
        /// Validity of node and client certificates, days.
        #[arg(long, default_value_t = 365)]
        cert_days: u32,
    },
    /// Ceremony way, on the node: create (or reuse) the identity key in this node's token and
    /// write a certificate request signed by it.
    Csr {
        /// Cluster id.
        #[arg(long)]
        cluster_id: String,
        /// This node's id.
        #[arg(long)]
        node_id: String,
        /// Where to write the request (PEM).
        #[arg(long)]
        out: PathBuf,
    },
    /// Ceremony way, on the CA machine: check a request and issue its certificate.
    Sign {
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long)]
        ca: PathBuf,
        /// Cluster id the CA signs for.
        #[arg(long)]
        cluster_id: String,
        /// The request (PEM).
        #[arg(long)]
        csr: PathBuf,
        /// The node the request must be for (recommended: refuses a request for anyone else).
        #[arg(long, conflicts_with = "client")]
        node_id: Option<String>,
        /// The client the request must be for.
        #[arg(long)]
        client: Option<String>,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        out: PathBuf,
        /// Validity, days.
        #[arg(long, default_value_t = 365)]
        cert_days: u32,
    },
    /// Ceremony way, back on the node: check a certificate against the token's key and the CA,
    /// then install both into a directory.
    Install {
        /// Cluster id.
        #[arg(long)]
        cluster_id: String,
        /// This node's id.
        #[arg(long)]
        node_id: String,
        /// The issued certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// The cluster CA certificate (PEM).
        #[arg(long)]
        ca_cert: PathBuf,
        /// Directory to install into: `<node-id>.pem` and `ca.pem`.
        #[arg(long)]
        out: PathBuf,
    },
}

pub(crate) fn run(cmd: ClusterCommand, args: &TokenArgs, out: &Output) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status(status) => super::cluster_status::run(status, out),
        ClusterCommand::Init {
            cluster_id,
            nodes,
            clients,
            out: dir,
            ca_days,
            cert_days,
        } => init(
            args,
            out,
            &cluster_id,
            &nodes,
            &clients,
            &dir,
            ca_days,
            cert_days,
        ),
        ClusterCommand::Csr {
            cluster_id,
            node_id,
            out: path,
        } => {
            let cluster = ClusterId::new(cluster_id)?;
            let node = NodeId::new(node_id)?;
            let config = args.config()?;
            let (token, _) = Token::provision(&config)
                .with_context(|| format!("cannot open token '{}'", config.label))?;
            let key = token.identity();
            let id = SpiffeId::node(cluster, node);
            let csr = create_csr(&id, &key).context("the token could not sign the request")?;
            write_new(&path, csr.as_bytes())?;
            let fingerprint = key.public_key().fingerprint_hex();
            out.report(
                json!({ "identity": id.uri(), "csr": path, "token": token.label(),
                        "identity_fingerprint_sha256": fingerprint }),
                || {
                    format!(
                        "wrote {} for {id}\n  signed by the identity key in token '{}' (sha256:{fingerprint})\n  next: strongroom cluster sign --ca <ca-dir> --cluster-id {} --node-id {} --csr {} --out <cert.pem>\n",
                        path.display(),
                        token.label(),
                        id.cluster,
                        id.subject.name(),
                        path.display()
                    )
                },
            );
            Ok(())
        }
        ClusterCommand::Sign {
            ca,
            cluster_id,
            csr,
            node_id,
            client,
            out: path,
            cert_days,
        } => {
            let cluster = ClusterId::new(cluster_id)?;
            let ca = ClusterCa::load_files(&cluster, &ca)?;
            let expected = match (node_id, client) {
                (Some(n), _) => Some(Subject::Node(NodeId::new(n)?)),
                (None, Some(c)) => Some(Subject::Client(ClientName::new(c)?)),
                (None, None) => None,
            };
            let request = fs::read_to_string(&csr)
                .with_context(|| format!("cannot read {}", csr.display()))?;
            let cert = ca
                .sign_csr(
                    &request,
                    expected.as_ref(),
                    Validity::days_from_now(cert_days),
                )
                .with_context(|| format!("refused to sign {}", csr.display()))?;
            write_new(&path, cert.pem().as_bytes())?;
            out.report(
                json!({ "identity": cert.identity.uri(), "certificate": path, "days": cert_days,
                        "checked_against": expected.clone().map(|s| SpiffeId { cluster: cluster.clone(), subject: s }.uri()) }),
                || {
                    let mut s = format!(
                        "issued {} for {} (valid {cert_days} days)\n",
                        path.display(),
                        cert.identity
                    );
                    if expected.is_none() {
                        s.push_str("  note: pass --node-id or --client to refuse requests for anyone else\n");
                    }
                    s
                },
            );
            Ok(())
        }
        ClusterCommand::Install {
            cluster_id,
            node_id,
            cert,
            ca_cert,
            out: dir,
        } => {
            let cluster = ClusterId::new(cluster_id)?;
            let node = NodeId::new(node_id)?;
            let chain = read_certs(&cert)?;
            let ca = read_certs(&ca_cert)?
                .into_iter()
                .next()
                .with_context(|| format!("{} holds no certificate", ca_cert.display()))?;
            let config = args.config()?;
            let token = Token::open(&config).with_context(|| {
                format!(
                    "cannot open token '{}' (run `strongroom cluster csr` first)",
                    config.label
                )
            })?;
            let key = token.identity();
            let spki = key.public_key().spki_der();
            let not_after = check_node_certificate(&ca, &chain, &cluster, &node, Some(&spki))
                .with_context(|| format!("{} cannot be installed", cert.display()))?;
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let cert_path = dir.join(format!("{node}.pem"));
            let ca_path = dir.join(CA_CERT_FILE);
            let chain_pem: String = chain.iter().map(cert_to_pem).collect();
            fs::write(&cert_path, chain_pem)
                .with_context(|| format!("cannot write {}", cert_path.display()))?;
            fs::write(&ca_path, cert_to_pem(&ca))
                .with_context(|| format!("cannot write {}", ca_path.display()))?;
            let days_left = not_after
                .duration_since(std::time::SystemTime::now())
                .map(|d| d.as_secs() / 86_400)
                .unwrap_or(0);
            out.report(
                json!({ "identity": SpiffeId::node(cluster.clone(), node.clone()).uri(),
                        "certificate": cert_path, "ca": ca_path, "token": token.label(),
                        "days_left": days_left }),
                || {
                    format!(
                        "installed {} and {}\n  matches the identity key in token '{}', chains to the cluster CA, {days_left} days left\n",
                        cert_path.display(),
                        ca_path.display(),
                        token.label()
                    )
                },
            );
            Ok(())
        }
    }
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    certs_from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Writes a file that must not exist yet.
fn write_new(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The token of `node` in the dev way: `{node}` in the label and PIN file replaced.
fn node_token(base: &TokenConfig, node: &NodeId) -> TokenConfig {
    let fill = |s: &str| s.replace(NODE_PLACEHOLDER, node.as_str());
    TokenConfig {
        module: base.module.clone(),
        label: fill(&base.label),
        pin: match &base.pin {
            PinSource::File(p) => PinSource::File(PathBuf::from(fill(&p.to_string_lossy()))),
            PinSource::Env(v) => PinSource::Env(v.clone()),
        },
    }
}

// The `init` arguments, passed through from clap as they are.
#[allow(clippy::too_many_arguments)]
fn init(
    args: &TokenArgs,
    out: &Output,
    cluster_id: &str,
    nodes: &[String],
    clients: &[String],
    dir: &Path,
    ca_days: u32,
    cert_days: u32,
) -> anyhow::Result<()> {
    let cluster = ClusterId::new(cluster_id)?;
    let nodes: Vec<NodeId> = nodes
        .iter()
        .map(|n| NodeId::new(n.as_str()))
        .collect::<Result<_, _>>()?;
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = nodes.iter().find(|n| !seen.insert(*n)) {
        bail!("node '{dup}' is listed twice in --nodes");
    }
    let mut client_list = Vec::new();
    for c in clients {
        let Some((name, role)) = c.split_once(':') else {
            bail!(
                "client '{c}' must be written name:role (roles: {})",
                CLIENT_ROLES.join(", ")
            );
        };
        if !CLIENT_ROLES.contains(&role) {
            bail!(
                "client '{name}' has role '{role}'; roles are {}",
                CLIENT_ROLES.join(", ")
            );
        }
        client_list.push((ClientName::new(name)?, role.to_owned()));
    }
    let base = args.config()?;
    if nodes.len() > 1 && !base.label.contains(NODE_PLACEHOLDER) {
        bail!(
            "each node needs its own token: put {NODE_PLACEHOLDER} in --token-label, e.g. --token-label 'strongroom-dev-{NODE_PLACEHOLDER}'"
        );
    }

    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca = ClusterCa::generate(&cluster, Validity::days_from_now(ca_days))?;
    ca.write_files(dir)?;
    let validity = Validity::days_from_now(cert_days);

    let nodes_dir = dir.join("nodes");
    fs::create_dir_all(&nodes_dir)
        .with_context(|| format!("cannot create {}", nodes_dir.display()))?;
    let mut node_rows = Vec::new();
    for node in &nodes {
        let config = node_token(&base, node);
        let (token, report) = Token::provision(&config).with_context(|| {
            format!("cannot provision token '{}' for node '{node}' (create the token first, e.g. deploy/dev/run.sh)", config.label)
        })?;
        let key = token.identity();
        let cert = ca.issue(Subject::Node(node.clone()), &key, validity)?;
        let path = nodes_dir.join(format!("{node}.pem"));
        write_new(&path, cert.pem().as_bytes())?;
        node_rows.push(json!({
            "node": node, "identity": cert.identity.uri(), "token": config.label,
            "identity_key_created": report.identity_created,
            "identity_fingerprint_sha256": key.public_key().fingerprint_hex(),
            "certificate": path,
        }));
    }

    let clients_dir = dir.join("clients");
    let mut client_rows = Vec::new();
    if !client_list.is_empty() {
        fs::create_dir_all(&clients_dir)
            .with_context(|| format!("cannot create {}", clients_dir.display()))?;
    }
    for (name, role) in &client_list {
        let key = SoftwareKey::generate()?;
        let cert = ca.issue(Subject::Client(name.clone()), key.rcgen_key(), validity)?;
        let cert_path = clients_dir.join(format!("{name}.pem"));
        let key_path = clients_dir.join(format!("{name}-key.pem"));
        write_new(&cert_path, cert.pem().as_bytes())?;
        write_secret_file(&key_path, key.to_pem().as_bytes())
            .with_context(|| format!("cannot write {}", key_path.display()))?;
        client_rows.push(json!({
            "client": name, "role": role, "identity": identity_of(&cert.der)?.uri(),
            "certificate": cert_path, "key": key_path,
        }));
    }

    let summary = json!({
        "cluster_id": cluster,
        "ca_certificate": dir.join(CA_CERT_FILE),
        "ca_key": dir.join(CA_KEY_FILE),
        "nodes": node_rows,
        "clients": client_rows,
    });
    let summary_path = dir.join("cluster.json");
    write_new(&summary_path, format!("{summary:#}\n").as_bytes())?;
    out.report(summary.clone(), || {
        let mut s = format!(
            "cluster '{cluster}' initialised in {} (dev way: the CA key is a file)\n",
            dir.display()
        );
        let _ = writeln!(
            s,
            "  CA:      {} (key {}, mode 0600)",
            dir.join(CA_CERT_FILE).display(),
            dir.join(CA_KEY_FILE).display()
        );
        for row in &node_rows {
            let _ = writeln!(
                s,
                "  node:    {} key in token '{}', certificate {}",
                row["identity"].as_str().unwrap_or_default(),
                row["token"].as_str().unwrap_or_default(),
                row["certificate"].as_str().unwrap_or_default()
            );
        }
        for row in &client_rows {
            let _ = writeln!(
                s,
                "  client:  {} ({}), certificate {}, key {}",
                row["identity"].as_str().unwrap_or_default(),
                row["role"].as_str().unwrap_or_default(),
                row["certificate"].as_str().unwrap_or_default(),
                row["key"].as_str().unwrap_or_default()
            );
        }
        let _ = writeln!(s, "  summary: {}", summary_path.display());
        s
    });
    Ok(())
}
