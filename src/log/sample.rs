//! Owns the access log's sampling (`log.access_sample`): which successful requests get a line.
//! Each worker draws from its own xorshift generator, so deciding costs a few instructions and
//! no shared state; lines left out are spread evenly over time, connections and paths instead
//! of following any pattern in the traffic (as "every Nth request" would).

use std::cell::Cell;

pub struct Sampler {
    state: Cell<u64>,
    /// A draw (53 random bits) below this is kept.
    threshold: u64,
    all: bool,
}

impl Sampler {
    /// Keeps about `fraction` (0.0 to 1.0) of the draws; `seed` tells workers' sequences apart.
    pub fn new(fraction: f64, seed: u64) -> Sampler {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        Sampler {
            // splitmix64 of the seed: any seed (0 included) gives a well-mixed, non-zero state.
            state: Cell::new(splitmix64(seed) | 1),
            threshold: (fraction * (1u64 << 53) as f64) as u64,
            all: fraction >= 1.0,
        }
    }

    /// One draw: true for the lines to keep.
    #[inline]
    pub fn take(&self) -> bool {
        if self.all {
            return true;
        }
        if self.threshold == 0 {
            return false;
        }
        // xorshift64* (Vigna): a full-period generator, plenty for spreading log lines.
        let mut x = self.state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) < self.threshold
    }
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(fraction: f64, seed: u64) -> usize {
        let s = Sampler::new(fraction, seed);
        (0..100_000).filter(|_| s.take()).count()
    }

    #[test]
    fn keeps_about_the_fraction_asked_for() {
        assert_eq!(kept(1.0, 0), 100_000);
        assert_eq!(kept(0.0, 0), 0);
        assert_eq!(kept(f64::NAN, 0), 0);
        for (fraction, seed) in [(0.5, 1), (0.1, 2), (0.01, 3), (0.9, 0)] {
            let n = kept(fraction, seed) as f64 / 100_000.0;
            assert!((n - fraction).abs() < 0.01, "{fraction}: {n}");
        }
    }

    #[test]
    fn workers_draw_different_sequences() {
        let a = Sampler::new(0.5, 0);
        let b = Sampler::new(0.5, 1);
        let draws = |s: &Sampler| (0..64).map(|_| s.take()).collect::<Vec<_>>();
        assert_ne!(draws(&a), draws(&b));
    }
}
