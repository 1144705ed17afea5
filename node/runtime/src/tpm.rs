//! The node's TPM 2.0: its attestation key (AK) at a persistent handle, and quotes over the
//! boot PCRs, through the tpm2-tools commands (Debian `tpm2-tools`).
//!
//! The AK is an ECDSA P-256 signing key created under the endorsement key and made
//! persistent once, at enrollment ([`Tpm2Tools::enroll`], `strongroom tpm enroll`); the
//! operator records the SHA-256 of its SubjectPublicKeyInfo in the firmware profile's
//! `tpm.enrolled_aks`. Each attestation then asks the TPM for a quote whose qualifying data
//! is [`strongroom_attest::Claims::tpm_qualifying_data`], so the quote speaks for those claims
//! only, on that connection only.
//!
//! Every call runs one tpm2-tools command against the TCTI the node is configured with
//! (`device:/dev/tpmrm0` on an appliance: the kernel's resource manager; `swtpm:host=…,port=…`
//! for the software TPM of the tests), with a time limit. Nothing here is secret: the quote,
//! its signature, the PCR values and the AK's public key are all sent to peers.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use p256::pkcs8::DecodePublicKey as _;
use strongroom_attest::{PcrValue, Sha256Digest, TpmQuote};

/// The TCTI of an appliance: the kernel's TPM resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";
/// The persistent handle the attestation key is enrolled at, unless configured otherwise.
pub const DEFAULT_AK_HANDLE: u32 = 0x8101_0002;
/// The boot PCRs quoted when the firmware profile names none: platform firmware (0), option
/// ROMs (2), boot manager and kernel (4), Secure Boot policy (7).
pub const DEFAULT_PCRS: [u8; 4] = [0, 2, 4, 7];
/// The PCRs a quote under `profile` covers: those the profile names, else [`DEFAULT_PCRS`].
pub fn quoted_pcrs(profile: &strongroom_attest::FirmwareProfile) -> Vec<u8> {
    if profile.tpm.pcrs.is_empty() {
        DEFAULT_PCRS.to_vec()
    } else {
        profile.tpm.pcrs.keys().copied().collect()
    }
}

/// How long one tpm2-tools command may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// First and last persistent handle (TPM 2.0 Part 2, `TPM_HT_PERSISTENT`).
const PERSISTENT_FIRST: u32 = 0x8100_0000;
const PERSISTENT_LAST: u32 = 0x81ff_ffff;

/// A tpm2-tools command failed or the TPM is not usable as configured.
#[derive(Debug, thiserror::Error)]
pub enum TpmToolsError {
    /// The command is not on `PATH`.
    #[error(
        "{tool} is not installed: install the Debian package tpm2-tools (apt-get install tpm2-tools)"
    )]
    NotInstalled {
        /// The command.
        tool: &'static str,
    },
    /// The command could not be started or its files not handled.
    #[error("cannot run {tool}: {source}")]
    Io {
        /// The command.
        tool: &'static str,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The command exited with an error.
    #[error("{tool} failed on TPM {tcti} ({status}): {message}")]
    Failed {
        /// The command.
        tool: &'static str,
        /// The TCTI it used.
        tcti: String,
        /// Its exit status.
        status: String,
        /// Its error lines.
        message: String,
    },
    /// The command did not finish in time and was killed.
    #[error(
        "{tool} did not finish within {} s on TPM {tcti}: is the TPM (or its resource manager) reachable?",
        TOOL_TIMEOUT.as_secs()
    )]
    TimedOut {
        /// The command.
        tool: &'static str,
        /// The TCTI it used.
        tcti: String,
    },
    /// No object at the persistent handle.
    #[error(
        "the TPM at {tcti} has no key at persistent handle {handle:#010x}: enroll the attestation key with `strongroom tpm enroll --tcti {tcti} --handle {handle:#010x}` (docs/appliance-install.md, step 6), or set [attestation.tpm] ak_handle to where it is"
    )]
    NoKey {
        /// The handle.
        handle: u32,
        /// The TCTI.
        tcti: String,
    },
    /// The handle is not in the persistent range.
    #[error(
        "{handle:#010x} is not a persistent TPM handle: use one between 0x81000000 and 0x81ffffff (default 0x81010002)"
    )]
    NotPersistent {
        /// The handle.
        handle: u32,
    },
    /// The object at the handle is not an ECDSA P-256 key.
    #[error(
        "the key at persistent handle {handle:#010x} is not a P-256 key ({reason}): enroll an ECDSA P-256 attestation key (`strongroom tpm enroll`) at another handle"
    )]
    NotP256 {
        /// The handle.
        handle: u32,
        /// Why its public key was refused.
        reason: String,
    },
    /// A PCR index out of range, or no PCR at all.
    #[error("PCR selection {pcrs:?}: give 1 to 24 indices, each 0 to 23")]
    PcrSelection {
        /// The selection.
        pcrs: Vec<u8>,
    },
    /// The command's output files are not what it documents.
    #[error("{tool} wrote unexpected output: {detail}")]
    Output {
        /// The command.
        tool: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// The attestation key after [`Tpm2Tools::enroll`].
#[derive(Clone, Debug)]
pub struct Enrollment {
    /// Its SubjectPublicKeyInfo, DER.
    pub ak_spki_der: Vec<u8>,
    /// SHA-256 of the SubjectPublicKeyInfo: the value for `tpm.enrolled_aks`.
    pub ak_sha256: Sha256Digest,
    /// Whether this call created it (`false`: a key was already at the handle).
    pub created: bool,
}

/// tpm2-tools against one TPM.
#[derive(Clone, Debug)]
pub struct Tpm2Tools {
    tcti: String,
}

impl Tpm2Tools {
    /// The TPM reached through `tcti` (e.g. [`DEFAULT_TCTI`]).
    pub fn new(tcti: impl Into<String>) -> Self {
        Self { tcti: tcti.into() }
    }

    /// The TCTI.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// The public key of the attestation key at `handle`, as SubjectPublicKeyInfo DER; it
    /// must be an ECDSA P-256 key.
    pub fn read_ak(&self, handle: u32) -> Result<Vec<u8>, TpmToolsError> {
        check_persistent(handle)?;
        let dir = work_dir("tpm2_readpublic")?;
        let out = dir.path().join("ak.der");
        self.run(
            "tpm2_readpublic",
            &[
                "-c".into(),
                hex_handle(handle).into(),
                "-f".into(),
                "der".into(),
                "-o".into(),
                out.clone().into(),
            ],
        )
        .map_err(|e| self.no_key(e, handle))?;
        let der = read(&out, "tpm2_readpublic")?;
        p256::PublicKey::from_public_key_der(&der).map_err(|e| TpmToolsError::NotP256 {
            handle,
            reason: e.to_string(),
        })?;
        Ok(der)
    }

    /// A quote over `pcrs` (SHA-256 bank) by the key at `handle`, with `qualifying` as its
    /// `extraData`, and the PCR values (read by the same command right after the quote: a PCR
    /// extended in between makes the verifier's digest check fail, never pass).
    pub fn quote(
        &self,
        handle: u32,
        ak_spki_der: &[u8],
        pcrs: &[u8],
        qualifying: &[u8; 32],
    ) -> Result<TpmQuote, TpmToolsError> {
        check_persistent(handle)?;
        let selection = pcr_selection(pcrs)?;
        let dir = work_dir("tpm2_quote")?;
        let attest = dir.path().join("quote.attest");
        let signature = dir.path().join("quote.sig");
        let values = dir.path().join("pcrs.bin");
        self.run(
            "tpm2_quote",
            &[
                "-c".into(),
                hex_handle(handle).into(),
                "-l".into(),
                selection.into(),
                "-q".into(),
                hex::encode(qualifying).into(),
                "-g".into(),
                "sha256".into(),
                "-m".into(),
                attest.clone().into(),
                "-s".into(),
                signature.clone().into(),
                "-o".into(),
                values.clone().into(),
                "-F".into(),
                "values".into(),
            ],
        )
        .map_err(|e| self.no_key(e, handle))?;
        Ok(TpmQuote {
            ak_spki_der: ak_spki_der.to_vec(),
            attest: read(&attest, "tpm2_quote")?,
            signature: read(&signature, "tpm2_quote")?,
            pcrs: pcr_values(pcrs, &read(&values, "tpm2_quote")?, "tpm2_quote")?,
        })
    }

    /// The current values of `pcrs` in the SHA-256 bank.
    pub fn read_pcrs(&self, pcrs: &[u8]) -> Result<Vec<PcrValue>, TpmToolsError> {
        let selection = pcr_selection(pcrs)?;
        let dir = work_dir("tpm2_pcrread")?;
        let values = dir.path().join("pcrs.bin");
        self.run(
            "tpm2_pcrread",
            &[
                selection.into(),
                "-o".into(),
                values.clone().into(),
                "-F".into(),
                "values".into(),
            ],
        )?;
        pcr_values(pcrs, &read(&values, "tpm2_pcrread")?, "tpm2_pcrread")
    }

    /// Creates an ECDSA P-256 attestation key under the endorsement key and makes it
    /// persistent at `handle`; when a key is already there, returns it (`created: false`).
    /// Needs the owner hierarchy without a password.
    pub fn enroll(&self, handle: u32) -> Result<Enrollment, TpmToolsError> {
        check_persistent(handle)?;
        match self.read_ak(handle) {
            Ok(der) => {
                return Ok(Enrollment {
                    ak_sha256: Sha256Digest::of(&der),
                    ak_spki_der: der,
                    created: false,
                });
            }
            Err(TpmToolsError::NoKey { .. }) => {}
            Err(e) => return Err(e),
        }
        let dir = work_dir("tpm2_createak")?;
        let d = dir.path();
        let ek = d.join("ek.ctx");
        let ak = d.join("ak.ctx");
        // Without a resource manager (a bare TPM or swtpm), transient objects and sessions
        // stay loaded between commands: flush them after each step.
        let flush = |what: &str| self.run("tpm2_flushcontext", &[what.into()]);
        self.run(
            "tpm2_createek",
            &[
                "-c".into(),
                ek.clone().into(),
                "-G".into(),
                "ecc".into(),
                "-u".into(),
                d.join("ek.pub").into(),
            ],
        )?;
        flush("-t")?;
        self.run(
            "tpm2_createak",
            &[
                "-C".into(),
                ek.into(),
                "-c".into(),
                ak.clone().into(),
                "-G".into(),
                "ecc".into(),
                "-g".into(),
                "sha256".into(),
                "-s".into(),
                "ecdsa".into(),
                "-u".into(),
                d.join("ak.der").into(),
                "-f".into(),
                "der".into(),
                "-n".into(),
                d.join("ak.name").into(),
            ],
        )?;
        flush("-t")?;
        flush("-s")?;
        self.run(
            "tpm2_evictcontrol",
            &[
                "-C".into(),
                "o".into(),
                "-c".into(),
                ak.into(),
                hex_handle(handle).into(),
            ],
        )?;
        flush("-t")?;
        let der = self.read_ak(handle)?;
        Ok(Enrollment {
            ak_sha256: Sha256Digest::of(&der),
            ak_spki_der: der,
            created: true,
        })
    }

    /// A command failing with `TPM_RC_HANDLE` on the AK's handle: nothing is there.
    fn no_key(&self, e: TpmToolsError, handle: u32) -> TpmToolsError {
        match e {
            TpmToolsError::Failed { message, .. }
                if message.contains("0x18B") || message.contains("0x18b") =>
            {
                TpmToolsError::NoKey {
                    handle,
                    tcti: self.tcti.clone(),
                }
            }
            other => other,
        }
    }

    /// Runs `tool` with `args` against this TPM, within [`TOOL_TIMEOUT`].
    fn run(&self, tool: &'static str, args: &[OsString]) -> Result<(), TpmToolsError> {
        let mut child = Command::new(tool)
            .args(args)
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => TpmToolsError::NotInstalled { tool },
                _ => TpmToolsError::Io { tool, source },
            })?;
        let deadline = Instant::now() + TOOL_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(TpmToolsError::TimedOut {
                        tool,
                        tcti: self.tcti.clone(),
                    });
                }
                Err(source) => return Err(TpmToolsError::Io { tool, source }),
            }
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            use std::io::Read as _;
            let _ = pipe.read_to_string(&mut stderr);
        }
        if status.success() {
            return Ok(());
        }
        let mut message = error_lines(&stderr);
        if message.contains("load tcti") {
            message.push_str(
                " (the TPM is not reachable through this TCTI: check [attestation.tpm] tcti; \
                 device:/dev/tpmrm0 needs the TPM present and the node's user in group tss)",
            );
        }
        Err(TpmToolsError::Failed {
            tool,
            tcti: self.tcti.clone(),
            status: status.to_string(),
            message,
        })
    }
}

/// Whether `handle` is a persistent handle (`0x81000000`–`0x81ffffff`), where an attestation
/// key is kept.
pub fn check_persistent(handle: u32) -> Result<(), TpmToolsError> {
    if (PERSISTENT_FIRST..=PERSISTENT_LAST).contains(&handle) {
        Ok(())
    } else {
        Err(TpmToolsError::NotPersistent { handle })
    }
}

/// `0x81010002`.
pub fn hex_handle(handle: u32) -> String {
    format!("{handle:#010x}")
}

/// Parses a handle written as hex (`0x81010002`) or decimal.
pub fn parse_handle(text: &str) -> Result<u32, TpmToolsError> {
    let t = text.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    };
    let handle = parsed.ok_or(TpmToolsError::NotPersistent { handle: 0 })?;
    check_persistent(handle)?;
    Ok(handle)
}

/// `sha256:0,2,4,7` for ascending, distinct indices below 24.
fn pcr_selection(pcrs: &[u8]) -> Result<String, TpmToolsError> {
    let ok = !pcrs.is_empty()
        && pcrs.len() <= 24
        && pcrs.iter().all(|i| *i < 24)
        && pcrs.windows(2).all(|w| w[0] < w[1]);
    if !ok {
        return Err(TpmToolsError::PcrSelection {
            pcrs: pcrs.to_vec(),
        });
    }
    let list: Vec<String> = pcrs.iter().map(u8::to_string).collect();
    Ok(format!("sha256:{}", list.join(",")))
}

/// The 32-byte values of `pcrs`, concatenated in index order (`-F values`).
fn pcr_values(pcrs: &[u8], raw: &[u8], tool: &'static str) -> Result<Vec<PcrValue>, TpmToolsError> {
    if raw.len() != 32 * pcrs.len() {
        return Err(TpmToolsError::Output {
            tool,
            detail: format!(
                "{} bytes of PCR values for {} PCRs (expected 32 each)",
                raw.len(),
                pcrs.len()
            ),
        });
    }
    Ok(pcrs
        .iter()
        .zip(raw.chunks_exact(32))
        .map(|(index, chunk)| {
            let mut value = [0u8; 32];
            value.copy_from_slice(chunk);
            PcrValue {
                index: *index,
                value: Sha256Digest(value),
            }
        })
        .collect())
}

/// The lines tpm2-tools writes for the user (`ERROR: …`), without the library's trace lines;
/// the whole output when there are none.
fn error_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("ERROR: "))
        .map(str::trim)
        .collect();
    let text = if lines.is_empty() {
        stderr.trim().to_owned()
    } else {
        lines.join("; ")
    };
    let mut text: String = text.chars().take(600).collect();
    if text.is_empty() {
        text = "no error message".into();
    }
    text
}

fn work_dir(tool: &'static str) -> Result<tempfile::TempDir, TpmToolsError> {
    tempfile::Builder::new()
        .prefix("strongroom-tpm-")
        .tempdir()
        .map_err(|source| TpmToolsError::Io { tool, source })
}

fn read(path: &Path, tool: &'static str) -> Result<Vec<u8>, TpmToolsError> {
    std::fs::read(path).map_err(|source| TpmToolsError::Io { tool, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_and_handles() {
        assert_eq!(pcr_selection(&[0, 2, 4, 7]).unwrap(), "sha256:0,2,4,7");
        assert!(pcr_selection(&[]).is_err());
        assert!(pcr_selection(&[2, 0]).is_err());
        assert!(pcr_selection(&[24]).is_err());
        assert_eq!(parse_handle("0x81010002").unwrap(), DEFAULT_AK_HANDLE);
        assert_eq!(parse_handle("2164326402").unwrap(), DEFAULT_AK_HANDLE);
        assert!(matches!(
            parse_handle("0x80000000"),
            Err(TpmToolsError::NotPersistent { .. })
        ));
        assert_eq!(hex_handle(DEFAULT_AK_HANDLE), "0x81010002");
    }

    #[test]
    fn only_the_user_facing_error_lines_are_kept() {
        let stderr = "WARNING:esys:src/x.c:1:f() Received TPM Error\nERROR:esys:src/y.c:2:g() Error (0x18b)\nERROR: Esys_TR_FromTPMPublic(0x18B) - tpm:handle(1):the handle is not correct for the use\nERROR: Unable to run tpm2_readpublic\n";
        assert_eq!(
            error_lines(stderr),
            "Esys_TR_FromTPMPublic(0x18B) - tpm:handle(1):the handle is not correct for the use; Unable to run tpm2_readpublic"
        );
        assert_eq!(error_lines(""), "no error message");
    }

    #[test]
    fn pcr_values_are_split_in_index_order() {
        let raw: Vec<u8> = (0..64).collect();
        let v = pcr_values(&[0, 7], &raw, "t").unwrap();
        assert_eq!(v[1].index, 7);
        assert_eq!(v[1].value.as_bytes()[0], 32);
        assert!(pcr_values(&[0], &raw, "t").is_err());
    }
}
