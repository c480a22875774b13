//! The SLA engine: every request's outcome is metered against its route's objective; the
//! engine derives attainment, error budgets, burn rates and alerts from those meters, steers
//! traffic away from backends that breach the objective, sheds or rejects when the budget is
//! burning, runs SLO-guarded canary releases, and keeps a log of every breach and what was done
//! about it.

pub mod canary;
pub mod clock;
pub mod engine;
pub mod gate;
pub mod histogram;
pub mod meter;
pub mod objective;
pub mod report;
pub mod store;

pub use clock::Clock;
pub use engine::{
    Admission, BackendSla, EVALUATION_INTERVAL, Enforcement, Priority, RouteSla, Shedding,
    SlaEngine,
};
pub use objective::{AlertTier, Classification, LatencyObjective, Objective, Severity, SloWindow};
