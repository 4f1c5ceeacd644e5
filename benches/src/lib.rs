//! Benchmarks for holdfast.
//!
//! The criterion benches live in `benches/benches/`; run them with `cargo bench -p holdfast-benches`.
//! Figures are reported as ns per packet and as ratios against a baseline measured in the same run,
//! never as timed assertions in tests.
