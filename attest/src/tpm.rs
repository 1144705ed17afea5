//! TPM 2.0 quotes: parsing `TPMS_ATTEST` and `TPMT_SIGNATURE` (TPM 2.0 Library, Part 2) and
//! checking a quote against a profile's [`TpmPolicy`].
//!
//! What is checked: the attestation key is one the profile enrolled; the quote is a
//! `TPM_ST_ATTEST_QUOTE` signed by that key (ECDSA P-256, SHA-256); its `extraData` is the
//! qualifying data of the evidence it came with; it selects exactly the reported PCRs of
//! the SHA-256 bank, and its PCR digest is the hash of the reported values; every PCR the
//! profile names has the expected value. Not checked: the attestation key's certification
//! by the TPM's endorsement key (the profile enrolls the key itself), the TPM clock and
//! reset counters, and event-log replay.

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use sha2::{Digest as _, Sha256};

use crate::digest::Sha256Digest;
use crate::error::TpmError;
use crate::evidence::TpmQuote;
use crate::profile::TpmPolicy;

/// `TPM_GENERATED_VALUE`: the magic of every structure the TPM itself produced.
const TPM_GENERATED: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
const ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM_ALG_SHA256`.
const ALG_SHA256: u16 = 0x000b;
/// `TPM_ALG_ECDSA`.
const ALG_ECDSA: u16 = 0x0018;

/// The parts of a parsed `TPMS_ATTEST` quote that are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteInfo {
    /// `extraData`: the qualifying data the caller of `TPM2_Quote` supplied.
    pub extra_data: Vec<u8>,
    /// PCR indices selected in the SHA-256 bank, ascending.
    pub pcr_indices: Vec<u8>,
    /// `pcrDigest`: hash of the selected PCR values.
    pub pcr_digest: Vec<u8>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], TpmError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(TpmError::Malformed { what })?;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or(TpmError::Malformed { what })?;
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, TpmError> {
        let b = self.take(what, 1)?;
        b.first().copied().ok_or(TpmError::Malformed { what })
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, TpmError> {
        let b = self.take(what, 2)?;
        let mut a = [0u8; 2];
        a.copy_from_slice(b);
        Ok(u16::from_be_bytes(a))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, TpmError> {
        let b = self.take(what, 4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_be_bytes(a))
    }

    /// A `TPM2B_*`: `u16` size, then the bytes.
    fn tpm2b(&mut self, what: &'static str) -> Result<&'a [u8], TpmError> {
        let n = usize::from(self.u16(what)?);
        self.take(what, n)
    }

    fn end(&self, what: &'static str) -> Result<(), TpmError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(TpmError::Malformed { what })
        }
    }
}

/// Parses a `TPMS_ATTEST` of type `TPM_ST_ATTEST_QUOTE` whose PCR selection is in the
/// SHA-256 bank only.
pub fn parse_quote(attest: &[u8]) -> Result<QuoteInfo, TpmError> {
    let mut c = Cursor {
        bytes: attest,
        pos: 0,
    };
    let magic = c.u32("TPMS_ATTEST.magic")?;
    if magic != TPM_GENERATED {
        return Err(TpmError::NotTpmGenerated { magic });
    }
    let kind = c.u16("TPMS_ATTEST.type")?;
    if kind != ST_ATTEST_QUOTE {
        return Err(TpmError::NotAQuote { kind });
    }
    c.tpm2b("TPMS_ATTEST.qualifiedSigner")?;
    let extra_data = c.tpm2b("TPMS_ATTEST.extraData")?.to_vec();
    // clockInfo: clock (u64), resetCount (u32), restartCount (u32), safe (u8); then the
    // firmwareVersion (u64).
    c.take("TPMS_ATTEST.clockInfo", 8 + 4 + 4 + 1)?;
    c.take("TPMS_ATTEST.firmwareVersion", 8)?;
    let banks = c.u32("TPML_PCR_SELECTION.count")?;
    let mut pcr_indices = Vec::new();
    for _ in 0..banks {
        let hash = c.u16("TPMS_PCR_SELECTION.hash")?;
        let size = usize::from(c.u8("TPMS_PCR_SELECTION.sizeofSelect")?);
        // PCR_SELECT_MAX is 4 bytes (32 PCRs); PC-client TPMs use 3.
        if size > 4 {
            return Err(TpmError::Malformed {
                what: "TPMS_PCR_SELECTION.sizeofSelect (over 4 bytes)",
            });
        }
        let select = c.take("TPMS_PCR_SELECTION.pcrSelect", size)?;
        let mut selected = Vec::new();
        // byte < 4, so every index is below 32.
        for (byte, bits) in (0u8..).zip(select) {
            for bit in 0..8u8 {
                if bits & (1 << bit) != 0 {
                    selected.push(byte * 8 + bit);
                }
            }
        }
        if selected.is_empty() {
            continue;
        }
        if hash != ALG_SHA256 {
            return Err(TpmError::PcrBank { alg: hash });
        }
        pcr_indices.extend(selected);
    }
    pcr_indices.sort_unstable();
    pcr_indices.dedup();
    let pcr_digest = c.tpm2b("TPMS_QUOTE_INFO.pcrDigest")?.to_vec();
    c.end("TPMS_ATTEST")?;
    Ok(QuoteInfo {
        extra_data,
        pcr_indices,
        pcr_digest,
    })
}

/// Parses a `TPMT_SIGNATURE` holding an ECDSA signature with SHA-256.
pub fn parse_signature(bytes: &[u8]) -> Result<Signature, TpmError> {
    let mut c = Cursor { bytes, pos: 0 };
    let alg = c.u16("TPMT_SIGNATURE.sigAlg")?;
    let hash = c.u16("TPMT_SIGNATURE.hash")?;
    if alg != ALG_ECDSA || hash != ALG_SHA256 {
        return Err(TpmError::UnsupportedSignature { alg, hash });
    }
    let r = scalar(c.tpm2b("TPMS_SIGNATURE_ECDSA.signatureR")?)?;
    let s = scalar(c.tpm2b("TPMS_SIGNATURE_ECDSA.signatureS")?)?;
    c.end("TPMT_SIGNATURE")?;
    Signature::from_scalars(r, s).map_err(|_| TpmError::Malformed {
        what: "TPMT_SIGNATURE (r or s out of range)",
    })
}

/// A big-endian integer of at most 32 significant bytes, left-padded to 32.
fn scalar(bytes: &[u8]) -> Result<[u8; 32], TpmError> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let significant = bytes.get(start..).unwrap_or_default();
    let mut out = [0u8; 32];
    let offset = 32usize
        .checked_sub(significant.len())
        .ok_or(TpmError::Malformed {
            what: "TPMS_SIGNATURE_ECDSA (integer longer than 32 bytes)",
        })?;
    out.get_mut(offset..)
        .ok_or(TpmError::Malformed {
            what: "TPMS_SIGNATURE_ECDSA",
        })?
        .copy_from_slice(significant);
    Ok(out)
}

/// Checks `quote` against `policy`, expecting `qualifying_data` in its `extraData`.
pub fn verify_quote(
    quote: &TpmQuote,
    qualifying_data: &[u8; 32],
    policy: &TpmPolicy,
) -> Result<(), TpmError> {
    let ak = Sha256Digest::of(&quote.ak_spki_der);
    if !policy.enrolled_aks.contains(&ak) {
        return Err(TpmError::AkNotEnrolled {
            found: ak.to_hex(),
            enrolled: policy
                .enrolled_aks
                .iter()
                .map(Sha256Digest::to_hex)
                .collect(),
        });
    }
    let key =
        VerifyingKey::from_public_key_der(&quote.ak_spki_der).map_err(|e| TpmError::AkKey {
            reason: e.to_string(),
        })?;
    let signature = parse_signature(&quote.signature)?;
    key.verify(&quote.attest, &signature)
        .map_err(|_| TpmError::BadSignature)?;

    let info = parse_quote(&quote.attest)?;
    if info.extra_data != qualifying_data {
        return Err(TpmError::QualifyingData {
            expected: hex::encode(qualifying_data),
            found: hex::encode(&info.extra_data),
        });
    }
    let reported: Vec<u8> = quote.pcrs.iter().map(|p| p.index).collect();
    if reported != info.pcr_indices {
        return Err(TpmError::PcrSelection {
            quoted: info.pcr_indices,
            reported,
        });
    }
    let mut hasher = Sha256::new();
    for pcr in &quote.pcrs {
        hasher.update(pcr.value.as_bytes());
    }
    let computed: [u8; 32] = hasher.finalize().into();
    if info.pcr_digest != computed {
        return Err(TpmError::PcrDigest {
            quoted: hex::encode(&info.pcr_digest),
            computed: hex::encode(computed),
        });
    }
    for (index, expected) in &policy.pcrs {
        let Some(expected) = expected else {
            return Err(TpmError::PcrUnfilled { index: *index });
        };
        match quote.pcrs.iter().find(|p| p.index == *index) {
            None => {
                return Err(TpmError::PcrNotQuoted {
                    index: *index,
                    expected: expected.to_hex(),
                });
            }
            Some(found) if found.value != *expected => {
                return Err(TpmError::PcrValue {
                    index: *index,
                    expected: expected.to_hex(),
                    found: found.value.to_hex(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}
