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
/// Fix the CPU thread count candle's matrix products ask for, once per process.
///
/// candle 0.11 looks the count up on every CPU matmul and, unless `RAYON_NUM_THREADS` is set,
/// counts the physical cores by reading and parsing `/proc/cpuinfo` each time: tens of
/// thousands of reads per tuning run, about a tenth of a small model's training step. Setting
/// the variable to that same count once keeps candle's choice and drops the reads. A value the
/// user set is left alone.
fn pin_candle_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = num_cpus::get_physical().max(1);
        // SAFETY: called first thing in `main`, before this process starts any thread, so no
        // other thread can be reading the environment.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
}

pub fn main() -> std::process::ExitCode {
    pin_candle_threads();
    let app = match parse_args(std::env::args_os()) {
        Ok(app) => app,
        Err(e) => e.exit(),
    };
    if app.global.verify {
        // SAFETY: still before this process starts any thread (plugins read it when they
        // load weights).
        unsafe { std::env::set_var("ADT_VERIFY", "1") };
    }
    progress::init_tracing(app.global.verbose, app.global.quiet);
    match cmd::dispatch(app) {
        Ok(()) => std::process::ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(exit::code_for(&e))
        }
    }
}
