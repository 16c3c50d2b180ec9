//! Named, indexed random streams: every random draw in noether comes from one, so results
//! are a pure function of (what, seed, index) and do not depend on thread scheduling.

use rand::{SeedableRng, rngs::Xoshiro256PlusPlus};

/// SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seed of stream `index` of `tag` under `seed`:
/// mix(mix(FNV-1a(tag) ⊕ seed) ⊕ index).
pub fn stream_seed(tag: &str, seed: u64, index: u64) -> u64 {
    let fnv = tag.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    mix(mix(fnv ^ seed) ^ index)
}

/// A Xoshiro256++ generator for stream `index` of `tag` under `seed`. The algorithm is
/// fixed (not `StdRng`, which may change between rand versions), so datasets stay
/// reproducible across releases.
pub fn stream_rng(tag: &str, seed: u64, index: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(stream_seed(tag, seed, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_distinct_and_stable() {
        assert_ne!(stream_seed("a", 0, 0), stream_seed("a", 0, 1));
        assert_ne!(stream_seed("a", 0, 0), stream_seed("b", 0, 0));
        assert_ne!(stream_seed("a", 0, 0), stream_seed("a", 1, 0));
        // Pinned (value from an independent Python transcription of the formula) so that a
        // change to the mixer, and so to every dataset, cannot go unnoticed.
        assert_eq!(
            stream_seed("data/pendulum/standard", 0, 0),
            0xb832_a1a3_8ad9_09bd
        );
    }
}
