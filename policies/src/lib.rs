//! Accord's policy layer: how every request's outcome is classified ([`Class`]), and the SLA
//! engine ([`sla`]) that meters outcomes against each route's objective and acts on them.

pub mod outcome;
pub mod plugin;
pub mod sla;

pub use outcome::{Class, classify};
