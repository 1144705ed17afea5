//! The decisions of a signing request's life on one node, as pure functions over typed values
//! (no clock, no database, no network): the caller passes what it knows and the time, and
//! carries out the answer. Every Byzantine case of the request flow (a peer's `failed`, an
//! expired vote, a deadline, a cancellation) is decided here and tested in-process.
//!
//! What the node stores carries these decisions out atomically: the store checks the same
//! release conditions in the transaction that consumes a presignature
//! ([`strongroom_store::ReleaseGate`]), and the rolling window counts what
//! [`strongroom_store::WindowSpend::counts`] says.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::votes::VoteDecision;

/// A request's state on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    /// Votes are being collected.
    Voting,
    /// Enough nodes allow once approvers approve.
    AwaitingApprovals,
    /// At least `t` nodes allow.
    Approved,
    /// Signers are producing the signatures.
    Signing,
    /// Signed (final).
    Signed,
    /// Too few nodes allow (final).
    Rejected,
    /// Signing failed (final).
    Failed,
    /// Not signed by its deadline (final).
    Expired,
    /// Cancelled by its submitter or an admin (final).
    Cancelled,
}

impl RequestState {
    /// Every state, in the order a request moves through them.
    pub const ALL: [RequestState; 9] = [
        Self::Voting,
        Self::AwaitingApprovals,
        Self::Approved,
        Self::Signing,
        Self::Signed,
        Self::Rejected,
        Self::Failed,
        Self::Expired,
        Self::Cancelled,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Voting => "voting",
            Self::AwaitingApprovals => "awaiting_approvals",
            Self::Approved => "approved",
            Self::Signing => "signing",
            Self::Signed => "signed",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state a stored name names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the request may still be signed.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Self::Voting | Self::AwaitingApprovals | Self::Approved | Self::Signing
        )
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What this node knows of a request when it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnView {
    /// Its state here.
    pub state: RequestState,
    /// When this node's vote allowed it, if it did.
    pub allowed_at: Option<SystemTime>,
    /// Whether this node released a partial signature for it.
    pub released: bool,
    /// This node's deadline for it.
    pub expires_at: SystemTime,
}

/// The state votes settle a request in, as one node sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tally {
    /// At least `t` nodes allow.
    Approved,
    /// Enough nodes allow or wait for approvals.
    AwaitingApprovals,
    /// Too few nodes can still allow; the reasons of those that deny.
    Rejected(Vec<String>),
    /// Votes are missing.
    Pending,
}

/// One verified vote as the tally weighs it.
#[derive(Debug, Clone, Copy)]
pub struct CountedVote<'a> {
    /// The voter.
    pub node: &'a str,
    /// Its decision.
    pub decision: VoteDecision,
    /// Its reasons.
    pub reasons: &'a [String],
}

/// Settles `votes` (one per node, each verified against its voter's certificate) among `n`
/// members with threshold `t`.
pub fn tally(n: usize, t: usize, votes: &[CountedVote<'_>]) -> Tally {
    let count = |d: VoteDecision| votes.iter().filter(|v| v.decision == d).count();
    let allow = count(VoteDecision::Allow);
    let waiting = count(VoteDecision::NeedsApprovals);
    let missing = n.saturating_sub(votes.len());
    if allow >= t {
        return Tally::Approved;
    }
    if allow + waiting + missing < t {
        let reasons = votes
            .iter()
            .filter(|v| v.decision == VoteDecision::Deny)
            .flat_map(|v| v.reasons.iter().map(move |r| format!("{}: {r}", v.node)))
            .collect();
        return Tally::Rejected(reasons);
    }
    if allow + waiting >= t {
        return Tally::AwaitingApprovals;
    }
    Tally::Pending
}

/// Whether this node may reserve a presignature for, or release a partial signature of, a
/// request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseVerdict {
    /// Yes, on a vote allowed at or after `allowed_since` (the store checks this again in the
    /// releasing transaction).
    Release {
        /// The oldest allowing vote still valid.
        allowed_since: SystemTime,
    },
    /// This node's vote to allow has expired: evaluate the policy again now, and release only
    /// if it still allows ([`after_evaluating_again`]).
    EvaluateAgain,
    /// No: why.
    Refuse(String),
}

/// Whether this node may take part in signing a request at `now`, its votes to allow being
/// valid for `vote_valid`.
pub fn release_verdict(view: &OwnView, now: SystemTime, vote_valid: Duration) -> ReleaseVerdict {
    if !view.state.is_open() {
        return ReleaseVerdict::Refuse(format!(
            "the request is {} on this node: it takes no further part in signing it",
            view.state
        ));
    }
    if now >= view.expires_at {
        return ReleaseVerdict::Refuse(
            "the request is past this node's deadline (signing.request_ttl_secs)".to_owned(),
        );
    }
    let Some(allowed_at) = view.allowed_at else {
        return ReleaseVerdict::Refuse(
            "this node's policy has not allowed the request; it signs only what it allows"
                .to_owned(),
        );
    };
    let allowed_since = now
        .checked_sub(vote_valid)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if allowed_at >= allowed_since {
        ReleaseVerdict::Release { allowed_since }
    } else {
        ReleaseVerdict::EvaluateAgain
    }
}

/// After this node evaluated a request again because its vote expired: release on a fresh
/// vote dated `now`, or refuse with the policy's reason.
pub fn after_evaluating_again(
    decision: &strongroom_policies::Decision,
    now: SystemTime,
    vote_valid: Duration,
) -> ReleaseVerdict {
    if decision.is_allow() {
        ReleaseVerdict::Release {
            allowed_since: now
                .checked_sub(vote_valid)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        }
    } else {
        ReleaseVerdict::Refuse(format!(
            "this node's vote expired and its policy no longer allows the request: {decision}"
        ))
    }
}

/// How a request ends on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// The final state.
    pub to: RequestState,
    /// Whether the spend stops counting if this node released nothing: only for a decision
    /// this node took itself (its clock, its tally, its own coordination, a client-signed
    /// cancellation), never on a peer's word.
    pub void_unreleased: bool,
}

/// A peer says a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerFailed {
    /// Refused: the request is signed here (or cannot fail any more).
    Refuse(String),
    /// The request ends `failed` here, its spend still counting until this node's own
    /// deadline (a peer's word never takes a spend out of the window).
    Fail(Ending),
    /// The request had ended already; nothing changes.
    AlreadyEnded,
}

/// What a peer's `failed` does to a request.
pub fn on_peer_failed(view: &OwnView) -> PeerFailed {
    match view.state {
        RequestState::Signed => PeerFailed::Refuse(
            "the request is signed on this node; a peer's failed cannot change it".to_owned(),
        ),
        s if s.is_open() => PeerFailed::Fail(Ending {
            to: RequestState::Failed,
            void_unreleased: false,
        }),
        _ => PeerFailed::AlreadyEnded,
    }
}

/// This node's own signing attempt (it coordinated) failed: the request ends `failed`; as the
/// node's own conclusion, its spend stops counting if it released nothing.
pub fn on_own_failure(view: &OwnView) -> Option<Ending> {
    view.state.is_open().then_some(Ending {
        to: RequestState::Failed,
        void_unreleased: true,
    })
}

/// The request's deadline on this node: an open request past it ends `expired`.
pub fn on_tick(view: &OwnView, now: SystemTime) -> Option<Ending> {
    (view.state.is_open() && now >= view.expires_at).then_some(Ending {
        to: RequestState::Expired,
        void_unreleased: true,
    })
}

/// A cancellation by the submitter or an admin (whose signature every node verified).
pub fn on_cancel(view: &OwnView) -> Result<Ending, String> {
    match view.state {
        RequestState::Voting | RequestState::AwaitingApprovals | RequestState::Approved => {
            Ok(Ending {
                to: RequestState::Cancelled,
                void_unreleased: true,
            })
        }
        RequestState::Signing => Err(
            "the request is being signed; a request can be cancelled only before signing starts"
                .to_owned(),
        ),
        RequestState::Cancelled => Err("the request is cancelled already".to_owned()),
        s => Err(format!("the request has ended ({s})")),
    }
}

/// Whether signatures that verify against this node's own sighashes complete a request in
/// this state. A cancelled or rejected request is never completed: this node released nothing
/// for it, and its record says so.
pub fn accepts_signatures(state: RequestState) -> bool {
    !matches!(state, RequestState::Cancelled | RequestState::Rejected)
}

#[cfg(test)]
mod tests;
