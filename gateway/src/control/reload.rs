//! What a reload reports: why one was refused, what a successful one changed, and which
//! changed settings only take effect after a restart.

use crate::config::{Config, ConfigErrors};
use crate::control::generation::BuildError;

/// Why a reload was refused. The running configuration is untouched.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration is invalid.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// It is valid but could not be built (unreadable TLS files, say).
    #[error("the configuration is valid but cannot be built")]
    Build(#[from] BuildError),
}

impl ReloadError {
    /// The error and each of its causes, joined: what a person reads in a log or a response.
    pub fn describe(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            text.push_str(": ");
            text.push_str(&error.to_string());
            cause = error.source();
        }
        text
    }
}

/// What a successful reload changed.
#[derive(Debug, serde::Serialize)]
pub struct ReloadReport {
    /// Routes now served.
    pub routes: usize,
    /// Backends now configured.
    pub backends: usize,
    /// Settings that changed but only take effect after a restart (listeners, admin, limits).
    pub restart_required: Vec<String>,
}

/// The settings that differ between `old` and `new` but are only read at start. Everything
/// else — routes, backends, plugins, SLOs, the admin token, `log.access_log` — applies at once.
pub fn restart_required(old: &Config, new: &Config) -> Vec<String> {
    let mut restart_required = Vec::new();
    if old.listeners != new.listeners {
        restart_required.push("listeners".to_owned());
    }
    if old.plugin_cache != new.plugin_cache {
        restart_required.push("plugin_cache".to_owned());
    }
    // The admin token and `log.access_log` are read per request: they apply at once.
    if old.admin.address != new.admin.address {
        restart_required.push("admin.address".to_owned());
    }
    if old.limits != new.limits {
        restart_required.push("limits".to_owned());
    }
    if old.log.format != new.log.format {
        restart_required.push("log.format".to_owned());
    }
    if old.log.level != new.log.level {
        restart_required.push("log.level".to_owned());
    }
    if old.sla_history != new.sla_history {
        restart_required.push("sla_history".to_owned());
    }
    if old.cluster != new.cluster {
        restart_required.push("cluster".to_owned());
    }
    restart_required
}
