//! `adt-bench run`.
use crate::cli::{GlobalOpts, RunArgs};

pub fn run(_g: &GlobalOpts, _a: &RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
