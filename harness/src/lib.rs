//! `adt-bench`: the command-line harness. The only crate that knows about the terminal (clap,
//! indicatif, exit codes); it resolves user input into plans and calls the library crates.

pub mod cli;
pub mod cmd;
pub mod device;
pub mod engine;
pub mod exit;
pub mod progress;
pub mod registry;
pub mod sampling;

use clap::{CommandFactory, FromArgMatches};

/// Parse the command line; `run` learns which of its options were given explicitly (its
/// `--config` file fills in only the others).
pub fn parse_args<I, T>(args: I) -> Result<cli::App, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = cli::App::command().try_get_matches_from(args)?;
    let mut app = cli::App::from_arg_matches(&matches)?;
    if let (cli::Command::Run(a), Some(("run", sub))) = (&mut app.cmd, matches.subcommand()) {
        a.explicit = sub
            .ids()
            .filter(|id| {
                matches!(
                    sub.value_source(id.as_str()),
                    Some(clap::parser::ValueSource::CommandLine)
                        | Some(clap::parser::ValueSource::EnvVariable)
                )
            })
            .map(|id| id.as_str().to_string())
            .collect();
    }
    Ok(app)
}

/// Entry point used by `main.rs`.
pub fn main() -> std::process::ExitCode {
    let app = match parse_args(std::env::args_os()) {
        Ok(app) => app,
        Err(e) => e.exit(),
    };
    progress::init_tracing(app.global.verbose, app.global.quiet);
    match cmd::dispatch(app) {
        Ok(()) => std::process::ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(exit::code_for(&e))
        }
    }
}
