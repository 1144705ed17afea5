//! A spending cap is a cap: concurrent requests are counted against each other, and a peer's
//! `failed` does not take a released spend out of the window.

use serde_json::json;
use strongroom_tests::psbt::{Out, build_psbt, foreign_address, submit, wait_state};

use crate::{COMPROMISED, Ctx, N};

/// Requests that end, with the state each ended in on node-1.
async fn ends(ctx: &Ctx, ids: &[String]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for id in ids {
        out.push(wait_state(&ctx.ops, 0, id, &["signed", "rejected"]).await);
    }
    out
}

/// Four 600,000-sat PSBTs (each within the 1,000,000 per-transaction limit, together 2.4M
/// against a 1.5M hourly cap) submitted at the same moment to all three nodes: exactly two
/// are signed, the others are rejected naming the cap rule, on every node.
pub(crate) async fn concurrent_requests_fit_the_cap(ctx: &Ctx) {
    let psbts: Vec<_> = (0..4u32)
        .map(|i| {
            build_psbt(
                &ctx.key,
                &[(100 + i, 700_000)],
                &[
                    Out::To(foreign_address(), 600_000),
                    Out::Change(100 + i, 99_000),
                ],
            )
            .0
        })
        .collect();
    let submits = psbts
        .iter()
        .enumerate()
        .map(|(i, psbt)| submit(&ctx.wallet, i % N, &ctx.key, psbt));
    let answers = futures::future::join_all(submits).await;
    let ids: Vec<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 202, "{body}");
            body["request_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let ended = ends(ctx, &ids).await;
    let signed = ended.iter().filter(|b| b["state"] == "signed").count();
    assert_eq!(
        signed, 2,
        "two 600,000-sat spends fit a 1,500,000 cap: {ended:#?}"
    );
    for body in ended.iter().filter(|b| b["state"] == "rejected") {
        let text = body.to_string();
        assert!(
            text.contains("hourly-cap"),
            "a rejection names the cap rule: {body}"
        );
    }
    // Every node ends every request the same way.
    for node in 1..N {
        for (id, first) in ids.iter().zip(&ended) {
            let state = first["state"].as_str().unwrap();
            let here = wait_state(&ctx.ops, node, id, &["signed", "rejected"]).await;
            assert_eq!(here["state"], state, "node-{} differs on {id}", node + 1);
        }
    }
}

/// The compromised node sends `failed` for a signed request to every honest node: each
/// refuses it, the request stays signed, and its spend keeps counting (a new request over the
/// cap is rejected).
pub(crate) async fn a_peers_failed_keeps_a_released_spend(ctx: &Ctx) {
    let r = ctx
        .ops
        .get_at(0, "/v1/sign-requests?state=signed")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let signed: Vec<String> = r.body["sign_requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["state"] == "signed")
        .map(|q| q["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!signed.is_empty(), "the previous phase signed requests");
    for id in &signed {
        for honest in 0..N {
            if honest == COMPROMISED {
                continue;
            }
            let reply = ctx
                .from_compromised(
                    honest,
                    json!({"type": "failed", "request_id": id, "error": "made up"}),
                )
                .await;
            assert_eq!(
                reply["error"]["kind"],
                "refused",
                "node-{} must refuse a peer's failed for signed request {id}: {reply}",
                honest + 1
            );
            let here = ctx
                .ops
                .get_at(honest, &format!("/v1/sign-requests/{id}"))
                .await
                .unwrap();
            assert_eq!(here.body["state"], "signed", "{}", here.body);
        }
    }
    // 1,200,000 sat were signed this hour: another 600,000 is over the cap.
    let (psbt, _) = build_psbt(
        &ctx.key,
        &[(200, 700_000)],
        &[
            Out::To(foreign_address(), 600_000),
            Out::Change(200, 99_000),
        ],
    );
    let (status, body) = submit(&ctx.wallet, 0, &ctx.key, &psbt).await;
    assert_eq!(status, 202, "{body}");
    let id = body["request_id"].as_str().unwrap();
    let ended = wait_state(&ctx.ops, 0, id, &["signed", "rejected"]).await;
    assert_eq!(ended["state"], "rejected", "{ended}");
    assert!(ended.to_string().contains("hourly-cap"), "{ended}");
}
