//! `adt-bench sample`.
use crate::cli::{GlobalOpts, SampleArgs};

pub fn run(_g: &GlobalOpts, _a: &SampleArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
