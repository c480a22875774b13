#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod demo;
pub mod hex;
pub mod notify;
pub mod outbound;
pub mod proxy;
pub mod stats;
pub mod telemetry;
pub mod traces;

pub use control::{ConfigSource, Gateway, Running};
