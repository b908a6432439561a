//! Questions about a topology's text that planning asks before the topology is validated, and
//! rewrites of it (elastic restarts): answered here, so that nothing outside the loader parses
//! topology TOML.

use crate::error::ConfigError;
use toml::{Table, Value};

/// Whether the user chose `section.key`: written in the topology `text`, or set by one of
/// `overrides` (`section.key=value`).
pub fn key_given(text: &str, overrides: &[String], section: &str, key: &str) -> bool {
    let written = text
        .parse::<Table>()
        .ok()
        .and_then(|t| t.get(section)?.as_table()?.get(key).cloned())
        .is_some();
    let path = format!("{section}.{key}");
    written || overrides.iter().any(|o| o.starts_with(&path))
}

/// The topology `text` (read from `file`) with only the `[[hosts]]` named in `keep`.
pub fn keep_hosts(file: &str, text: &str, keep: &[String]) -> Result<String, ConfigError> {
    let mut table: Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError::invalid(file, "hosts", e.to_string(), "Plan the job again.")
    })?;
    if let Some(Value::Array(hosts)) = table.get_mut("hosts") {
        hosts.retain(|h| {
            h.get("name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| keep.iter().any(|k| k == n))
        });
    }
    toml::to_string(&table)
        .map_err(|e| ConfigError::invalid(file, "hosts", e.to_string(), "Plan the job again."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_given_by_text_or_override() {
        let text = "[train]\nrecompute = true\n";
        assert!(key_given(text, &[], "train", "recompute"));
        assert!(!key_given(text, &[], "train", "batch_weight_grads"));
        let set = ["train.batch_weight_grads=false".to_string()];
        assert!(key_given(text, &set, "train", "batch_weight_grads"));
        assert!(!key_given("not toml [", &[], "train", "recompute"));
    }

    #[test]
    fn hosts_not_kept_are_dropped() {
        let text = "[[hosts]]\nname = \"a\"\n[[hosts]]\nname = \"b\"\n";
        let kept = keep_hosts("t.toml", text, &["b".to_string()]).unwrap();
        assert!(kept.contains("\"b\"") && !kept.contains("\"a\""), "{kept}");
        assert!(keep_hosts("t.toml", "[", &[]).is_err());
    }
}
