//! Evidence: what a node claims to run, in a canonical, versioned encoding, signed by its
//! token identity key. The layout is documented on [`Evidence`].

use crate::digest::Sha256Digest;
use crate::error::{DecodeError, EncodeError, SignError};

/// First bytes of every encoded evidence.
pub const EVIDENCE_MAGIC: [u8; 8] = *b"SRATTEST";
/// The evidence encoding this crate writes and reads.
pub const EVIDENCE_VERSION: u16 = 1;
/// Label of the TLS exporter (RFC 5705 / RFC 8446 §7.5) whose output is the channel binding.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-strongroom-attest-v1";
/// Length in bytes of the exporter value a node derives for the channel binding.
pub const CHANNEL_BINDING_LEN: usize = 32;
/// Longest text field (profile id, token fields, node and cluster ids), in bytes.
pub const MAX_TEXT_LEN: usize = 256;
/// Longest byte field (channel binding, attestation key, quote, quote signature), in bytes.
pub const MAX_BYTES_LEN: usize = 4096;
/// Most PCR values a quote may report.
pub const MAX_PCRS: usize = 24;
/// Domain separation of the TPM quote's qualifying data.
const TPM_QUALIFYING_DOMAIN: &[u8] = b"strongroom-attest-tpm-qualifying-v1\0";

/// A token as it reports itself in `C_GetTokenInfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenIdentity {
    /// `manufacturerID`, e.g. `SoftHSM project`.
    pub manufacturer: String,
    /// `model`, e.g. `SoftHSM v2`.
    pub model: String,
    /// `firmwareVersion` as `major.minor`, e.g. `2.6`.
    pub firmware_version: String,
}

/// One PCR value of the SHA-256 bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcrValue {
    /// PCR index, 0–23.
    pub index: u8,
    /// The PCR's value.
    pub value: Sha256Digest,
}

/// A TPM 2.0 quote over the boot PCRs, as `TPM2_Quote` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmQuote {
    /// The attestation key that signed the quote, as SubjectPublicKeyInfo DER (P-256).
    pub ak_spki_der: Vec<u8>,
    /// The signed `TPMS_ATTEST` structure; its `extraData` must be
    /// [`Claims::tpm_qualifying_data`].
    pub attest: Vec<u8>,
    /// The `TPMT_SIGNATURE` over `attest` (ECDSA, SHA-256).
    pub signature: Vec<u8>,
    /// The quoted PCR values, in ascending index order.
    pub pcrs: Vec<PcrValue>,
}

/// What a node claims about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// SHA-256 of the node's own executable.
    pub binary_sha256: Sha256Digest,
    /// Id of the firmware profile the node runs under.
    pub profile_id: String,
    /// The node's token.
    pub token: TokenIdentity,
    /// The node id (as in its certificate's `spiffe://<cluster>/node/<id>`).
    pub node_id: String,
    /// The cluster id.
    pub cluster_id: String,
    /// When the evidence was produced, Unix seconds.
    pub issued_at: u64,
    /// The TLS exporter value ([`EXPORTER_LABEL`], [`CHANNEL_BINDING_LEN`] bytes) of the
    /// connection the evidence is sent over.
    pub channel_binding: Vec<u8>,
    /// A TPM quote whose qualifying data binds these claims.
    pub tpm_quote: Option<TpmQuote>,
}

/// Produces the signature of the evidence: ECDSA P-256 over SHA-256 of `message`, as the
/// 64 bytes `r ‖ s`. The node's implementation signs with its token identity key.
pub trait EvidenceSigner {
    /// Signs `message`.
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignError>;
}

impl<F> EvidenceSigner for F
where
    F: Fn(&[u8]) -> Result<[u8; 64], SignError>,
{
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignError> {
        self(message)
    }
}

/// Signed evidence, as sent to a peer.
///
/// # Encoding, version 1
///
/// All integers are big-endian; `str` and `bytes` are a `u32` length followed by that many
/// bytes (`str` is UTF-8). Fields appear in this order and nowhere else:
///
/// | field | encoding |
/// |---|---|
/// | magic | the 8 bytes `SRATTEST` |
/// | version | `u16`, 1 |
/// | binary digest | 32 bytes, SHA-256 of the node's executable |
/// | profile id | `str` |
/// | token manufacturer, model, firmware version | `str` each |
/// | node id, cluster id | `str` each |
/// | issued at | `u64`, Unix seconds |
/// | channel binding | `bytes`, the TLS exporter value of the connection |
/// | TPM quote present | `u8`: 0 (end) or 1, followed by: |
/// | attestation key | `bytes`, SubjectPublicKeyInfo DER |
/// | quote | `bytes`, the `TPMS_ATTEST` the TPM signed |
/// | quote signature | `bytes`, the `TPMT_SIGNATURE` |
/// | PCR values | `u8` count, then per PCR: `u8` index and its 32-byte SHA-256 bank value |
///
/// Everything up to here is the signed message. The evidence on the wire is the signed
/// message followed by the 64-byte signature `r ‖ s` (ECDSA P-256 over SHA-256). Decoding
/// refuses another magic, an unknown version, a field over its limit, a non-minimal choice
/// (a flag other than 0 or 1) and trailing bytes, so one claim set has exactly one encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    claims: Claims,
    signed: Vec<u8>,
    signature: [u8; 64],
}

impl Evidence {
    /// Encodes `claims` and has `signer` sign the encoding.
    pub fn sign(claims: Claims, signer: &dyn EvidenceSigner) -> Result<Self, SignError> {
        let signed = claims.signed_bytes()?;
        let signature = signer.sign(&signed)?;
        Ok(Evidence {
            claims,
            signed,
            signature,
        })
    }

    /// The claims. Not verified: only [`crate::verify`] says whether they can be believed.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The signed message (the canonical encoding of the claims).
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed
    }

    /// The signature, `r ‖ s`.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// The wire form: signed message, then signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.signed.len() + 64);
        out.extend_from_slice(&self.signed);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes the wire form. Checks the encoding only, not the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let claims = decode_claims(&mut r)?;
        let signed_len = r.pos;
        let signature: [u8; 64] = r.fixed("signature")?;
        if r.pos != bytes.len() {
            return Err(DecodeError::TrailingBytes {
                count: bytes.len() - r.pos,
            });
        }
        let signed = bytes.get(..signed_len).unwrap_or_default().to_vec();
        Ok(Evidence {
            claims,
            signed,
            signature,
        })
    }
}

impl Claims {
    /// The canonical encoding: the message the identity key signs.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = self.core_bytes()?;
        match &self.tpm_quote {
            None => out.push(0),
            Some(q) => {
                out.push(1);
                put_bytes(&mut out, "tpm_quote.ak_spki_der", &q.ak_spki_der)?;
                put_bytes(&mut out, "tpm_quote.attest", &q.attest)?;
                put_bytes(&mut out, "tpm_quote.signature", &q.signature)?;
                if q.pcrs.len() > MAX_PCRS {
                    return Err(EncodeError::TooManyPcrs {
                        count: q.pcrs.len(),
                        max: MAX_PCRS,
                    });
                }
                // MAX_PCRS fits in a u8.
                out.push(u8::try_from(q.pcrs.len()).unwrap_or(u8::MAX));
                for pcr in &q.pcrs {
                    out.push(pcr.index);
                    out.extend_from_slice(pcr.value.as_bytes());
                }
            }
        }
        Ok(out)
    }

    /// The `qualifyingData` a TPM quote for these claims must carry: SHA-256 over a domain
    /// separator and the encoding of every claim except the quote itself. It binds the
    /// quote to the node, the time and the connection.
    pub fn tpm_qualifying_data(&self) -> Result<[u8; 32], EncodeError> {
        let mut message = TPM_QUALIFYING_DOMAIN.to_vec();
        message.extend_from_slice(&self.core_bytes()?);
        Ok(*Sha256Digest::of(&message).as_bytes())
    }

    /// Magic, version and every claim before the TPM quote.
    fn core_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&EVIDENCE_MAGIC);
        out.extend_from_slice(&EVIDENCE_VERSION.to_be_bytes());
        out.extend_from_slice(self.binary_sha256.as_bytes());
        put_text(&mut out, "profile_id", &self.profile_id)?;
        put_text(&mut out, "token.manufacturer", &self.token.manufacturer)?;
        put_text(&mut out, "token.model", &self.token.model)?;
        put_text(
            &mut out,
            "token.firmware_version",
            &self.token.firmware_version,
        )?;
        put_text(&mut out, "node_id", &self.node_id)?;
        put_text(&mut out, "cluster_id", &self.cluster_id)?;
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        put_bytes(&mut out, "channel_binding", &self.channel_binding)?;
        Ok(out)
    }
}

fn put_len(
    out: &mut Vec<u8>,
    field: &'static str,
    len: usize,
    max: usize,
) -> Result<(), EncodeError> {
    if len > max {
        return Err(EncodeError::FieldTooLong { field, len, max });
    }
    // max ≤ MAX_BYTES_LEN, so the length fits in a u32.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    Ok(())
}

fn put_text(out: &mut Vec<u8>, field: &'static str, value: &str) -> Result<(), EncodeError> {
    put_len(out, field, value.len(), MAX_TEXT_LEN)?;
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, field: &'static str, value: &[u8]) -> Result<(), EncodeError> {
    put_len(out, field, value.len(), MAX_BYTES_LEN)?;
    out.extend_from_slice(value);
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(DecodeError::Truncated { field })?;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated { field })?;
        self.pos = end;
        Ok(out)
    }

    fn fixed<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.fixed::<1>(field)?[0])
    }

    fn var(&mut self, field: &'static str, max: usize) -> Result<&[u8], DecodeError> {
        let len = u32::from_be_bytes(self.fixed(field)?);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > max {
            return Err(DecodeError::FieldTooLong { field, len, max });
        }
        self.take(field, len)
    }

    fn text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.var(field, MAX_TEXT_LEN)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8 { field })
    }

    fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, DecodeError> {
        Ok(self.var(field, MAX_BYTES_LEN)?.to_vec())
    }
}

fn decode_claims(r: &mut Reader<'_>) -> Result<Claims, DecodeError> {
    let magic: [u8; 8] = r.fixed("magic")?;
    if magic != EVIDENCE_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u16::from_be_bytes(r.fixed("version")?);
    if version != EVIDENCE_VERSION {
        return Err(DecodeError::UnknownVersion {
            found: version,
            supported: EVIDENCE_VERSION,
        });
    }
    let binary_sha256 = Sha256Digest(r.fixed("binary_sha256")?);
    let profile_id = r.text("profile_id")?;
    let token = TokenIdentity {
        manufacturer: r.text("token.manufacturer")?,
        model: r.text("token.model")?,
        firmware_version: r.text("token.firmware_version")?,
    };
    let node_id = r.text("node_id")?;
    let cluster_id = r.text("cluster_id")?;
    let issued_at = u64::from_be_bytes(r.fixed("issued_at")?);
    let channel_binding = r.bytes("channel_binding")?;
    let tpm_quote = match r.u8("tpm_quote")? {
        0 => None,
        1 => {
            let ak_spki_der = r.bytes("tpm_quote.ak_spki_der")?;
            let attest = r.bytes("tpm_quote.attest")?;
            let signature = r.bytes("tpm_quote.signature")?;
            let count = usize::from(r.u8("tpm_quote.pcrs")?);
            if count > MAX_PCRS {
                return Err(DecodeError::FieldTooLong {
                    field: "tpm_quote.pcrs",
                    len: count,
                    max: MAX_PCRS,
                });
            }
            let mut pcrs = Vec::with_capacity(count);
            for _ in 0..count {
                let index = r.u8("tpm_quote.pcrs")?;
                let value = Sha256Digest(r.fixed("tpm_quote.pcrs")?);
                pcrs.push(PcrValue { index, value });
            }
            Some(TpmQuote {
                ak_spki_der,
                attest,
                signature,
                pcrs,
            })
        }
        flag => {
            return Err(DecodeError::BadFlag {
                field: "tpm_quote",
                value: flag,
            });
        }
    };
    Ok(Claims {
        binary_sha256,
        profile_id,
        token,
        node_id,
        cluster_id,
        issued_at,
        channel_binding,
        tpm_quote,
    })
}
