//! The control plane: starting and stopping the gateway ([`gateway`]), each generation of the
//! configuration ready to serve ([`generation`]), and what a reload reports ([`reload`]).

pub mod gateway;
pub mod generation;
pub mod reload;

pub use gateway::{ConfigSource, Gateway, Running};
