//! Helpers for tests that run the `brigade` binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn brigade() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_brigade"));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    c
}

pub fn run(args: &[&str]) -> Output {
    brigade().args(args).output().expect("run brigade")
}

/// A fresh directory for one test.
pub fn tmp(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("brigade-test-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn losses(path: &PathBuf) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether a process with this pid still exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.split_whitespace().nth(2).is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}
