//! The overwrite passes' data generator: wyrand (Wang Yi's 64-bit generator), one
//! addition and one 64x64->128 multiplication per 8 bytes, so one core fills buffers
//! several times faster than any disk writes them. Not cryptographic, and it need not be:
//! shred's random passes defeat recovery of the previous contents, not prediction of
//! the new ones; each pass is seeded from the kernel so two erasures never write the
//! same stream. It also picks verification offsets from a fixed seed.

/// wyrand's state.
#[derive(Debug, Clone)]
pub struct WyRand(u64);

impl WyRand {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        // Folding the product's halves together is the algorithm.
        #[allow(clippy::cast_possible_truncation)]
        let (hi, lo) = ((t >> 64) as u64, t as u64);
        hi ^ lo
    }

    /// A number in `0..n` (`n` > 0; the modulo bias is below 2^-40 for the spans used
    /// here, far under what sampling offsets cares about).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "empty range");
        self.next_u64() % n
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut words = buf.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = words.into_remainder();
        if !rest.is_empty() {
            let last = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&last[..rest.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let (mut a, mut b, mut c) = (WyRand::new(1), WyRand::new(1), WyRand::new(2));
        let mut x = [0u8; 4099];
        let mut y = [0u8; 4099];
        let mut z = [0u8; 4099];
        a.fill(&mut x);
        b.fill(&mut y);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
        // The odd tail is filled too.
        assert_ne!(x[4096..], [0, 0, 0]);
    }

    #[test]
    fn bytes_are_spread_evenly() {
        // A chi-square-like sanity check: every byte value appears about len/256 times.
        let mut buf = vec![0u8; 1 << 20];
        WyRand::new(0x1234).fill(&mut buf);
        let mut counts = [0u32; 256];
        for b in &buf {
            counts[usize::from(*b)] += 1;
        }
        let expect = (buf.len() / 256) as f64;
        for (v, &c) in counts.iter().enumerate() {
            let dev = (f64::from(c) - expect).abs() / expect;
            assert!(dev < 0.05, "byte {v}: {c} vs {expect}");
        }
        // No 4 KiB block repeats.
        let blocks: std::collections::HashSet<&[u8]> = buf.chunks(4096).collect();
        assert_eq!(blocks.len(), buf.len() / 4096);
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = WyRand::new(9);
        for n in [1, 2, 3, 1000, u64::MAX] {
            for _ in 0..100 {
                assert!(r.below(n) < n);
            }
        }
    }
}
