//! The control plane: starting and stopping the gateway ([`gateway`]), each generation of the
//! configuration ready to serve ([`runtime`]), and what a reload reports ([`reload`]).

pub mod gateway;
pub mod reload;
pub mod runtime;

pub use gateway::{ConfigSource, Gateway, Running};
