//! `outbound`: the thread-per-core delivery relay.
//!
//! Not built yet: the relay is its own issue (it reads the queue tables that the
//! MySQL/SQLite stores will hold). Until then this binary refuses to run, so nobody
//! mistakes it for a working relay.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("outbound: the relay is not implemented yet (see the project's open issues)");
    ExitCode::from(2)
}
