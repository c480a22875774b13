//! Checked value types of the configuration: ids, durations (`300ms`, `30d`), byte sizes
//! (`64KiB`), percentages (`20%`), and [`Located`] values that remember where they were written.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value with the line and column it was written at (1-based; 0 when unknown).
#[derive(Clone, Debug)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Line in the file.
    pub line: u64,
    /// Column in the line.
    pub column: u64,
}

impl<T> Located<T> {
    /// A value written nowhere (defaults).
    pub fn unlocated(value: T) -> Self {
        Self {
            value,
            line: 0,
            column: 0,
        }
    }
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Default> Default for Located<T> {
    fn default() -> Self {
        Self::unlocated(T::default())
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        Ok(Self {
            value: spanned.value,
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
        })
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// Implements serde and schemars for a type parsed from a string with `FromStr`.
macro_rules! string_type {
    ($ty:ty, $name:literal, $pattern:literal, $description:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = StringOrNumber::deserialize(deserializer)?.0;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "pattern": $pattern, "description": $description })
            }
        }
    };
}

/// Accepts a YAML string or a bare number (`weight: 3` / `size: 1024`) as text.
struct StringOrNumber(String);

impl<'de> Deserialize<'de> for StringOrNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = StringOrNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_owned()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

// === impl Id ===

/// An identifier of a route, backend or listener: lower-case letters, digits, `-` and `_`,
/// starting with a letter or digit, at most 64 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Id {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let valid_start = s
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let valid_rest = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if s.is_empty() || s.len() > 64 || !valid_start || !valid_rest {
            return Err(format!(
                "invalid id {s:?}: use 1 to 64 lower-case letters, digits, '-' or '_', starting with a letter or digit"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

string_type!(
    Id,
    "Id",
    "^[a-z0-9][a-z0-9_-]{0,63}$",
    "lower-case letters, digits, '-' and '_'"
);

// === impl ConfigDuration ===

/// A duration written with a unit: `250ms`, `2s`, `5m`, `1h`, `30d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

/// Parses a whole number followed by a unit from `units` (name, multiplier), e.g. `30d`.
fn number_with_unit(
    text: &str,
    units: &[(&str, u64)],
    invalid: impl Fn() -> String,
) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let (_, scale) = units
        .iter()
        .find(|(name, _)| *name == unit.trim())
        .ok_or_else(&invalid)?;
    n.checked_mul(*scale).ok_or_else(invalid)
}

impl std::str::FromStr for ConfigDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        const UNITS: [(&str, u64); 5] = [
            ("ms", 1),
            ("s", 1_000),
            ("m", 60_000),
            ("h", 3_600_000),
            ("d", 86_400_000),
        ];
        let millis = number_with_unit(s, &UNITS, || {
            format!(
                "invalid duration {s:?}: write a whole number and a unit (ms, s, m, h, d), e.g. \"300ms\" or \"30d\""
            )
        })?;
        Ok(Self(Duration::from_millis(millis)))
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms != 0 && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

string_type!(
    ConfigDuration,
    "Duration",
    "^[0-9]+(ms|s|m|h|d)$",
    "a whole number and a unit: ms, s, m, h, d"
);

// === impl ByteSize ===

/// A size in bytes: `1024`, `64KiB`, `10MiB`, `1GiB` (also `KB`/`MB`/`GB`, powers of 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        const UNITS: [(&str, u64); 8] = [
            ("", 1),
            ("B", 1),
            ("KiB", 1 << 10),
            ("MiB", 1 << 20),
            ("GiB", 1 << 30),
            ("KB", 1_000),
            ("MB", 1_000_000),
            ("GB", 1_000_000_000),
        ];
        let bytes = number_with_unit(s, &UNITS, || {
            format!(
                "invalid size {s:?}: write a whole number with an optional unit (B, KiB, MiB, GiB, KB, MB, GB), e.g. \"64KiB\""
            )
        })?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 != 0 && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

string_type!(
    ByteSize,
    "ByteSize",
    "^[0-9]+ ?(B|KiB|MiB|GiB|KB|MB|GB)?$",
    "a whole number of bytes with an optional unit"
);

// === impl Percent ===

/// A percentage written with a `%`: `20%`, `99.9%`; stored as a ratio (0.2, 0.999).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percent(pub f64);

impl std::str::FromStr for Percent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "invalid percentage {s:?}: write a number from 0 to 100 followed by '%', e.g. \"20%\""
            )
        };
        let number = s.strip_suffix('%').ok_or_else(invalid)?;
        let value: f64 = number.trim().parse().map_err(|_| invalid())?;
        if !(0.0..=100.0).contains(&value) {
            return Err(invalid());
        }
        // 99.9 / 100 is 0.9990000000000001 in binary; keep the decimal the user wrote.
        Ok(Self((value / 100.0 * 1e12).round() / 1e12))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", (self.0 * 100.0 * 1e6).round() / 1e6)
    }
}

string_type!(
    Percent,
    "Percent",
    "^[0-9]+(\\.[0-9]+)?%$",
    "a percentage, e.g. \"20%\""
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_with_units() {
        for (text, ms) in [
            ("300ms", 300),
            ("2s", 2000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("30d", 2_592_000_000),
        ] {
            let d: ConfigDuration = text.parse().unwrap();
            assert_eq!(d.0.as_millis(), ms);
            assert_eq!(d.to_string(), text);
        }
        for bad in ["", "5", "1.5s", "5 sec", "-1s", "ms"] {
            assert!(bad.parse::<ConfigDuration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_and_percentages_parse() {
        assert_eq!("64KiB".parse::<ByteSize>().unwrap().0, 65_536);
        assert_eq!("10MB".parse::<ByteSize>().unwrap().0, 10_000_000);
        assert_eq!("1024".parse::<ByteSize>().unwrap().0, 1024);
        assert!("10 parsecs".parse::<ByteSize>().is_err());
        assert_eq!("20%".parse::<Percent>().unwrap().0, 0.2);
        assert_eq!("99.9%".parse::<Percent>().unwrap().0, 0.999);
        assert_eq!("99.95%".parse::<Percent>().unwrap().0, 0.9995);
        assert!("120%".parse::<Percent>().is_err());
        assert!("0.2".parse::<Percent>().is_err());
    }

    #[test]
    fn ids_are_checked() {
        assert!("orders-v2".parse::<Id>().is_ok());
        for bad in ["", "Orders", "-x", "a b", &"x".repeat(65)] {
            assert!(bad.parse::<Id>().is_err(), "{bad}");
        }
    }
}
