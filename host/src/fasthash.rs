//! A fast hash for the maps consulted for every message (shapes, metric labels).
//!
//! The standard hasher, SipHash, resists crafted collisions and costs several hundred
//! instructions per short key: it was about 8% of the collector's instructions per
//! message. This is FxHash's mixing step (rustc's own hash maps). Use it only for
//! maps whose keys a sender of messages cannot choose, or that compare keys in place
//! after a lookup and are bounded: crafted collisions then cost probes, not memory.

use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

/// For `HashMap::with_hasher` / `HashSet::with_hasher`, or as their third parameter.
pub type FxBuild = BuildHasherDefault<FxHasher>;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" apart from "ab\0".
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hash};

    use super::*;

    fn hash<T: Hash + ?Sized>(v: &T) -> u64 {
        FxBuild::default().hash_one(v)
    }

    #[test]
    fn distinguishes_what_a_shape_or_label_can_differ_in() {
        let keys: &[&[&str]] = &[
            &["cnc_data"],
            &["cnc_dat"],
            &["cnc_data", ""],
            &["ab", "c"],
            &["a", "bc"],
            &["abcdefgh"],
            &["abcdefgh\0"],
            &["abcdefghi"],
        ];
        let mut seen: Vec<u64> = keys.iter().map(hash).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), keys.len());
        assert_eq!(hash(&["cnc_data"]), hash(&[String::from("cnc_data")]));
    }
}
