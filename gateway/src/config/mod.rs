//! Configuration: the YAML file model ([`raw`]), its checked value types ([`types`]), pure
//! validation with located errors ([`validate()`]), and the internal model the gateway is built
//! from ([`model`]). The file's format (model, value types, parser, schema) is the
//! `accord-config-file` crate, re-exported here.

pub mod error;
pub mod model;
pub mod validate;

pub use accord_config_file::{raw, types};

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::Config;
pub use raw::RawConfig;
pub use validate::{Environment, ProcessEnvironment, validate};

/// Parses YAML text into the file model. A syntax or type error stops parsing, so this reports
/// one error; [`validate()`] then reports every remaining one.
pub fn parse(source: &str) -> Result<RawConfig, ConfigErrors> {
    accord_config_file::parse(source).map_err(|error| {
        let (line, column) = error.location().map_or((0, 0), |l| (l.line(), l.column()));
        let message = bare_message(&error.without_snippet().to_string());
        ConfigErrors::new(vec![ConfigError::new(
            line,
            column,
            error::yaml_path_at(source, line),
            message,
        )])
    })
}

/// The library's message without its location decorations ("error: line L column C: …" and
/// "… at line L, column C"), which the gateway reports in fields of their own.
pub(crate) fn bare_message(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    let mut message = first.strip_prefix("error: ").unwrap_or(first);
    if let Some(rest) = message.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
    {
        message = after;
    }
    if let Some((before, _)) = message.rsplit_once(" at line ") {
        message = before;
    }
    message.to_owned()
}

/// Parses and validates YAML text.
pub fn from_str(source: &str, env: &dyn Environment) -> Result<Config, ConfigErrors> {
    validate(&parse(source)?, env)
}

/// Reads, parses and validates a configuration file; errors name the file.
pub fn load(path: &Path, env: &dyn Environment) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::new(vec![ConfigError::new(
            0,
            0,
            "",
            format!("cannot read the file: {e}"),
        )])
        .in_file(&name, "")
    })?;
    from_str(&source, env).map_err(|e| e.in_file(&name, &source))
}

/// The JSON Schema of the configuration file, for editors.
pub fn json_schema() -> serde_json::Value {
    accord_config_file::json_schema()
}
