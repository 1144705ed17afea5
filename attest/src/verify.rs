//! Verification of a peer's evidence against the verifier's firmware profile.

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;

use crate::check::match_token;
use crate::digest::Sha256Digest;
use crate::error::{TpmError, VerifyError};
use crate::evidence::{Claims, Evidence};
use crate::profile::FirmwareProfile;
use crate::tpm::verify_quote;

/// What the verifier knows about the connection the evidence arrived on, independently of
/// the evidence.
#[derive(Clone, Copy, Debug)]
pub struct VerifyContext<'a> {
    /// SubjectPublicKeyInfo DER of the peer's TLS certificate (verified by the handshake).
    pub peer_spki_der: &'a [u8],
    /// Node id from the peer certificate's `spiffe://<cluster>/node/<id>` SAN.
    pub peer_node_id: &'a str,
    /// This node's cluster id.
    pub cluster_id: &'a str,
    /// This node's own exporter value of the connection ([`crate::EXPORTER_LABEL`],
    /// [`crate::CHANNEL_BINDING_LEN`] bytes).
    pub channel_binding: &'a [u8],
    /// This node's clock, Unix seconds.
    pub now: u64,
}

/// Evidence that passed [`verify`]. Only verification builds one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedEvidence {
    claims: Claims,
}

impl VerifiedEvidence {
    /// The verified claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The verified claims, by value.
    pub fn into_claims(self) -> Claims {
        self.claims
    }
}

/// Decodes `evidence` and checks it against `profile` and the connection it arrived on.
///
/// Checks, in order: the encoding and its version; the signature, under the peer
/// certificate's key; cluster id; node id against the certificate's; the channel binding
/// against this node's own exporter value; freshness; the profile (valid, filled in, same
/// id); the binary digest; the token; the TPM quote when the profile requires one (a quote
/// the profile does not require is not examined). The first failure is returned.
pub fn verify(
    evidence: &[u8],
    profile: &FirmwareProfile,
    ctx: &VerifyContext<'_>,
) -> Result<VerifiedEvidence, VerifyError> {
    let evidence = Evidence::from_bytes(evidence)?;
    verify_evidence(&evidence, profile, ctx)
}

/// [`verify`] for evidence already decoded.
pub fn verify_evidence(
    evidence: &Evidence,
    profile: &FirmwareProfile,
    ctx: &VerifyContext<'_>,
) -> Result<VerifiedEvidence, VerifyError> {
    let key =
        VerifyingKey::from_public_key_der(ctx.peer_spki_der).map_err(|e| VerifyError::PeerKey {
            reason: e.to_string(),
        })?;
    let signature =
        Signature::from_slice(evidence.signature()).map_err(|_| VerifyError::BadSignature)?;
    key.verify(evidence.signed_bytes(), &signature)
        .map_err(|_| VerifyError::BadSignature)?;

    let claims = evidence.claims();
    if claims.cluster_id != ctx.cluster_id {
        return Err(VerifyError::ClusterId {
            expected: ctx.cluster_id.to_owned(),
            found: claims.cluster_id.clone(),
        });
    }
    if claims.node_id != ctx.peer_node_id {
        return Err(VerifyError::NodeId {
            expected: ctx.peer_node_id.to_owned(),
            found: claims.node_id.clone(),
        });
    }
    // An empty binding would match an empty exporter value: refuse both.
    if ctx.channel_binding.is_empty() || claims.channel_binding != ctx.channel_binding {
        return Err(VerifyError::ChannelBinding {
            expected: hex::encode(ctx.channel_binding),
            found: hex::encode(&claims.channel_binding),
        });
    }
    let fresh = &profile.freshness;
    if claims.issued_at > ctx.now.saturating_add(fresh.max_clock_skew_secs) {
        return Err(VerifyError::FromFuture {
            issued_at: claims.issued_at,
            now: ctx.now,
            max_clock_skew_secs: fresh.max_clock_skew_secs,
        });
    }
    if ctx.now.saturating_sub(claims.issued_at) > fresh.max_age_secs {
        return Err(VerifyError::Stale {
            issued_at: claims.issued_at,
            now: ctx.now,
            max_age_secs: fresh.max_age_secs,
        });
    }

    profile.validate().map_err(VerifyError::Profile)?;
    let unfilled = profile.unfilled_fields();
    if !unfilled.is_empty() {
        return Err(VerifyError::ProfileIncomplete {
            profile: profile.id.clone(),
            fields: unfilled,
        });
    }
    if claims.profile_id != profile.id {
        return Err(VerifyError::ProfileId {
            expected: profile.id.clone(),
            found: claims.profile_id.clone(),
        });
    }
    // validate() has refused the dangerous option outside a dev profile.
    let any_digest = profile.binary.dangerous_accept_any_digest && profile.is_dev();
    if !any_digest && !profile.binary.sha256.contains(&claims.binary_sha256) {
        return Err(VerifyError::BinaryDigest {
            profile: profile.id.clone(),
            found: claims.binary_sha256.to_hex(),
            allowed: profile
                .binary
                .sha256
                .iter()
                .map(Sha256Digest::to_hex)
                .collect(),
        });
    }
    match_token(&profile.tokens, &claims.token).map_err(VerifyError::Token)?;

    if profile.tpm.required {
        let Some(quote) = &claims.tpm_quote else {
            return Err(VerifyError::TpmQuoteMissing {
                profile: profile.id.clone(),
            });
        };
        // The claims were decoded from a valid encoding, so they encode again.
        let qualifying = claims.tpm_qualifying_data().map_err(|_| {
            VerifyError::Tpm(TpmError::Malformed {
                what: "evidence claims",
            })
        })?;
        verify_quote(quote, &qualifying, &profile.tpm).map_err(VerifyError::Tpm)?;
    }
    Ok(VerifiedEvidence {
        claims: claims.clone(),
    })
}
