//! Cross-crate tests for shoal. The deterministic swarm simulator will live here.

pub use proto_core;
