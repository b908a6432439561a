//! Finding a dataset's files (a file, a directory of part files, or a glob) and opening their
//! footers, with errors that name the path: the parquet crate's own messages ("Corrupt
//! footer", a bare io error) do not say which file.

use brigade_partitioner::ConfigError;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use std::fs::File;
use std::path::{Path, PathBuf};

/// One Parquet file with its footer read.
#[derive(Clone)]
pub struct ParquetFile {
    pub path: PathBuf,
    pub meta: ArrowReaderMetadata,
}

impl ParquetFile {
    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    pub fn open(&self) -> std::io::Result<File> {
        File::open(&self.path)
    }
}

/// The files `path` names, in name order: the file itself, the data files of a directory
/// (Spark's `part-*` files; names starting with `_` or `.` — `_SUCCESS`, `.crc` — are skipped),
/// or the files matching a glob in the last component (`*`, `?`).
pub fn list(key: &str, topo_file: &str, path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let shown = path.display().to_string();
    let bad = |message: String, fix: &str| ConfigError::invalid(&shown, key, message, fix);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut files: Vec<PathBuf> = if name.contains(['*', '?']) {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        entries(&dir, &shown, key)?
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| glob_match(&name, &n.to_string_lossy()))
            })
            .collect()
    } else if path.is_dir() {
        entries(path, &shown, key)?
            .into_iter()
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    !n.starts_with('_') && !n.starts_with('.') && !n.ends_with(".crc")
                })
            })
            .collect()
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        return Err(bad(
            "does not exist".into(),
            &format!(
                "Check the path in {topo_file} (a relative path is taken from the topology file's directory)."
            ),
        ));
    };
    files.sort();
    if files.is_empty() {
        return Err(bad(
            "names no files".into(),
            "Point it at a Parquet file, a directory of part files, or a glob such as \"data/part-*.parquet\".",
        ));
    }
    Ok(files)
}

fn entries(dir: &Path, shown: &str, key: &str) -> Result<Vec<PathBuf>, ConfigError> {
    let read = std::fs::read_dir(dir).map_err(|e| {
        ConfigError::invalid(
            shown,
            key,
            format!("cannot list {}: {e}", dir.display()),
            "Check the directory exists and is readable.",
        )
    })?;
    Ok(read
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect())
}

/// Reads `path`'s footer.
pub fn open(key: &str, path: PathBuf) -> Result<ParquetFile, ConfigError> {
    let shown = path.display().to_string();
    let file = File::open(&path).map_err(|e| {
        ConfigError::invalid(
            &shown,
            key,
            format!("cannot open the file: {e}"),
            "Check the path and its permissions.",
        )
    })?;
    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| {
        ConfigError::invalid(
            &shown,
            key,
            format!("is not a readable Parquet file ({e})"),
            "Point the key at Parquet data (a truncated or corrupt file must be written again).",
        )
    })?;
    Ok(ParquetFile { path, meta })
}

/// `*` matches any run of characters, `?` one character.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_like_a_shell() {
        let table = [
            ("part-*.parquet", "part-00000.parquet", true),
            ("part-*.parquet", "part-00000.parquet.crc", false),
            ("*", "x", true),
            ("p?rt*", "part-1", true),
            ("p?rt*", "prt", false),
            ("*.parquet", "_SUCCESS", false),
        ];
        for (p, n, want) in table {
            assert_eq!(glob_match(p, n), want, "{p} vs {n}");
        }
    }
}
