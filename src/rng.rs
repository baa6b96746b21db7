//! A fast per-thread random source (wyrand) and the distinct-pair sampler of power
//! of two choices. Statistical quality suffices for load balancing; nothing here is
//! for secrets.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish() | 1
}

pub fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// Uniform in `[0, 1)`, from the top 53 bits (an f64's mantissa).
pub fn unit() -> f64 {
    (next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2⁻³² for any n a
/// proxy sees).
pub fn below(n: usize) -> usize {
    ((u128::from(next_u64()) * n as u128) >> 64) as usize
}

/// Two distinct uniform indices in `0..n` (n ≥ 2), as linkerd draws them: b from
/// one fewer values, shifted past a.
pub fn distinct_pair(n: usize) -> (usize, usize) {
    debug_assert!(n >= 2);
    let a = below(n);
    let mut b = below(n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}
