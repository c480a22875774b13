//! Accord's policy layer. Today: how every request's outcome is classified ([`Class`]), the
//! vocabulary shared by metrics, access logs and (next) the SLA engine and Wasm policies.

pub mod outcome;

pub use outcome::{Class, classify};
