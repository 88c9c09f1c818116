//! `adt-bench pretrain`: plain diffusion training through the plugin boundary.

use anyhow::Context;

use crate::cli::{GlobalOpts, PretrainArgs};

pub fn run(g: &GlobalOpts, a: &PretrainArgs) -> anyhow::Result<()> {
    let reg = crate::registry::load(g)?;
    let mut opts = a.model.clone();
    // Pretraining starts from a random initialisation unless told otherwise.
    if opts.weights.is_none() {
        opts.weights = Some("random".into());
    }
    let spec = opts.spec()?;
    let mut config = spec.plugin_config();
    for o in &a.plugin_options {
        let (k, v) = o
            .split_once('=')
            .with_context(|| format!("--plugin-option {o:?}: expected KEY=VALUE"))?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::from(v));
        config[k.trim()] = v;
    }
    let info = reg.find(adt_plugin_host::Kind::Model, &spec.plugin)?;
    let mut model = adt_plugin_host::Model::create(info, &config)
        .with_context(|| format!("failed to load model `{}`", spec.plugin))?;
    let desc = model.describe()?;
    let spec =
        adt_datasets::DataSpec::parse(&a.data).context("failed to open the training data")?;
    let size = desc.image_shape[1] as u32;
    let mut data =
        adt_tuner::data::Batcher::new(&spec, size).context("failed to open the training data")?;
    let cfg = adt_tuner::pretrain::PretrainConfig {
        iters: a.iters,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        ema_decay: a.ema,
        ..Default::default()
    };
    if let Some(d) = a.ema
        && !(0.0..1.0).contains(&d)
    {
        anyhow::bail!("--ema must be in [0, 1), got {d}");
    }
    eprintln!(
        "pretraining `{}` ({} parameters) on {spec} for {} steps of {} — output in {}",
        desc.name,
        desc.parameters,
        cfg.iters,
        cfg.batch,
        a.out.display()
    );
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("failed to create {}", a.out.display()))?;
    std::fs::write(
        a.out.join("pretrain.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "model": desc.name, "data": spec.to_string(), "config": cfg, "weights_init": opts.weights, "init_seed": opts.init_seed, "plugin_config": config,
        }))?,
    )?;
    let mut bar = crate::progress::Bar::new(cfg.iters, "pretrain", g.quiet);
    let rows = adt_tuner::pretrain::pretrain(
        &mut model,
        &mut data,
        &cfg,
        &a.out,
        a.stop_after,
        a.reset_optimizer,
        &mut bar,
    )?;
    bar.finish();
    if let Some(last) = rows.last() {
        eprintln!(
            "finished step {} (loss {:.4}); {} bad records skipped",
            last.iter, last.loss, data.skipped
        );
    }
    let done = std::fs::read_to_string(a.out.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["iter"].as_u64())
        .unwrap_or(0);
    if done < cfg.iters {
        eprintln!(
            "stopped at step {done} of {}; rerun the same command to resume",
            cfg.iters
        );
        return Ok(());
    }
    if let Some(export) = &a.export {
        let (src, what) = if cfg.ema_decay.is_some() {
            (
                a.out.join("checkpoint/ema.safetensors"),
                "moving average of the weights",
            )
        } else {
            (a.out.join("checkpoint/model.safetensors"), "weights")
        };
        export_half(&src, export)
            .with_context(|| format!("failed to export {}", export.display()))?;
        eprintln!("wrote the f16 {what} to {}", export.display());
    }
    Ok(())
}

/// Copy a safetensors file converting every F32 tensor to F16 (metadata kept).
pub fn export_half(src: &std::path::Path, dst: &std::path::Path) -> anyhow::Result<()> {
    use safetensors::{Dtype, SafeTensors, tensor::TensorView};
    let bytes = std::fs::read(src).with_context(|| format!("failed to read {}", src.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)?;
    let st = SafeTensors::deserialize(&bytes)?;
    let mut converted: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() == Dtype::F32 {
            let data: Vec<u8> = view
                .data()
                .chunks_exact(4)
                .flat_map(|c| {
                    half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
                })
                .collect();
            converted.push((name, Dtype::F16, view.shape().to_vec(), data));
        } else {
            converted.push((
                name,
                view.dtype(),
                view.shape().to_vec(),
                view.data().to_vec(),
            ));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = converted
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let out = safetensors::serialize(views, meta.metadata().clone())?;
    let out = adt_plugin_tiny::canonical_safetensors(out).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = dst.with_extension("tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(&tmp, dst)?;
    Ok(())
}
