//! `smtp-bench`: the load generator. Not built yet: it is its own issue.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("smtp-bench: not implemented yet (see the project's open issues)");
    ExitCode::from(2)
}
