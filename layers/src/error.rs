//! Errors a user can cause with a topology or profile file. Each renders as one paragraph that
//! names the file, the key and what to do about it.

use std::fmt;

/// A topology or profile that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "{file}: cannot read the file: {source}. Check the path (it is relative to the current directory)."
    )]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or JSON.
    #[error("{file}:{line}:{column}: syntax error: {message}. Fix the syntax at that position.")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A key has a wrong type or an impossible value, or is unknown.
    #[error("{file}: {key}: {message}. {fix}")]
    Invalid {
        file: String,
        key: String,
        message: String,
        fix: String,
    },
}

impl ConfigError {
    /// Builds an [`ConfigError::Invalid`].
    pub fn invalid(
        file: &str,
        key: impl Into<String>,
        message: impl fmt::Display,
        fix: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            file: file.to_string(),
            key: key.into(),
            message: message.to_string(),
            fix: fix.into(),
        }
    }

    /// The key and what is wrong with it, without the file and the fix (for one-line summaries).
    pub fn reason(&self) -> String {
        match self {
            ConfigError::Invalid { key, message, .. } => format!("{key}: {message}"),
            other => other.to_string(),
        }
    }

    /// The key the error is about, if any (used by tests and by `--json` error output).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Converts a byte offset in `text` to a 1-based (line, column).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// " Did you mean `x`?" when a known name is close to `given`, else "".
pub fn did_you_mean(given: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(given, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!(" Did you mean `{k}`?"))
        .unwrap_or_default()
}
