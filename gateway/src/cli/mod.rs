//! The commands of the `accord` binary that are more than a call into the gateway: `plugin
//! check|test` ([`plugin`]), `report` ([`report`]) and `slo export` ([`openslo`]). They live in
//! the library so that tests can drive them in-process; the demo, which only the binary runs,
//! lives with the binary (`src/demo/`).

pub mod openslo;
pub mod plugin;
pub mod report;
