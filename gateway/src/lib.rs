#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod errors;
pub mod gateway;
pub mod headers;
pub mod metrics;
pub mod openslo;
pub mod plugin_cli;
pub mod proxy;
pub mod reload;
pub mod report_cli;
pub mod router;
pub mod runtime;
pub mod server;
pub mod sla_report;
pub mod stats;
pub mod telemetry;

pub use gateway::{ConfigSource, Gateway, Running};
pub mod demo;
