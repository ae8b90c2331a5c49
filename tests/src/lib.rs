//! Cross-crate tests for shoal and the deterministic swarm simulator ([`sim`]).

pub mod sim;

pub use proto_core;
