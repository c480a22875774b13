//! Plugins: their limits (time, memory, request and response body sizes), their file, and the spec the
//! plugin host is given.

use super::*;

/// Every plugin's settings; each one's id is checked.
pub(super) fn check_plugins(
    v: &mut Validator<'_>,
    raw: &RawConfig,
) -> Vec<(Arc<str>, PluginConfig)> {
    let mut plugins = Vec::new();
    for (name, plugin) in &raw.plugins {
        let path = format!("plugins.{name}");
        if let Err(e) = name.parse::<Id>() {
            v.error(plugin, &path, e);
            continue;
        }
        let p = &plugin.value;
        if p.limits.time.value.0.is_zero() || p.limits.time.value.0 > Duration::from_secs(1) {
            v.error(
                &p.limits.time,
                format!("{path}.limits.time"),
                "must be more than 0 and at most 1s (plugins run in the request path)",
            );
        }
        if p.limits.memory.value.0 < (1 << 20) || p.limits.memory.value.0 > (256 << 20) {
            v.error(
                &p.limits.memory,
                format!("{path}.limits.memory"),
                "must be between 1MiB and 256MiB",
            );
        }
        for (field, size) in [
            ("response_body", &p.response_body),
            ("request_body", &p.request_body),
        ] {
            if let Some(size) = size
                && size.value.0 > (16 << 20)
            {
                v.error(
                    size,
                    format!("{path}.{field}"),
                    "must be at most 16MiB (the body is held in memory for the plugin)",
                );
            }
        }
        if !p.path.value.ends_with(".wasm") {
            v.error(
                &p.path,
                format!("{path}.path"),
                "must name a WebAssembly component (.wasm)",
            );
        }
        plugins.push((
            Arc::<str>::from(name.as_str()),
            PluginConfig {
                path: PathBuf::from(&p.path.value),
                spec: accord_policies::plugin::PluginSpec {
                    name: name.clone(),
                    config: p
                        .config
                        .as_ref()
                        .map_or_else(String::new, |c| c.to_string()),
                    time_limit: p.limits.time.value.0,
                    memory_limit: usize::try_from(p.limits.memory.value.0).unwrap_or(usize::MAX),
                    on_error: match p.on_error {
                        RawOnError::Allow => accord_policies::plugin::OnError::Allow,
                        RawOnError::Reject => accord_policies::plugin::OnError::Reject,
                    },
                    isolation: match p.isolation {
                        RawIsolation::Pooled => accord_policies::plugin::Isolation::Pooled,
                        RawIsolation::Strict => accord_policies::plugin::Isolation::Strict,
                    },
                    response_body: p.response_body.as_ref().map_or(0, |size| {
                        usize::try_from(size.value.0).unwrap_or(usize::MAX)
                    }),
                    request_body: p.request_body.as_ref().map_or(0, |size| {
                        usize::try_from(size.value.0).unwrap_or(usize::MAX)
                    }),
                },
            },
        ));
    }

    plugins
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{config, refused};

    fn plugin(settings: &str) -> String {
        config(
            &format!("plugins:\n  guard:\n    path: guard.wasm\n{settings}"),
            "",
            "",
        )
    }

    #[test]
    fn limits_stay_within_the_request_path_budget() {
        refused(
            &plugin("    limits: {time: 0ms}\n"),
            "plugins.guard.limits.time: must be more than 0 and at most 1s",
        );
        refused(
            &plugin("    limits: {time: 2s}\n"),
            "plugins.guard.limits.time: must be more than 0 and at most 1s",
        );
        refused(
            &plugin("    limits: {memory: 512KiB}\n"),
            "plugins.guard.limits.memory: must be between 1MiB and 256MiB",
        );
        refused(
            &plugin("    response_body: 32MiB\n"),
            "plugins.guard.response_body: must be at most 16MiB",
        );
        refused(
            &plugin("    request_body: 17MiB\n"),
            "plugins.guard.request_body: must be at most 16MiB",
        );
    }

    #[test]
    fn a_plugin_is_a_wasm_file_with_a_valid_id() {
        refused(
            &config("plugins:\n  guard:\n    path: guard.so\n", "", ""),
            "plugins.guard.path: must name a WebAssembly component (.wasm)",
        );
        refused(
            &config("plugins:\n  Guard:\n    path: guard.wasm\n", "", ""),
            "plugins.Guard: invalid id \"Guard\"",
        );
    }
}
