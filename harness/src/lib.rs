//! `adt-bench`: the command-line harness. The only crate that knows about the terminal (clap,
//! indicatif, exit codes); it resolves user input into plans and calls the library crates.

pub mod cli;
pub mod cmd;
pub mod exit;
pub mod progress;
pub mod registry;
pub mod sampling;

use clap::Parser;

/// Entry point used by `main.rs`.
pub fn main() -> std::process::ExitCode {
    let app = cli::App::parse();
    progress::init_tracing(app.global.verbose, app.global.quiet);
    match cmd::dispatch(app) {
        Ok(()) => std::process::ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(exit::code_for(&e))
        }
    }
}
