//! Requests between peers: round trips, concurrency, limits, refusals, timeouts, identity.

use std::sync::Arc;
use std::time::Duration;

use super::util::*;
use crate::events::RequestRefusal;
use crate::ids::NodeId;
use crate::node::{Limits, Node};
use crate::rpc::{IncomingRequest, RequestError};

const T: Duration = Duration::from_secs(5);

/// The answer the test handlers give: the body reversed, then the handler's node id.
fn answer_for(me: &NodeId, body: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = body.iter().rev().copied().collect();
    out.extend_from_slice(me.as_str().as_bytes());
    out
}

/// Answers every request with [`answer_for`] until the inbox closes.
fn serve(node: &Node) {
    let mut inbox = node.take_requests().unwrap();
    let me = node.id().clone();
    tokio::spawn(async move {
        while let Some(req) = inbox.recv().await {
            let answer = answer_for(&me, &req.body);
            req.respond(answer);
        }
    });
}

async fn two(limits: Limits) -> Vec<Node> {
    let (_ca, ms) = members_with(2, limits);
    let nodes = start_all(ms).await;
    all_connected(&nodes).await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_round_trip_both_ways() {
    init_tracing();
    let nodes = two(Limits::default()).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    serve(n1);
    serve(n2);
    assert!(n1.take_requests().is_none(), "the inbox is taken once");

    let a = n1.request(n2.id(), b"from one".to_vec(), T).await.unwrap();
    assert_eq!(a, answer_for(n2.id(), b"from one"));
    let b = n2.request(n1.id(), b"from two".to_vec(), T).await.unwrap();
    assert_eq!(b, answer_for(n1.id(), b"from two"));
    // No deadline at all is fine too.
    let d = n1
        .request(n2.id(), b"x".to_vec(), Duration::MAX)
        .await
        .unwrap();
    assert_eq!(d, answer_for(n2.id(), b"x"));
    // An empty body.
    let empty = n1.request(n2.id(), Vec::new(), T).await.unwrap();
    assert_eq!(empty, answer_for(n2.id(), b""));

    // Probes still work alongside requests.
    let c = n1.connection(n2.id()).unwrap();
    crate::conn::probe(&c, T).await.unwrap();

    // Requests to self or to a stranger are not supported.
    let err = n1.request(n1.id(), b"me".to_vec(), T).await.unwrap_err();
    assert!(matches!(&err, RequestError::NotConnected { peer } if peer == n1.id()));
    assert!(err.to_string().contains("node-1"), "{err}");
    let err = n1
        .request(&node_id("node-9"), b"?".to_vec(), T)
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::NotConnected { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_are_all_answered() {
    init_tracing();
    let nodes = two(Limits::default()).await;
    serve(&nodes[1]);
    let nodes: Vec<Arc<Node>> = nodes.into_iter().map(Arc::new).collect();
    let (n1, n2) = (nodes[0].clone(), nodes[1].id().clone());
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let (n1, n2) = (n1.clone(), n2.clone());
            tokio::spawn(async move {
                // Sizes vary from a few bytes to ~40 KiB.
                let body: Vec<u8> = (0..(i * 200 + 4))
                    .map(|j| (i.wrapping_mul(31) ^ j) as u8)
                    .collect();
                let answer = n1.request(&n2, body.clone(), T).await.unwrap();
                assert_eq!(answer, answer_for(&n2, &body), "request {i}");
            })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_and_the_connection_carries_on() {
    init_tracing();
    // node-1 accepts at most 64 KiB; node-2 may send up to 8 MiB.
    let (_ca, mut ms) = members(2);
    ms[0].config.limits.max_request_bytes = 64 * 1024;
    ms[1].config.limits.max_request_bytes = 8 * 1024 * 1024;
    let nodes = start_all(ms).await;
    all_connected(&nodes).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    serve(n1);
    serve(n2);
    let conn = n1.connection(n2.id()).unwrap().stable_id();

    // Over the sender's own limit: refused locally, nothing sent.
    let err = n1
        .request(n2.id(), vec![7; 64 * 1024 + 1], T)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RequestError::TooLarge {
            size: 64 * 1024 + 1,
            limit: 64 * 1024
        }
    );
    // Within the sender's limit but over the receiver's: the receiver refuses from the length
    // prefix and stops reading (the body is larger than the stream's flow-control window, so
    // the sender's write fails); its refusal still reaches the sender.
    let err = n2
        .request(n1.id(), vec![7; 4 * 1024 * 1024], T)
        .await
        .unwrap_err();
    match &err {
        RequestError::Refused { peer, reason } => {
            assert_eq!(peer, n1.id());
            assert!(
                reason.contains("exceeds the limit of 65536 bytes"),
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {other}"),
    }
    assert_eq!(n1.events().count("request.too_large"), 1);

    // Exactly at the limit is accepted, but the handler's answer (the body and its node id)
    // is over it: not sent, refused instead.
    let err = n2
        .request(n1.id(), vec![3; 64 * 1024], T)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RequestError::Refused { reason, .. }
            if reason == "answer of 65542 bytes exceeds the limit of 65536 bytes"),
        "{err}"
    );
    assert_eq!(n1.events().count("request.answer_too_large"), 1);

    // Within the limits both ways, and the same connection carries on.
    let body = vec![3; 64 * 1024 - 6];
    let a = n2.request(n1.id(), body.clone(), T).await.unwrap();
    assert_eq!(a, answer_for(n1.id(), &body));
    let a = n1
        .request(n2.id(), b"still here".to_vec(), T)
        .await
        .unwrap();
    assert_eq!(a, answer_for(n2.id(), b"still here"));
    assert_eq!(n1.connection(n2.id()).unwrap().stable_id(), conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_to_a_node_without_a_handler_is_refused() {
    init_tracing();
    let nodes = two(Limits::default()).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let mut events = n2.subscribe_events();
    let err = n1.request(n2.id(), b"hello".to_vec(), T).await.unwrap_err();
    match &err {
        RequestError::Refused { peer, reason } => {
            assert_eq!(peer, n2.id());
            assert_eq!(reason, "no request handler installed");
        }
        other => panic!("expected a refusal, got {other}"),
    }
    assert!(err.to_string().contains("node-2"), "{err}");
    match events.recv().await.unwrap() {
        crate::events::TransportEvent::RequestRefused { peer, reason } => {
            assert_eq!(&peer, n1.id());
            assert_eq!(reason, RequestRefusal::NoHandler);
        }
        other => panic!("unexpected event {other:?}"),
    }
    assert_eq!(n2.events().count("request.no_handler"), 1);

    // Once the handler is gone, requests are refused again.
    drop(n2.take_requests().unwrap());
    let err = n1.request(n2.id(), b"hello".to_vec(), T).await.unwrap_err();
    assert!(
        matches!(&err, RequestError::Refused { reason, .. } if reason == "request handler stopped"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_request_is_refused() {
    init_tracing();
    let nodes = two(Limits::default()).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let mut inbox = n2.take_requests().unwrap();
    tokio::spawn(async move {
        while let Some(req) = inbox.recv().await {
            let text = format!("{req:?}");
            assert!(
                text.contains("body_len: 6") && !text.contains("115"),
                "{text}"
            );
            drop(req);
        }
    });
    let err = n1
        .request(n2.id(), b"secret".to_vec(), T)
        .await
        .unwrap_err();
    match &err {
        RequestError::Refused { peer, reason } => {
            assert_eq!(peer, n2.id());
            assert_eq!(reason, "dropped without an answer");
        }
        other => panic!("expected a refusal, got {other}"),
    }
    assert_eq!(n2.events().count("request.unanswered"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_request_times_out_and_a_full_inbox_refuses() {
    init_tracing();
    let limits = Limits {
        request_inbox: 1,
        ..Limits::default()
    };
    let nodes = two(limits).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let mut inbox = n2.take_requests().unwrap();

    // The handler holds the first request and never answers it.
    let wait = Duration::from_millis(300);
    let t0 = tokio::time::Instant::now();
    let err = n1
        .request(n2.id(), b"one".to_vec(), wait)
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert_eq!(
        err,
        RequestError::Timeout {
            peer: n2.id().clone(),
            after: wait
        }
    );
    assert!(took >= wait && took < wait * 3, "took {took:?}");

    // The inbox (capacity 1) still holds it: the next request is refused at once.
    let err = n1.request(n2.id(), b"two".to_vec(), T).await.unwrap_err();
    assert!(
        matches!(&err, RequestError::Refused { reason, .. } if reason == "request inbox full"),
        "{err}"
    );
    assert_eq!(n2.events().count("request.inbox_full"), 1);

    // Answering after the requester gave up is harmless; then the inbox works again.
    let late: IncomingRequest = inbox.recv().await.unwrap();
    assert_eq!(late.body, b"one");
    late.respond(b"too late".to_vec());
    let n2_id = n2.id().clone();
    tokio::spawn(async move {
        while let Some(req) = inbox.recv().await {
            let answer = answer_for(&n2_id, &req.body);
            req.respond(answer);
        }
    });
    let a = n1.request(n2.id(), b"three".to_vec(), T).await.unwrap();
    assert_eq!(a, answer_for(n2.id(), b"three"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_request_names_the_authenticated_sender() {
    init_tracing();
    let (_ca, ms) = members(3);
    let nodes = start_all(ms).await;
    all_connected(&nodes).await;
    let mut inbox = nodes[1].take_requests().unwrap();
    let handler = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (peer, body, responder) = inbox.recv().await.unwrap().into_parts();
            // The body claims a sender; the transport's peer is what counts.
            seen.push((peer.clone(), String::from_utf8(body).unwrap()));
            responder.respond(peer.as_str().as_bytes().to_vec());
        }
        seen
    });
    for i in [0, 2] {
        let a = nodes[i]
            .request(nodes[1].id(), b"I am node-3".to_vec(), T)
            .await
            .unwrap();
        assert_eq!(a, nodes[i].id().as_str().as_bytes());
    }
    let seen = handler.await.unwrap();
    assert_eq!(
        seen,
        vec![
            (node_id("node-1"), "I am node-3".to_owned()),
            (node_id("node-3"), "I am node-3".to_owned()),
        ]
    );
}

/// Both ends of one connection derive the same exporter value for a request: the answerer
/// from the connection the request arrived on, the requester from the one it sent on. Another
/// connection (another pair, or the same pair after reconnecting) has another value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_of_a_request_derive_the_same_channel_binding() {
    init_tracing();
    const LABEL: &[u8] = b"EXPORTER-test-binding";
    let (_ca, ms) = members(3);
    let nodes = start_all(ms).await;
    all_connected(&nodes).await;
    let mut inbox = nodes[1].take_requests().unwrap();
    // The answer is the binding the answerer derived.
    tokio::spawn(async move {
        while let Some(req) = inbox.recv().await {
            let binding = req.channel_binding(LABEL, 32).unwrap();
            req.respond(binding);
        }
    });
    let mut seen = Vec::new();
    for i in [0, 2] {
        let bound = nodes[i]
            .request_bound(nodes[1].id(), b"bind".to_vec(), T, LABEL, 32)
            .await
            .unwrap();
        assert_eq!(bound.channel_binding.len(), 32);
        assert_eq!(
            bound.answer,
            bound.channel_binding,
            "from {}",
            nodes[i].id()
        );
        assert_eq!(
            nodes[i].channel_binding(nodes[1].id(), LABEL, 32),
            Some(bound.channel_binding.clone()),
            "the live connection's value"
        );
        let leaf = bound.peer_certificates.first().unwrap();
        assert_eq!(
            crate::pki::identity_of(leaf).unwrap().subject,
            crate::ids::Subject::Node(nodes[1].id().clone())
        );
        seen.push(bound.channel_binding);
    }
    assert_ne!(seen[0], seen[1], "two connections share an exporter value");
    // Another label gives another value on the same connection.
    assert_ne!(
        nodes[0].channel_binding(nodes[1].id(), b"EXPORTER-other", 32),
        Some(seen[0].clone())
    );
    assert_eq!(
        nodes[0].channel_binding(&node_id("node-9"), LABEL, 32),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_waits_for_a_connection() {
    init_tracing();
    let (_ca, ms) = members(2);
    let mut ms = ms.into_iter();
    let (m1, m2) = (ms.next().unwrap(), ms.next().unwrap());
    let n1 = start(m1).await;
    let node2 = node_id("node-2");
    // No peer yet: refused after the wait, as not connected.
    let err = n1
        .request(&node2, b"x".to_vec(), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::NotConnected { .. }), "{err}");
    // The peer comes up while the request waits.
    let pending = n1.request(&node2, b"later".to_vec(), T);
    let start_peer = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n2 = start(m2).await;
        serve(&n2);
        n2
    };
    let (answer, _n2) = tokio::join!(pending, start_peer);
    assert_eq!(answer.unwrap(), answer_for(&node2, b"later"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_stream_type_is_stopped_and_the_connection_carries_on() {
    init_tracing();
    let nodes = two(Limits::default()).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    serve(n2);
    let conn = n1.connection(n2.id()).unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0x99, 1, 2, 3]).await.unwrap();
    send.finish().unwrap();
    let err = tokio::time::timeout(T, recv.read_to_end(64))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))
                if code == crate::conn::stream_codes::MALFORMED.into()
        ),
        "{err}"
    );
    crate::conn::probe(&conn, T).await.unwrap();
    let a = n1.request(n2.id(), b"ok".to_vec(), T).await.unwrap();
    assert_eq!(a, answer_for(n2.id(), b"ok"));
    assert_eq!(
        n1.connection(n2.id()).unwrap().stable_id(),
        conn.stable_id()
    );
}
