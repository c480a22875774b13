//! The format of Accord's configuration file, `accord.yaml`: the model as written ([`raw`]), its
//! checked value types ([`types`]), the YAML parser and the JSON Schema. The gateway's
//! `accord::config` validates this model into the one it runs from.
//!
//! A crate of its own because deserializing this model is most of the code the compiler
//! generates for configuration (every struct's visitor, instantiated for the YAML parser): here
//! it builds in parallel with the rest of the gateway, and for size (the release profile), since
//! it runs only at start and on reload.
#![forbid(unsafe_code)]

pub mod raw;
pub mod types;

pub use raw::RawConfig;

/// Parses YAML text into the file model. A syntax or type error stops parsing; the error carries
/// its location.
pub fn parse(source: &str) -> Result<RawConfig, serde_saphyr::Error> {
    serde_saphyr::from_str::<RawConfig>(source)
}

/// The JSON Schema of the configuration file, for editors.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap_or_default()
}
