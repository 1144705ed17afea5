//! `strongroom cluster status`: a node's view of the cluster through its API (`GET
//! /v1/cluster`): members, leases, connections, the leader, and each peer's attestation.

use clap::Args;
use serde_json::{Value, json};

use crate::api_args::{ApiArgs, explain};
use crate::output::{Output, render_table};

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Ask every node in --api-urls for its view, not only the first that answers.
    #[arg(long)]
    all: bool,
}

pub(crate) fn run(args: StatusArgs, out: &Output) -> anyhow::Result<()> {
    let api = args.api.client()?;
    let runtime = super::runtime()?;
    runtime.block_on(async {
        if !args.all {
            let view = api
                .get("/v1/cluster")
                .await
                .map_err(explain)?
                .into_result()
                .map_err(explain)?;
            out.report(view.clone(), || render(&view));
            return Ok(());
        }
        let mut views = Vec::new();
        let mut text = String::new();
        for index in 0..api.urls().len() {
            match api
                .get_at(index, "/v1/cluster")
                .await
                .map(|r| r.into_result())
            {
                Ok(Ok(view)) => {
                    text.push_str(&render(&view));
                    views.push(view);
                }
                Ok(Err(e)) | Err(e) => {
                    let e = explain(e);
                    text.push_str(&format!("node at URL #{}: {e:#}\n", index + 1));
                    views.push(json!({ "error": format!("{e:#}") }));
                }
            }
            text.push('\n');
        }
        out.report(json!({ "views": views }), || text);
        Ok(())
    })
}

fn yes_no(v: &Value) -> &'static str {
    match v.as_bool() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

fn short(hex: &Value) -> String {
    hex.as_str()
        .map(|h| h.chars().take(16).collect::<String>())
        .unwrap_or_else(|| "-".into())
}

fn admission(member: &Value) -> String {
    if member["this_node"] == true {
        return "(this node)".into();
    }
    let a = &member["admission"];
    match a["state"].as_str() {
        Some("admitted") if a["profile_id"].is_null() => {
            "admitted (certificate only: no firmware profile)".into()
        }
        Some("admitted") => {
            let mut s = format!(
                "admitted: profile {}, binary {}",
                a["profile_id"].as_str().unwrap_or("?"),
                short(&a["binary_sha256"])
            );
            if !a["tpm_ak_sha256"].is_null() {
                s.push_str(&format!(", TPM key {}", short(&a["tpm_ak_sha256"])));
            }
            s
        }
        Some("refused") => format!(
            "REFUSED on {}: {}",
            a["field"].as_str().unwrap_or("?"),
            a["reason"].as_str().unwrap_or("?")
        ),
        Some(other) => match a["last_error"].as_str() {
            Some(e) => format!("{other}: {e}"),
            None => other.to_owned(),
        },
        None => "-".into(),
    }
}

/// One node's view, for people.
fn render(view: &Value) -> String {
    let me = view["node_id"].as_str().unwrap_or("?");
    let mut s = format!(
        "cluster {} as node {me} sees it; leader: {}\n",
        view["cluster_id"].as_str().unwrap_or("?"),
        view["leader"].as_str().unwrap_or("none"),
    );
    s.push_str(&format!(
        "etcd reachable: {}; aux info ready: {}; primes ready: {}{}\n",
        yes_no(&view["etcd"]["reachable"]),
        yes_no(&view["aux_info"]["ready"]),
        yes_no(&view["primes"]["ready"]),
        if view["dev_mode"] == true {
            "; DEV MODE"
        } else {
            ""
        }
    ));
    let rows: Vec<Vec<String>> = view["members"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|m| {
            vec![
                m["node_id"].as_str().unwrap_or("?").to_owned(),
                yes_no(&m["lease"]).to_owned(),
                if m["this_node"] == true {
                    "-".into()
                } else {
                    yes_no(&m["connected"]).to_owned()
                },
                m["rtt_ms"]
                    .as_f64()
                    .map(|ms| format!("{ms:.1} ms"))
                    .unwrap_or_else(|| "-".into()),
                admission(m),
            ]
        })
        .collect();
    s.push_str(&render_table(
        &["NODE", "LEASE", "CONNECTED", "RTT", "ATTESTATION"],
        &rows,
    ));
    let a = &view["attestation"];
    if let Some(profile) = a["profile_id"].as_str() {
        s.push_str(&format!(
            "this node: profile {profile} ({}), binary {}, token {} {} {}",
            a["profile_mode"].as_str().unwrap_or("?"),
            short(&a["binary_sha256"]),
            a["token"]["manufacturer"].as_str().unwrap_or("?"),
            a["token"]["model"].as_str().unwrap_or("?"),
            a["token"]["firmware_version"].as_str().unwrap_or("?"),
        ));
        let tpm = &a["tpm"];
        if tpm.is_object() {
            s.push_str(&format!(
                ", TPM {} key {} at {}",
                tpm["tcti"].as_str().unwrap_or("?"),
                short(&tpm["ak_sha256"]),
                tpm["ak_handle"].as_str().unwrap_or("?"),
            ));
        }
        s.push('\n');
    } else {
        s.push_str("this node: no firmware profile (dev mode): peers admitted on their certificate alone\n");
    }
    for r in a["refused_by"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        s.push_str(&format!(
            "this node is REFUSED by {}: {}\n",
            r["peer"].as_str().unwrap_or("?"),
            r["detail"].as_str().unwrap_or("?")
        ));
    }
    s
}
