//! One module per subcommand.

pub mod bench;
pub mod device_check;
pub mod fid;
pub mod plugins;
pub mod pretrain;
pub mod probe;
pub mod report;
pub mod run;
pub mod sample;
pub mod score;
pub mod train_encoder;
pub mod tune;

use crate::cli::{App, Command};

/// Run a parsed command line.
pub fn dispatch(app: App) -> anyhow::Result<()> {
    let g = &app.global;
    match app.cmd {
        Command::Plugins(c) => plugins::run(g, c),
        Command::Sample(a) => sample::run(g, &a),
        Command::Pretrain(a) => pretrain::run(g, &a),
        Command::Run(a) => run::run(g, &a),
        Command::Report(c) => report::run(g, c),
        Command::Fid(a) => fid::run(g, &a),
        Command::Score(a) => score::run(g, &a),
        Command::TrainEncoder(a) => train_encoder::run(g, &a),
        Command::Tune(a) => tune::run(g, &a),
        Command::Probe(a) => probe::run(g, &a),
        Command::Bench(crate::cli::BenchCmd::Inception(a)) => bench::inception(g, &a),
        Command::Bench(crate::cli::BenchCmd::TuneMemory(a)) => bench::tune_memory(g, &a),
        Command::Bench(crate::cli::BenchCmd::Device(a)) => device_check::run(g, &a),
        Command::Bench(crate::cli::BenchCmd::Clip(a)) => bench::clip(g, &a),
        Command::Bench(crate::cli::BenchCmd::Tiny(a)) => bench::tiny::run(g, &a),
    }
}
