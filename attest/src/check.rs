//! Checks of a token against a profile: the peer's token during verification, and the
//! node's own token and mechanisms at start-up.

use crate::error::{SelfCheckError, TokenMismatch};
use crate::evidence::TokenIdentity;
use crate::pattern::matches;
use crate::profile::{FirmwareProfile, TokenPattern};

/// Whether `token` matches one of `accepted`, and if not, the first field in which no
/// remaining entry matches.
pub(crate) fn match_token(
    accepted: &[TokenPattern],
    token: &TokenIdentity,
) -> Result<(), TokenMismatch> {
    let by_manufacturer: Vec<&TokenPattern> = accepted
        .iter()
        .filter(|p| matches(&p.manufacturer, &token.manufacturer))
        .collect();
    if by_manufacturer.is_empty() {
        return Err(TokenMismatch::Manufacturer {
            found: token.manufacturer.clone(),
            accepted: accepted.iter().map(|p| p.manufacturer.clone()).collect(),
        });
    }
    let by_model: Vec<&TokenPattern> = by_manufacturer
        .iter()
        .copied()
        .filter(|p| matches(&p.model, &token.model))
        .collect();
    if by_model.is_empty() {
        return Err(TokenMismatch::Model {
            manufacturer: token.manufacturer.clone(),
            found: token.model.clone(),
            accepted: by_manufacturer.iter().map(|p| p.model.clone()).collect(),
        });
    }
    if by_model
        .iter()
        .any(|p| matches(&p.firmware_version, &token.firmware_version))
    {
        return Ok(());
    }
    Err(TokenMismatch::FirmwareVersion {
        manufacturer: token.manufacturer.clone(),
        model: token.model.clone(),
        found: token.firmware_version.clone(),
        accepted: by_model
            .iter()
            .map(|p| p.firmware_version.clone())
            .collect(),
    })
}

/// The start-up check of the node's own token: is it one its profile accepts? A node must
/// refuse to start when this fails; the error names the field that did not match.
pub fn check_own_token(
    profile: &FirmwareProfile,
    token: &TokenIdentity,
) -> Result<(), SelfCheckError> {
    match_token(&profile.tokens, token).map_err(|mismatch| SelfCheckError::Token {
        profile: profile.id.clone(),
        mismatch,
    })
}

/// The start-up check of the token's mechanisms: does the token list every mechanism the
/// profile requires? `token_mechanisms` are `CKM_*` names as the token's mechanism list
/// gives them (cryptoki's `MechanismType` displays them so).
pub fn check_mechanisms<S: AsRef<str>>(
    profile: &FirmwareProfile,
    token_mechanisms: &[S],
) -> Result<(), SelfCheckError> {
    let missing: Vec<String> = profile
        .required_mechanisms
        .iter()
        .filter(|required| {
            !token_mechanisms
                .iter()
                .any(|m| m.as_ref().trim() == required.as_str())
        })
        .cloned()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SelfCheckError::MissingMechanisms {
            profile: profile.id.clone(),
            missing,
        })
    }
}

/// Both start-up checks: the token first, then its mechanisms.
pub fn self_check<S: AsRef<str>>(
    profile: &FirmwareProfile,
    token: &TokenIdentity,
    token_mechanisms: &[S],
) -> Result<(), SelfCheckError> {
    check_own_token(profile, token)?;
    check_mechanisms(profile, token_mechanisms)
}
