//! The `accord` command line ([`command`]: its commands, options and dispatch) and the commands
//! that are more than a call into the gateway: `plugin check|test` ([`plugin`]), `report`
//! ([`report`]), `canary` and `gate` ([`canary`]), `slo export` ([`openslo`]) and `slo rules`
//! ([`slo_rules`]); [`admin_client`] reaches a running gateway's admin API. They live in the
//! library so that tests can drive them in-process, and so that the binary compiles nothing of
//! its own; `accord demo` is [`crate::demo`].

pub mod admin_client;
pub mod canary;
pub mod command;
pub mod openslo;
pub mod plugin;
pub mod report;
pub mod slo_rules;
