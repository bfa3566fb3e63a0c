//! Helpers shared by the library's unit tests (compiled for tests only).

/// Deterministic values in `[−0.5, 0.5)` from xorshift64 (`seed` must be non-zero): the test
/// inputs of the kernel twins, reproducible without a `rand` dependency in the library.
pub(crate) fn uniform(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}
