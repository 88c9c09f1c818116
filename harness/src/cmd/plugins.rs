//! `adt-bench plugins list | check`.

use anyhow::Context;

use crate::cli::{GlobalOpts, PluginsCmd};

pub fn run(g: &GlobalOpts, cmd: PluginsCmd) -> anyhow::Result<()> {
    match cmd {
        PluginsCmd::List { json } => list(g, json),
        PluginsCmd::Check {
            path,
            conformance: true,
            plugin_config,
            batch,
            json,
        } => conformance(g, &path, &plugin_config, batch, json),
        PluginsCmd::Check { path, .. } => {
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

fn conformance(
    g: &GlobalOpts,
    path: &std::path::Path,
    config: &str,
    batch: usize,
    json: bool,
) -> anyhow::Result<()> {
    use adt_plugin_host::conformance::{self, Outcome};
    let config: serde_json::Value = serde_json::from_str(config)
        .with_context(|| format!("--plugin-config is not JSON: {config}"))?;
    if batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    // A library path, or the name of a plugin on the search path (built-ins included).
    let reg;
    let loaded;
    let info = if path.is_file() {
        loaded = adt_plugin_host::check_library(path)
            .with_context(|| format!("failed to check {}", path.display()))?;
        &loaded
    } else {
        reg = crate::registry::load(g)?;
        reg.find(adt_plugin_host::Kind::Model, &path.to_string_lossy())
            .with_context(|| format!("{} is neither a file nor a model plugin", path.display()))?
    };
    if info.kind != adt_plugin_host::Kind::Model {
        anyhow::bail!(
            "`{}` is a {} plugin; the conformance checks are for model plugins",
            info.name,
            info.kind
        );
    }
    let opts = conformance::Options {
        config,
        batch,
        ..Default::default()
    };
    if !json {
        eprintln!(
            "checking `{}` {} (ABI {}) created with {}",
            info.name, info.version, info.abi, opts.config
        );
    }
    let checks = conformance::run(info, &opts);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "format_version": 1,
                "plugin": info.name,
                "version": info.version,
                "config": opts.config,
                "checks": checks,
            }))?
        );
    } else {
        print!("{}", conformance::table(&checks));
    }
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .map(|c| c.name)
        .collect();
    if !failed.is_empty() {
        return Err(crate::exit::Nonconforming(format!(
            "`{}` failed {} conformance check(s): {}",
            info.name,
            failed.len(),
            failed.join(", ")
        ))
        .into());
    }
    if !json {
        println!("all checks passed");
    }
    Ok(())
}

fn list(g: &GlobalOpts, json: bool) -> anyhow::Result<()> {
    let reg = crate::registry::load(g)?;
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
                &serde_json::json!({ "format_version": 1, "plugins": v, "rejected": reg.rejected().iter().map(|(p, e)| serde_json::json!({"path": p, "error": e})).collect::<Vec<_>>() })
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
    for (path, err) in &reg.rejected() {
        eprintln!("refused {}: {err}", path.display());
    }
    Ok(())
}
