//! The benchmark engine, below the commands: typed settings ([`settings`]), the run plan
//! ([`plan`]), the evaluation inputs ([`inputs`]), and the stages `run` drives — tune and
//! sample ([`cells`]), then evaluate and report. The commands parse their flags into these
//! types, call the stages and print; none calls another command.

pub mod backbone;
pub mod cells;
pub mod evaluate;
pub mod inputs;
pub mod plan;
pub mod scores;
pub mod settings;
