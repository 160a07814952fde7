//! A byte-string interner: strings stored back to back in one buffer, found through an
//! open-addressing hash table of ids. Building it costs two allocations however many strings
//! it holds, and a lookup hashes the query once and compares bytes in place.

/// Empty slot marker. A used slot holds `tag << 32 | id`, where `tag` is the high half of the
/// string's hash: most probes that would miss are rejected on the tag alone, without touching
/// the string table (which, for a 262k vocabulary, is a cache miss).
const EMPTY: u64 = u64::MAX;

/// Interned byte strings with dense ids `0..len()`, in insertion order.
#[derive(Debug, Clone, Default)]
pub(crate) struct StrIndex {
    bytes: Vec<u8>,
    /// `offsets[i]..offsets[i + 1]` is string `i` in `bytes`.
    offsets: Vec<u32>,
    slots: Vec<u64>,
}

/// A fast 64-bit hash for short byte strings (FxHash-style multiply-rotate over 8-byte words).
#[inline]
pub(crate) fn hash_bytes(s: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = s.len() as u64;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(K);
    }
    // Final avalanche so the low bits (the slot index) depend on every input bit.
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

/// A `Hasher` over [`hash_bytes`]-style mixing, for the per-call word caches (keys are short
/// strings; SipHash's DoS resistance buys nothing for a cache that lives one call).
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 29;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^ (h >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = (self.0.rotate_left(5) ^ hash_bytes(bytes)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

impl StrIndex {
    /// An empty index sized for about `n` strings of `total_bytes` bytes in all.
    pub(crate) fn with_capacity(n: usize, total_bytes: usize) -> StrIndex {
        let cap = ((n.max(8) + 1) * 2).next_power_of_two();
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        StrIndex {
            bytes: Vec::with_capacity(total_bytes),
            offsets,
            slots: vec![EMPTY; cap],
        }
    }

    /// Number of strings.
    pub(crate) fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// String `id`.
    #[inline]
    pub(crate) fn get(&self, id: u32) -> &[u8] {
        let i = id as usize;
        &self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The id of `s`, if interned.
    #[inline]
    pub(crate) fn find(&self, s: &[u8]) -> Option<u32> {
        self.probe(s, hash_bytes(s)).ok()
    }

    /// Looks `s` (hash `h`) up: `Ok(id)` where it is interned, else `Err(i)` with `i` the empty
    /// slot where the probe ended (where `s` would go).
    #[inline]
    fn probe(&self, s: &[u8], h: u64) -> Result<u32, usize> {
        let mask = self.slots.len() - 1;
        let tag = h >> 32;
        let mut i = h as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                return Err(i);
            }
            let id = slot as u32;
            if slot >> 32 == tag && self.get(id) == s {
                return Ok(id);
            }
            i = (i + 1) & mask;
        }
    }

    /// Interns `s` and returns its id, and whether it was new.
    pub(crate) fn insert(&mut self, s: &[u8]) -> (u32, bool) {
        if (self.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let h = hash_bytes(s);
        let i = match self.probe(s, h) {
            Ok(id) => return (id, false),
            Err(i) => i,
        };
        let id = self.len() as u32;
        self.bytes.extend_from_slice(s);
        self.offsets.push(self.bytes.len() as u32);
        self.slots[i] = ((h >> 32) << 32) | u64::from(id);
        (id, true)
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        let mut slots = vec![EMPTY; cap];
        let mask = cap - 1;
        for id in 0..self.len() as u32 {
            let h = hash_bytes(self.get(id));
            let mut i = h as usize & mask;
            while slots[i] != EMPTY {
                i = (i + 1) & mask;
            }
            slots[i] = ((h >> 32) << 32) | u64::from(id);
        }
        self.slots = slots;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_grow() {
        let mut idx = StrIndex::with_capacity(2, 4);
        let words: Vec<String> = (0..1000).map(|i| format!("w{i}")).collect();
        for (i, w) in words.iter().enumerate() {
            assert_eq!(idx.insert(w.as_bytes()), (i as u32, true));
        }
        assert_eq!(idx.insert(b"w7"), (7, false));
        for (i, w) in words.iter().enumerate() {
            assert_eq!(idx.find(w.as_bytes()), Some(i as u32));
            assert_eq!(idx.get(i as u32), w.as_bytes());
        }
        assert_eq!(idx.find(b"nope"), None);
        assert_eq!(idx.find(b""), None);
    }
}
