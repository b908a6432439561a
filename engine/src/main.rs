//! The `brigade` command line.

use brigade_engine::cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
