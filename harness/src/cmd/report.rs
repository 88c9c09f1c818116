//! `adt-bench report show|compare|snapshot`: read the reports `run` writes.

use std::fmt::Write as _;

use anyhow::Context;

use adt_reports::metrics::{self, Change};

use crate::cli::{GlobalOpts, ReportCmd};
use crate::exit::Regression;

fn ci_config(p: Option<&std::path::Path>) -> anyhow::Result<adt_reports::CiConfig> {
    Ok(match p {
        Some(p) => adt_reports::CiConfig::read(p)?,
        None => adt_reports::CiConfig::default(),
    })
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "missing".into(), |v| format!("{v}"))
}

pub fn run(_g: &GlobalOpts, c: ReportCmd) -> anyhow::Result<()> {
    match c {
        ReportCmd::Show { dir } => {
            let md = dir.join("report.md");
            if md.exists() {
                print!(
                    "{}",
                    std::fs::read_to_string(&md)
                        .with_context(|| format!("cannot read {}", md.display()))?
                );
                return Ok(());
            }
            let rows = metrics::read(&dir)?;
            println!("| row | value | n |\n|---|---|---|");
            for r in rows {
                println!("| {} | {} | {} |", r.key(), r.value, r.n);
            }
            Ok(())
        }
        ReportCmd::Snapshot { dir, config } => {
            let cfg = ci_config(config.as_deref())?;
            print!("{}", adt_reports::snapshot(&dir, &cfg)?);
            Ok(())
        }
        ReportCmd::Compare { a, b, tol, config } => {
            if !(tol >= 0.0 && tol.is_finite()) {
                anyhow::bail!("--tol must be a finite number ≥ 0, not {tol}");
            }
            let cfg = ci_config(config.as_deref())?;
            let ra = metrics::read(&a)?;
            let rb = metrics::read(&b)?;
            let changes = metrics::compare_with(&ra, &rb, &cfg, tol);
            let mut out = String::new();
            for Change {
                key,
                a: va,
                b: vb,
                regression,
            } in &changes
            {
                writeln!(
                    out,
                    "{} {key}: {} → {}",
                    if *regression { "REGRESSION" } else { "changed" },
                    fmt(*va),
                    fmt(*vb)
                )?;
            }
            print!("{out}");
            let n = changes.iter().filter(|c| c.regression).count();
            let rules = match &config {
                Some(p) => format!("gates and tolerances of {}, else {tol}", p.display()),
                None => format!("tolerance {tol}"),
            };
            println!(
                "{} rows in A, {} in B; {} changed, {n} regressions ({rules})",
                ra.len(),
                rb.len(),
                changes.len()
            );
            if n > 0 {
                return Err(Regression(format!(
                    "{n} regression(s) of {} against {}",
                    b.display(),
                    a.display()
                ))
                .into());
            }
            Ok(())
        }
    }
}
