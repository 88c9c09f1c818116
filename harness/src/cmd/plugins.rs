//! `adt-bench plugins list | check`.

use anyhow::Context;

use crate::cli::{GlobalOpts, PluginsCmd};

pub fn run(g: &GlobalOpts, cmd: PluginsCmd) -> anyhow::Result<()> {
    match cmd {
        PluginsCmd::List { json } => list(g, json),
        PluginsCmd::Check { path } => {
            let info = adt_plugin_host::check_library(&path)
                .with_context(|| format!("failed to check {}", path.display()))?;
            println!(
                "ok: {} plugin `{}` {} (ABI {}, features {})",
                info.kind,
                info.name,
                info.version,
                info.abi,
                info.features.join(",")
            );
            if info.kind == adt_plugin_host::Kind::Sampler {
                for s in adt_plugin_host::Samplers::new(&info)?.list()? {
                    println!("  sampler {}", s.name);
                }
            }
            Ok(())
        }
    }
}

fn list(g: &GlobalOpts, json: bool) -> anyhow::Result<()> {
    let reg = crate::registry::load(&g.plugin_path)?;
    let mut rows = Vec::new();
    for p in reg.plugins() {
        let samplers = if p.kind == adt_plugin_host::Kind::Sampler {
            adt_plugin_host::Samplers::new(p)?.list()?
        } else {
            Vec::new()
        };
        rows.push((p, samplers));
    }
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(p, s)| serde_json::json!({ "plugin": p, "samplers": s }))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "format_version": 1, "plugins": v, "rejected": reg.rejected.iter().map(|(p, e)| serde_json::json!({"path": p, "error": e})).collect::<Vec<_>>() })
            )?
        );
        return Ok(());
    }
    println!(
        "{:<18} {:<8} {:<8} {:<5} {:<10} SOURCE",
        "NAME", "KIND", "VERSION", "ABI", "FEATURES"
    );
    for (p, samplers) in &rows {
        println!(
            "{:<18} {:<8} {:<8} {:<5} {:<10} {}",
            p.name,
            p.kind.to_string(),
            p.version,
            p.abi,
            p.features.join(","),
            p.source
        );
        for s in samplers {
            println!(
                "  {:<16} sampler  order {}  {}{} evals/step  {}  ({})",
                s.name,
                s.order,
                if s.stochastic { "stochastic, " } else { "" },
                s.evals_per_step,
                s.schedules.join("/"),
                s.mirrors
            );
        }
    }
    for (path, err) in &reg.rejected {
        eprintln!("refused {}: {err}", path.display());
    }
    Ok(())
}
