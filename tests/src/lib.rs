//! Cross-crate tests for shoal and the deterministic swarm simulator ([`sim`]), with the
//! hostile node it can add to a swarm ([`hostile`]).

pub mod hostile;
pub mod sim;

pub use proto_core;
