//! The commands of the `accord` binary that are more than a call into the gateway: `plugin
//! check|test` ([`plugin`]), `report` ([`report`]), `canary` and `gate` ([`canary`]), `slo
//! export` ([`openslo`]) and `slo rules` ([`slo_rules`]); [`admin_client`] reaches a running gateway's admin API. They live in
//! the library so that tests can drive them in-process; the demo, which only the binary runs,
//! lives with the binary (`src/demo/`).

pub mod admin_client;
pub mod canary;
pub mod openslo;
pub mod plugin;
pub mod report;
pub mod slo_rules;
