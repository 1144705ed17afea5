//! Attribution of cggmp24 protocol failures.
//!
//! cggmp24 0.7.0-alpha.3 keeps its abort reasons private: its errors only say, through their
//! `source()` chain and `Debug` output, whether a peer aborted the protocol (with the blamed
//! parties), the transport failed, the arguments were wrong, or the library hit a bug. This module
//! reads that chain once, for the version pinned in the workspace, so each operation can report who
//! was at fault. Unit tests pin the wording it relies on.

use std::error::Error;

use crate::session::PartyIndex;

/// Who caused a protocol run to fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// A peer misbehaved; the indices are session-local (cggmp24's `i`), possibly empty when the
    /// library did not name anyone.
    Peers(Vec<u16>),
    /// Delivery failed: sending, receiving, an early end of the message stream, or a message the
    /// protocol could not route (unexpected round, duplicate, wrong broadcast/p2p type).
    Transport,
    /// The arguments handed to cggmp24 were refused.
    Caller,
    /// cggmp24 reported an internal error.
    Bug,
}

/// Reads a cggmp24 error: the fault and a one-line description of the whole chain.
pub(crate) fn classify(err: &(dyn Error + 'static)) -> (Fault, String) {
    let mut chain = vec![err.to_string()];
    let mut source = err.source();
    while let Some(inner) = source {
        chain.push(inner.to_string());
        source = inner.source();
    }
    let detail = chain.join(": ");
    let reason = chain.get(1).map(String::as_str).unwrap_or_default();
    let fault = if reason.contains("aborted by") {
        Fault::Peers(blamed_parties(&format!("{err:?}")))
    } else if reason.contains("i/o error") {
        Fault::Transport
    } else if reason.contains("invalid arguments") || reason.contains("key share is not valid") {
        Fault::Caller
    } else {
        Fault::Bug
    };
    (fault, detail)
}

/// Maps session-local culprits to party indices fixed at key generation.
pub(crate) fn to_party_indices(local: &[u16], parties: &[PartyIndex]) -> Vec<PartyIndex> {
    local
        .iter()
        .filter_map(|i| parties.get(usize::from(*i)).copied())
        .collect()
}

/// Collects the parties cggmp24 blamed: `faulty_party: N` fields of its `AbortBlame`s and
/// `parties: [..]` lists.
fn blamed_parties(debug: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for (at, _) in debug.match_indices("faulty_party: ") {
        let digits: String = debug
            .get(at + "faulty_party: ".len()..)
            .unwrap_or_default()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(i) = digits.parse() {
            out.push(i);
        }
    }
    for (at, _) in debug.match_indices("parties: [") {
        let rest = debug.get(at + "parties: [".len()..).unwrap_or_default();
        let list = rest.split(']').next().unwrap_or_default();
        out.extend(list.split(',').filter_map(|s| s.trim().parse::<u16>().ok()));
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_blame_from_cggmp_debug_output() {
        let signing = "SigningError(Aborted(InvalidPsi([(AbortBlame { faulty_party: 2, \
                       data_message: 3, proof_message: 4 }, (None, Some(x), None))])))";
        assert_eq!(blamed_parties(signing), vec![2]);
        let keygen = "KeygenError(Aborted(FeldmanVerificationFailed { parties: [1, 0] }))";
        assert_eq!(blamed_parties(keygen), vec![0, 1]);
        assert_eq!(to_party_indices(&[1], &[4, 2]), vec![2]);
    }
}
