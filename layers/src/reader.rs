//! A typed, key-checking view of one TOML table: every getter knows the full key path, so a
//! wrong type or an unknown key becomes a [`ConfigError`] naming `section.key`.

use crate::error::{ConfigError, did_you_mean};
use toml::{Table, Value};

/// The largest dimension, count or size a topology may give (2^24): large enough for any real
/// model, small enough that products of a few of them cannot overflow.
pub const MAX_DIM: u64 = 1 << 24;

pub struct Section<'a> {
    pub file: &'a str,
    pub path: String,
    pub table: &'a Table,
}

impl<'a> Section<'a> {
    /// Opens `table` at `path`, refusing keys outside `known`.
    pub fn new(
        file: &'a str,
        path: impl Into<String>,
        table: &'a Table,
        known: &[&str],
    ) -> Result<Self, ConfigError> {
        let s = Section {
            file,
            path: path.into(),
            table,
        };
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                return Err(ConfigError::invalid(
                    file,
                    s.key(key),
                    "unknown key",
                    format!(
                        "Remove it or use one of: {}.{}",
                        known.join(", "),
                        did_you_mean(key, known)
                    ),
                ));
            }
        }
        Ok(s)
    }

    pub fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn err(
        &self,
        key: &str,
        message: impl std::fmt::Display,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError::invalid(self.file, self.key(key), message, fix)
    }

    fn missing(&self, key: &str, what: &str) -> ConfigError {
        self.err(
            key,
            "missing",
            format!("Add `{key} = {what}` to [{}].", self.path),
        )
    }

    fn wrong_type(&self, key: &str, value: &Value, want: &str) -> ConfigError {
        self.err(
            key,
            format!("expected {want}, found {} `{value}`", value.type_str()),
            format!("Write it as {want}."),
        )
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.table.get(key)
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) if *i >= 0 => Ok(Some(*i as u64)),
            Some(Value::Integer(i)) => Err(self.err(
                key,
                format!("must not be negative, found {i}"),
                "Use a value of 0 or more.",
            )),
            Some(v) => Err(self.wrong_type(key, v, "a whole number")),
        }
    }

    pub fn u64_or(&self, key: &str, default: u64) -> Result<u64, ConfigError> {
        Ok(self.opt_u64(key)?.unwrap_or(default))
    }

    pub fn req_u64(&self, key: &str, example: &str) -> Result<u64, ConfigError> {
        self.opt_u64(key)?.ok_or_else(|| self.missing(key, example))
    }

    /// A positive count up to [`MAX_DIM`] (zero is refused with `why`).
    pub fn positive(&self, key: &str, value: u64, why: &str) -> Result<usize, ConfigError> {
        if value == 0 {
            Err(self.err(key, "must be at least 1, found 0", why))
        } else if value > MAX_DIM {
            Err(self.err(
                key,
                format!("{value} is larger than brigade supports ({MAX_DIM})"),
                "Use a smaller value.",
            ))
        } else {
            Ok(value as usize)
        }
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Float(f)) => Ok(Some(*f)),
            Some(Value::Integer(i)) => Ok(Some(*i as f64)),
            Some(v) => Err(self.wrong_type(key, v, "a number")),
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong_type(key, v, "true or false")),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(key, v, "a quoted string")),
        }
    }

    pub fn req_str(&self, key: &str, example: &str) -> Result<&'a str, ConfigError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key, example))
    }

    /// A string that must be one of `choices`.
    pub fn choice(
        &self,
        key: &str,
        default: &'a str,
        choices: &[&str],
    ) -> Result<&'a str, ConfigError> {
        let v = self.opt_str(key)?.unwrap_or(default);
        if choices.contains(&v) {
            Ok(v)
        } else {
            Err(self.err(
                key,
                format!("unknown value \"{v}\""),
                format!(
                    "Use one of: {}.{}",
                    choices
                        .iter()
                        .map(|c| format!("\"{c}\""))
                        .collect::<Vec<_>>()
                        .join(", "),
                    did_you_mean(v, choices)
                ),
            ))
        }
    }

    pub fn opt_table(&self, key: &str) -> Result<Option<&'a Table>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(t)),
            Some(v) => Err(self.wrong_type(key, v, &format!("a table `[{}]`", self.key(key)))),
        }
    }

    pub fn opt_array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong_type(key, v, "an array `[..]`")),
        }
    }

    /// An array of positive whole numbers.
    pub fn usize_list(&self, key: &str) -> Result<Option<Vec<usize>>, ConfigError> {
        self.int_list(key, 1, "positive whole numbers", "[64]")
    }

    /// An array of indices (whole numbers from 0), e.g. chunk ids.
    pub fn index_list(&self, key: &str) -> Result<Option<Vec<usize>>, ConfigError> {
        self.int_list(key, 0, "indices (whole numbers from 0)", "[0, 1]")
    }

    /// An array of whole numbers from `min`; `what` and `example` word the error.
    fn int_list(
        &self,
        key: &str,
        min: i64,
        what: &str,
        example: &str,
    ) -> Result<Option<Vec<usize>>, ConfigError> {
        let Some(items) = self.opt_array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| match v {
                Value::Integer(i) if *i >= min && *i as u64 <= MAX_DIM => Ok(*i as usize),
                _ => Err(self.err(
                    key,
                    format!("expected {what}, found `{v}`"),
                    format!("Write it like `{key} = {example}`."),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A byte size: a whole number of bytes or a string such as "16GiB", "512MB".
    pub fn opt_bytes(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) if *i > 0 => Ok(Some(*i as u64)),
            Some(Value::String(s)) => parse_bytes(s).map(Some).ok_or_else(|| {
                self.err(
                    key,
                    format!("cannot read \"{s}\" as a size"),
                    "Write a number of bytes or a size such as \"16GiB\", \"512MiB\", \"8GB\".",
                )
            }),
            Some(v) => Err(self.wrong_type(key, v, "a size such as \"16GiB\"")),
        }
    }
}

/// Parses "16GiB", "512 MB", "1.5GiB", "4096" into bytes.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        _ => return None,
    };
    let bytes = num * mult;
    (bytes >= 1.0 && bytes.is_finite()).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_bytes("16GiB"), Some(16 << 30));
        assert_eq!(super::parse_bytes("512 MB"), Some(512_000_000));
        assert_eq!(super::parse_bytes("4096"), Some(4096));
        assert_eq!(super::parse_bytes("12 parsecs"), None);
    }
}
