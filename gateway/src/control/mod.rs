//! The control plane: starting and stopping the gateway ([`gateway`]), each generation of the
//! configuration ready to serve ([`generation`]), what a reload reports ([`reload`]), and reloading when the file changes
//! ([`watch`]).

pub mod gateway;
pub mod generation;
pub mod reload;
pub mod watch;

pub use gateway::{ConfigSource, Gateway, Running};
