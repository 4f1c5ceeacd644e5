//! The sans-IO TCP engine.
