//! Non-hardened HD derivation from the cluster key's extended public key.
//!
//! A threshold key has no seed and no extended private key, so only non-hardened derivation is
//! possible: a child key is the cluster key plus an additive shift `delta·G` that anyone holding
//! the xpub can compute (BIP-32 `CKDpub`, which SLIP-10 equals for secp256k1 except in a case of
//! probability about 2⁻¹²⁷, where SLIP-10 retries and BIP-32 skips the index).

use std::fmt;

use cggmp24::generic_ec::{NonZero, Point, Scalar};
use cggmp24::hd_wallet::{self, DeriveShift as _, ExtendedPublicKey, NonHardenedIndex, Slip10};
use serde::{Deserialize, Serialize};

use crate::Curve;

/// The deepest path accepted (BIP-32 depth is one byte).
pub const MAX_DEPTH: usize = 255;

/// A path of non-hardened child indices below the cluster xpub, such as `0/17`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<u32>", into = "Vec<u32>")]
pub struct DerivationPath(Vec<u32>);

/// Why a derivation path was refused: caller misuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A hardened index (≥ 2³¹) cannot be derived from a threshold key.
    #[error("index {0} is hardened; a threshold key derives non-hardened children only")]
    Hardened(u32),
    /// The path is deeper than BIP-32 allows.
    #[error("path has {0} levels; at most {MAX_DEPTH} are allowed")]
    TooDeep(usize),
}

impl DerivationPath {
    /// The empty path: the cluster key itself.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// Builds a path, refusing hardened indices.
    pub fn new(indices: Vec<u32>) -> Result<Self, PathError> {
        if indices.len() > MAX_DEPTH {
            return Err(PathError::TooDeep(indices.len()));
        }
        if let Some(hardened) = indices.iter().find(|i| **i >= hd_wallet::H) {
            return Err(PathError::Hardened(*hardened));
        }
        Ok(Self(indices))
    }

    /// The child indices.
    pub fn indices(&self) -> &[u32] {
        &self.0
    }
}

impl TryFrom<Vec<u32>> for DerivationPath {
    type Error = PathError;

    fn try_from(indices: Vec<u32>) -> Result<Self, Self::Error> {
        Self::new(indices)
    }
}

impl From<DerivationPath> for Vec<u32> {
    fn from(path: DerivationPath) -> Self {
        path.0
    }
}

impl fmt::Display for DerivationPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("m")?;
        for i in &self.0 {
            write!(f, "/{i}")?;
        }
        Ok(())
    }
}

/// A derived child: its additive shift and its public key.
pub(crate) struct Derived {
    pub(crate) shift: Scalar<Curve>,
    pub(crate) public_key: NonZero<Point<Curve>>,
}

/// Derives the child at `path` below `root`, accumulating the additive shift.
pub(crate) fn derive(root: &ExtendedPublicKey<Curve>, path: &DerivationPath) -> Option<Derived> {
    let mut epub = *root;
    let mut shift = Scalar::<Curve>::zero();
    for index in path.indices() {
        let index = NonHardenedIndex::try_from(*index).ok()?;
        let step = Slip10::derive_public_shift(&epub, index);
        shift += step.shift;
        epub = step.child_public_key;
    }
    Some(Derived {
        shift,
        public_key: NonZero::from_point(epub.public_key)?,
    })
}
