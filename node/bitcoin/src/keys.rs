//! The cluster key as a depth-0 extended public key: xpub, fingerprint, descriptors, addresses.

use std::fmt;
use std::str::FromStr;

use bitcoin::bip32::{ChainCode, ChildNumber, DerivationPath, Fingerprint, Xpub};
use bitcoin::secp256k1::{self, Secp256k1};
use bitcoin::{Address, CompressedPublicKey, Network, NetworkKind, ScriptBuf};
use serde::{Deserialize, Serialize};

use crate::checksum::with_checksum;

/// Longest derivation path the node derives (BIP-32 depth is one byte).
pub const MAX_PATH_DEPTH: usize = 255;

/// The two branches of the key's descriptors: `/0/*` receives, `/1/*` takes change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chain {
    /// `wpkh([fp]xpub/0/*)`: addresses handed out to receive funds.
    Receive,
    /// `wpkh([fp]xpub/1/*)`: addresses the wallet sends its own change to.
    Change,
}

impl Chain {
    /// The first path component of this branch (0 or 1).
    pub fn index(self) -> u32 {
        match self {
            Chain::Receive => 0,
            Chain::Change => 1,
        }
    }

    /// The branch whose first path component is `index`, if any.
    pub fn from_index(index: u32) -> Option<Chain> {
        match index {
            0 => Some(Chain::Receive),
            1 => Some(Chain::Change),
            _ => None,
        }
    }
}

/// What is wrong with a cluster key or a derivation request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The public key is not a valid compressed secp256k1 point.
    #[error("cluster public key: not a valid 33-byte compressed secp256k1 point ({0})")]
    InvalidPublicKey(secp256k1::Error),
    /// The path contains a hardened step, which a public key cannot derive.
    #[error(
        "derivation path {path}: step {step} is hardened; only non-hardened paths can be derived from the cluster xpub"
    )]
    HardenedPath {
        /// The path as given.
        path: DerivationPath,
        /// Zero-based position of the first hardened step.
        step: usize,
    },
    /// The path is longer than BIP-32 allows.
    #[error("derivation path has {depth} steps; at most {MAX_PATH_DEPTH} are allowed")]
    PathTooDeep {
        /// Number of steps in the path.
        depth: usize,
    },
    /// An address index is at or above 2^31, where the hardened range starts.
    #[error("address index {0} is in the hardened range (must be below 2^31)")]
    IndexOutOfRange(u32),
    /// Public derivation failed; this happens with probability about 2^-127 per step.
    #[error(
        "derivation path {path}: BIP-32 derivation produced an invalid key ({reason}); use another index"
    )]
    Derivation {
        /// The path being derived.
        path: DerivationPath,
        /// What BIP-32 reported.
        reason: String,
    },
}

/// A cluster key seen as a depth-0 BIP-32 extended public key on one network.
///
/// The threshold key has no private master key anywhere: its public key and chain code form
/// the root of non-hardened derivation, and the threshold signer applies the same additive
/// shift to its shares. Everything here is public data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterKey {
    network: Network,
    xpub: Xpub,
}

impl ClusterKey {
    /// Builds the depth-0 xpub from the compressed public key and the chain code.
    pub fn new(
        network: Network,
        public_key: &[u8; 33],
        chain_code: [u8; 32],
    ) -> Result<ClusterKey, KeyError> {
        let public_key =
            secp256k1::PublicKey::from_slice(public_key).map_err(KeyError::InvalidPublicKey)?;
        Ok(ClusterKey {
            network,
            xpub: Xpub {
                network: NetworkKind::from(network),
                depth: 0,
                parent_fingerprint: Fingerprint::default(),
                child_number: ChildNumber::Normal { index: 0 },
                public_key,
                chain_code: ChainCode::from(chain_code),
            },
        })
    }

    /// The network addresses and the xpub are rendered for.
    pub fn network(&self) -> Network {
        self.network
    }

    /// The depth-0 extended public key.
    pub fn xpub(&self) -> &Xpub {
        &self.xpub
    }

    /// The xpub in base58 (`xpub…` on mainnet, `tpub…` on the test networks).
    pub fn xpub_string(&self) -> String {
        self.xpub.to_string()
    }

    /// The master public key.
    pub fn public_key(&self) -> CompressedPublicKey {
        CompressedPublicKey(self.xpub.public_key)
    }

    /// The master fingerprint: the first four bytes of HASH160 of the public key.
    pub fn fingerprint(&self) -> Fingerprint {
        self.xpub.fingerprint()
    }

    /// The descriptor of one branch without checksum, `wpkh([fp]xpub/c/*)`.
    fn descriptor_body(&self, chain: Chain) -> String {
        format!(
            "wpkh([{}]{}/{}/*)",
            self.fingerprint(),
            self.xpub,
            chain.index()
        )
    }

    /// The descriptor of one branch with its BIP-380 checksum, `wpkh([fp]xpub/c/*)#checksum`.
    pub fn descriptor(&self, chain: Chain) -> String {
        let body = self.descriptor_body(chain);
        // The body holds only hex, base58, brackets, slashes and `*`: all in the BIP-380 set.
        with_checksum(&body).unwrap_or(body)
    }

    /// The receive descriptor, `wpkh([fp]xpub/0/*)#checksum`.
    pub fn receive_descriptor(&self) -> String {
        self.descriptor(Chain::Receive)
    }

    /// The change descriptor, `wpkh([fp]xpub/1/*)#checksum`.
    pub fn change_descriptor(&self) -> String {
        self.descriptor(Chain::Change)
    }

    /// The child public key at a non-hardened path below the cluster key.
    pub fn derive(&self, path: &DerivationPath) -> Result<CompressedPublicKey, KeyError> {
        if path.len() > MAX_PATH_DEPTH {
            return Err(KeyError::PathTooDeep { depth: path.len() });
        }
        if let Some(step) = path.into_iter().position(ChildNumber::is_hardened) {
            return Err(KeyError::HardenedPath {
                path: path.clone(),
                step,
            });
        }
        let secp = Secp256k1::verification_only();
        let child = self
            .xpub
            .derive_pub(&secp, path)
            .map_err(|e| KeyError::Derivation {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        Ok(child.to_pub())
    }

    /// The path `m/chain/index`.
    pub fn path(chain: Chain, index: u32) -> Result<DerivationPath, KeyError> {
        let chain = ChildNumber::Normal {
            index: chain.index(),
        };
        let index =
            ChildNumber::from_normal_idx(index).map_err(|_| KeyError::IndexOutOfRange(index))?;
        Ok(DerivationPath::from(vec![chain, index]))
    }

    /// The child public key at `m/chain/index`.
    pub fn derive_at(&self, chain: Chain, index: u32) -> Result<CompressedPublicKey, KeyError> {
        self.derive(&Self::path(chain, index)?)
    }

    /// The P2WPKH address of a child key, for the configured network.
    pub fn address_for(&self, key: &CompressedPublicKey) -> Address {
        Address::p2wpkh(key, self.network)
    }

    /// The P2WPKH address at `m/chain/index`, for the configured network.
    pub fn address(&self, chain: Chain, index: u32) -> Result<Address, KeyError> {
        Ok(self.address_for(&self.derive_at(chain, index)?))
    }

    /// The P2WPKH address at any non-hardened path, for the configured network.
    pub fn address_at(&self, path: &DerivationPath) -> Result<Address, KeyError> {
        Ok(self.address_for(&self.derive(path)?))
    }

    /// The P2WPKH output script at any non-hardened path.
    pub fn script_at(&self, path: &DerivationPath) -> Result<ScriptBuf, KeyError> {
        Ok(ScriptBuf::new_p2wpkh(&self.derive(path)?.wpubkey_hash()))
    }
}

impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]{}", self.fingerprint(), self.xpub)
    }
}

/// Parses an address and checks that it belongs to `network`.
pub fn parse_address(address: &str, network: Network) -> Result<Address, AddressError> {
    let unchecked = Address::from_str(address).map_err(|e| AddressError::Malformed {
        address: address.to_owned(),
        reason: e.to_string(),
    })?;
    unchecked
        .require_network(network)
        .map_err(|_| AddressError::WrongNetwork {
            address: address.to_owned(),
            network,
        })
}

/// What is wrong with an address string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The string is not a Bitcoin address.
    #[error("address {address:?} is malformed: {reason}")]
    Malformed {
        /// The address as given.
        address: String,
        /// What the parser reported.
        reason: String,
    },
    /// The address is valid, but for another network.
    #[error("address {address:?} is not an address for {network}")]
    WrongNetwork {
        /// The address as given.
        address: String,
        /// The network the node is configured for.
        network: Network,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::bip32::Xpriv;

    fn dev_key(network: Network) -> (Xpriv, ClusterKey) {
        let xpriv = Xpriv::new_master(network, &[7u8; 32]).unwrap();
        let xpub = Xpub::from_priv(&Secp256k1::new(), &xpriv);
        let key = ClusterKey::new(
            network,
            &xpub.public_key.serialize(),
            xpub.chain_code.to_bytes(),
        )
        .unwrap();
        (xpriv, key)
    }

    #[test]
    fn xpub_and_fingerprint_match_a_software_master_key() {
        let secp = Secp256k1::new();
        let (xpriv, key) = dev_key(Network::Regtest);
        assert_eq!(key.xpub(), &Xpub::from_priv(&secp, &xpriv));
        assert!(key.xpub_string().starts_with("tpub"));
        assert_eq!(key.fingerprint(), xpriv.fingerprint(&secp));
        let (_, main) = dev_key(Network::Bitcoin);
        assert!(main.xpub_string().starts_with("xpub"));
    }

    #[test]
    fn bip32_test_vector_1_master_xpub() {
        // BIP-32 test vector 1, chain m.
        let xpub = Xpub::from_str("xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8").unwrap();
        let key = ClusterKey::new(
            Network::Bitcoin,
            &xpub.public_key.serialize(),
            xpub.chain_code.to_bytes(),
        )
        .unwrap();
        assert_eq!(key.xpub(), &xpub);
        assert_eq!(key.fingerprint().to_string(), "3442193e");
    }

    #[test]
    fn descriptors_carry_fingerprint_xpub_and_checksum() {
        let (_, key) = dev_key(Network::Regtest);
        let receive = key.receive_descriptor();
        let expected = format!("wpkh([{}]{}/0/*)", key.fingerprint(), key.xpub_string());
        let (body, checksum) = receive.split_once('#').unwrap();
        assert_eq!(body, expected);
        assert_eq!(checksum.len(), 8);
        assert_eq!(checksum, crate::descriptor_checksum(body).unwrap());
        assert!(
            key.change_descriptor()
                .starts_with(&format!("wpkh([{}]", key.fingerprint()))
        );
        assert!(key.change_descriptor().contains("/1/*)#"));
    }

    #[test]
    fn bitcoin_core_descriptor_checksum_example() {
        // From Bitcoin Core's descriptor documentation.
        let body = "wpkh([d34db33f/84h/0h/0h]xpub6DJ2dNUysrn5Vt36jH2KLBT2i1auw1tTSSomg8PhqNiUtx8QX2SvC9nrHu81fT41fvDUnhMjEzQgXnQjKEu3oaqMSzhSrHMxyyoEAmUHQbY/0/*)";
        assert_eq!(crate::descriptor_checksum(body).unwrap(), "cjjspncu");
    }

    #[test]
    fn addresses_match_software_derivation() {
        let secp = Secp256k1::new();
        let (xpriv, key) = dev_key(Network::Regtest);
        for (chain, index) in [(Chain::Receive, 0), (Chain::Receive, 5), (Chain::Change, 3)] {
            let path = ClusterKey::path(chain, index).unwrap();
            let child = xpriv.derive_priv(&secp, &path).unwrap();
            let pk = CompressedPublicKey(child.private_key.public_key(&secp));
            assert_eq!(key.derive_at(chain, index).unwrap(), pk);
            let address = key.address(chain, index).unwrap();
            assert_eq!(address, Address::p2wpkh(&pk, Network::Regtest));
            assert!(address.to_string().starts_with("bcrt1q"));
        }
    }

    #[test]
    fn refuses_hardened_and_out_of_range() {
        let (_, key) = dev_key(Network::Regtest);
        let path = DerivationPath::from_str("m/0/1h").unwrap();
        assert!(matches!(
            key.derive(&path),
            Err(KeyError::HardenedPath { step: 1, .. })
        ));
        assert_eq!(
            key.address(Chain::Receive, 1 << 31),
            Err(KeyError::IndexOutOfRange(1 << 31))
        );
        let deep = DerivationPath::from(vec![ChildNumber::Normal { index: 0 }; 256]);
        assert_eq!(key.derive(&deep), Err(KeyError::PathTooDeep { depth: 256 }));
    }

    #[test]
    fn refuses_invalid_public_key() {
        let mut bad = [0u8; 33];
        bad[0] = 2;
        assert!(matches!(
            ClusterKey::new(Network::Regtest, &bad, [0; 32]),
            Err(KeyError::InvalidPublicKey(_))
        ));
    }

    #[test]
    fn dev_policy_denylist_address_is_regtest() {
        let address = "bcrt1qsfyza8dnx9dhudwpg5pxq5q4k9e7kug3ys8qcf";
        let parsed = parse_address(address, Network::Regtest).unwrap();
        assert_eq!(parsed.to_string(), address);
        assert!(parsed.script_pubkey().is_p2wpkh());
        assert!(matches!(
            parse_address(address, Network::Bitcoin),
            Err(AddressError::WrongNetwork { .. })
        ));
        assert!(matches!(
            parse_address("bcrt1qnotanaddress", Network::Regtest),
            Err(AddressError::Malformed { .. })
        ));
    }
}
