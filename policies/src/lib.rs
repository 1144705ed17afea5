//! The policy model and the pure evaluate() that decides which transactions a node votes for.
//!
//! Every node holds its own policy file and decides every signing request itself with
//! [`evaluate`]; it votes to sign, and releases its part of a signature, only on
//! [`Decision::Allow`].
//!
//! # Contract
//!
//! - **Pure.** [`evaluate`] reads only its arguments: no clock, no I/O, no randomness. The
//!   same policy, summary and context give the same decision on every node and every run.
//! - **First match.** Rules are tried in file order; the first rule whose conditions all hold
//!   decides, and later rules are not consulted. Put deny rules first.
//! - **Default deny.** When no rule matches, the decision is [`Decision::Deny`] with no rule
//!   and the reason [`DEFAULT_DENY_REASON`]. A summary that fails [`TxSummary::check`] is
//!   denied before any rule is tried.
//! - **Named decisions.** Every decision names the rule that decided (position and name), so
//!   votes and audit records can say why.
//!
//! The caller must guarantee:
//!
//! - the [`TxSummary`] is computed by the node itself from the PSBT (amounts from the
//!   `witness_utxo`s, change recognised against the key's own descriptors), never taken from
//!   the client, and [`TxSummary::key_name`] comes from the node's own record of the key, whose
//!   name is unique in the cluster;
//! - [`Context::now`] is the node's clock, and [`Context::window_history`] holds every spend
//!   signed with the summary's key within [`Policy::longest_window`] seconds;
//! - approvals are checked by [`verify_approval`]; [`Context::approvals`] only accepts the
//!   [`VerifiedApproval`]s that check produces, and each counts only for the digest it signs.
//!
//! # Policy file
//!
//! TOML, with `version = 1`; unknown versions and unknown fields are refused, so a typo
//! cannot silently widen a policy. Amounts are satoshis; times are UTC.
//!
//! ```toml
//! version = 1
//! id = "treasury"                      # 1-64 of a-z A-Z 0-9 . _ -
//! description = "optional free text"
//!
//! [[approvers]]                        # Ed25519 public keys, hex
//! name = "alice"
//! public_key = "<64 hex characters>"
//!
//! [groups]                             # approver groups: lists of approver names
//! treasurers = ["alice", "bob", "carol"]
//!
//! [[rules]]                            # tried in this order
//! name = "denylist"
//! action = "deny"                      # "allow" | "deny" | "require_approvals"
//! reason = "pays a denylisted address" # deny only
//! when.any_output_to = ["bc1q…"]
//!
//! [[rules]]
//! name = "large"
//! action = "require_approvals"
//! group = "treasurers"                 # require_approvals only
//! approvals = 2                        # 1 ..= group size
//! [rules.when]                         # every condition present must hold
//! keys = ["hot-1", "…"]                # the signing key, by name (or by its 64-hex id)
//! initiator = { names = ["…"], roles = ["submitter"] }   # client name or any role listed
//! any_output_to = ["…"]                # denylist: some output (change too) pays one of these
//! external_outputs_only_to = ["…"]     # allowlist: every non-change output pays one of these
//! own_outputs_only = true              # every output is change
//! amount_sat = { min = 0, max = 100_000_000 }          # sum of non-change outputs
//! rolling_amount_sat = { seconds = 86_400, max = 1_000_000_000 }  # history in window + this
//! fee_sat = { max = 500_000 }
//! fee_rate_sat_per_vb = { max = 200 }  # fee / vsize rounded up
//! output_count = { max = 20 }          # change included
//! utc_time = { days = ["mon", "fri"], from = "08:00", until = "18:00" }
//! ```
//!
//! Semantics at the edges:
//!
//! - `keys`: an entry of exactly 64 hex digits names a key by its id (either case); any
//!   other entry names a key by the name an operator gave it at creation (exactly, case
//!   included). An id-shaped entry never matches a name, so a key named like another key's id
//!   cannot fall under that key's rules. Entries with leading or trailing spaces are refused:
//!   they could never match, and a deny rule that never matches fails open.
//! - All bounds (`min`, `max`) are inclusive; either may be omitted, not both.
//! - `fee_rate_sat_per_vb` compares `ceil(fee / vsize)`: `max = N` holds exactly when the rate
//!   is at most N sat/vB, `min = N + 1` exactly when it is above N.
//! - `rolling_amount_sat`: a history entry `seconds` or more old is outside the window, a
//!   younger one (or one dated after `now`) is inside; this transaction's spend amount is
//!   added to the history inside the window.
//! - `utc_time`: `from` inclusive, `until` exclusive (`24:00` allowed); `from` later than
//!   `until` wraps midnight, and the part after midnight belongs to the day the span began.
//!   Without `days` every day counts; without `from`/`until` the whole day does.
//! - `external_outputs_only_to` holds for a transaction whose outputs are all change.
//! - Bech32 addresses compare case-insensitively, base58 addresses exactly.
//!
//! # Example
//!
//! ```
//! use strongroom_policies::{Context, Initiator, Policy, TxOutput, TxSummary, evaluate};
//!
//! let policy = Policy::from_toml_str(r#"
//!     version = 1
//!     id = "small-only"
//!
//!     [[rules]]
//!     name = "small"
//!     action = "allow"
//!     when.amount_sat = { max = 100_000 }
//! "#)?;
//!
//! let tx = TxSummary {
//!     key_id: "5d1c6f0e93a2b4c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5".into(),
//!     key_name: "hot-1".into(),
//!     input_count: 1,
//!     total_input_sat: 60_000,
//!     outputs: vec![
//!         TxOutput { address: "bcrt1qexample".into(), amount_sat: 50_000, is_change: false },
//!         TxOutput { address: "bcrt1qchange".into(), amount_sat: 9_000, is_change: true },
//!     ],
//!     fee_sat: 1_000,
//!     vsize: 141,
//! };
//! let ctx = Context {
//!     initiator: Initiator { name: "wallet".into(), roles: vec!["submitter".into()] },
//!     now: 1_704_283_200,
//!     request_digest: [0; 32],
//!     window_history: vec![],
//!     approvals: vec![],
//! };
//! let decision = evaluate(&policy, &tx, &ctx);
//! assert!(decision.is_allow());
//! assert_eq!(decision.to_string(), "allowed by rules[0] 'small'");
//! # Ok::<(), strongroom_policies::PolicyError>(())
//! ```
//!
//! The [`Policy::hash`] is SHA-256 over a canonical encoding described in [`hash`]; layout,
//! comments and the order of set-like lists do not change it.

mod approval;
mod error;
mod evaluate;
mod file;
pub mod hash;
mod model;
mod summary;

pub use approval::{VerifiedApproval, verify_approval};
pub use error::{ApprovalError, PolicyError, SummaryError};
pub use evaluate::{DEFAULT_DENY_REASON, Decision, evaluate};
pub use hash::{PolicyHash, PolicyHashParseError};
pub use model::{
    Action, Approver, Bounds, Conditions, DailyHours, FORMAT_VERSION, InitiatorMatch,
    KEY_ID_HEX_LEN, Policy, RollingWindow, Rule, RuleRef, TimeWindow, Weekday, is_key_id,
};
pub use summary::{Context, Initiator, MAX_MONEY_SAT, TxOutput, TxSummary, WindowEntry};
