//! Item hashes and the order-independent state digest.

use super::*;

/// SHA-256 of an item's canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ItemHash(pub [u8; 32]);

/// An order-independent multiset hash of a table: the sum of its items' hashes modulo 2^256.
///
/// Adding and subtracting commute, so the digest of a snapshot is its base's digest plus the
/// deltas of its segments in any order, and a scan of a restored table yields the same digest
/// exactly when the restore is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct StateDigest {
    /// Little-endian 64-bit limbs.
    pub(super) limbs: [u64; 4],
}

impl StateDigest {
    /// The digest of an empty table.
    pub const ZERO: StateDigest = StateDigest { limbs: [0; 4] };

    pub(super) fn from_hash(h: &ItemHash) -> StateDigest {
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            let start = 32 - 8 * (i + 1);
            let mut chunk = [0u8; 8];
            chunk.copy_from_slice(&h.0[start..start + 8]);
            *limb = u64::from_be_bytes(chunk);
        }
        StateDigest { limbs }
    }

    /// Sums digests that may be unknown (a stream without both images): any unknown term
    /// makes the sum unknown.
    pub(crate) fn sum_known(
        sum: Option<StateDigest>,
        term: Option<StateDigest>,
    ) -> Option<StateDigest> {
        let (mut sum, term) = (sum?, term?);
        sum.add(&term);
        Some(sum)
    }

    /// Adds an item to the multiset.
    pub fn add_item(&mut self, h: &ItemHash) {
        self.add(&StateDigest::from_hash(h));
    }

    /// Removes an item from the multiset.
    pub(crate) fn remove_item(&mut self, h: &ItemHash) {
        self.sub(&StateDigest::from_hash(h));
    }

    /// `self += other (mod 2^256)`.
    pub fn add(&mut self, other: &StateDigest) {
        let mut carry = false;
        for i in 0..4 {
            let (s1, c1) = self.limbs[i].overflowing_add(other.limbs[i]);
            let (s2, c2) = s1.overflowing_add(carry as u64);
            self.limbs[i] = s2;
            carry = c1 || c2;
        }
    }

    /// `self -= other (mod 2^256)`.
    pub(crate) fn sub(&mut self, other: &StateDigest) {
        let mut borrow = false;
        for i in 0..4 {
            let (d1, b1) = self.limbs[i].overflowing_sub(other.limbs[i]);
            let (d2, b2) = d1.overflowing_sub(borrow as u64);
            self.limbs[i] = d2;
            borrow = b1 || b2;
        }
    }

    /// 64 lowercase hex digits, most significant first.
    pub fn to_hex(&self) -> String {
        let mut bytes = [0u8; 32];
        for i in 0..4 {
            bytes[32 - 8 * (i + 1)..32 - 8 * i].copy_from_slice(&self.limbs[i].to_be_bytes());
        }
        hex::encode(bytes)
    }

    /// Parses the form written by [`StateDigest::to_hex`].
    pub(crate) fn from_hex(text: &str) -> Result<StateDigest, String> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|e| format!("state digest {text:?} is not 64 hex digits ({e})"))?;
        Ok(StateDigest::from_hash(&ItemHash(bytes)))
    }
}

impl serde::Serialize for StateDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for StateDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        StateDigest::from_hex(&text).map_err(de::Error::custom)
    }
}
