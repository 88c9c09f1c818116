//! Plain diffusion training through the plugin boundary: `diffusion_loss` + AdamW `step`,
//! with warm-up + cosine learning rate, caption dropout (for classifier-free guidance),
//! gradient clipping, a non-finite guard, atomic checkpoints and resume.
//!
//! This is how the built-in `tiny` model's committed weights were made
//! (`adt-bench pretrain --model tiny --data builtin:shapes`), and it works for any model plugin.

use std::io::Write;
use std::path::Path;

use adt_plugin_api::OptimConfig;
use adt_plugin_host::Model;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Batcher;
use crate::{Error, Progress, Result};

/// Settings of a pretraining run. Defaults are those used for the committed tiny weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// Optimizer steps.
    pub iters: u64,
    /// Examples per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: u64,
    /// Final learning rate as a fraction of the peak (cosine decay).
    pub final_lr_fraction: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    pub clip_grad_norm: f64,
    /// Probability of replacing a caption by the empty prompt (classifier-free guidance).
    pub caption_dropout: f64,
    /// Seed of the noise, timesteps and caption dropout.
    pub seed: u64,
    /// Write a checkpoint every this many steps.
    pub checkpoint_every: u64,
    /// Stop after this many non-finite steps in a row.
    pub max_non_finite: u32,
    /// Keep a moving average of the weights with this decay (the plugin writes it as
    /// `checkpoint/ema.safetensors`; `pretrain --export` exports it instead of the weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            iters: 2000,
            batch: 32,
            lr: 2e-3,
            warmup: 100,
            final_lr_fraction: 0.05,
            weight_decay: 0.0,
            clip_grad_norm: 1.0,
            caption_dropout: 0.1,
            seed: 0,
            checkpoint_every: 250,
            max_non_finite: 5,
            ema_decay: None,
        }
    }
}

impl PretrainConfig {
    /// Learning rate at step `i` (0-based).
    pub fn lr_at(&self, i: u64) -> f64 {
        if i < self.warmup {
            return self.lr * (i + 1) as f64 / self.warmup as f64;
        }
        let span = self.iters.saturating_sub(self.warmup).max(1) as f64;
        let p = ((i - self.warmup) as f64 / span).min(1.0);
        let floor = self.lr * self.final_lr_fraction;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
    }
}

/// One row of the training log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    /// Step (1-based).
    pub iter: u64,
    /// Diffusion loss of the batch.
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Whether the update was skipped (non-finite).
    pub skipped: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    iter: u64,
    config: PretrainConfig,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Run (or resume) pretraining. Writes `out/checkpoint/` (plugin state), `out/state.json`
/// and `out/log.csv`; returns the log of the steps run in this call. `stop_after` ends this
/// call (with a checkpoint) after that many steps; calling again resumes, and the result is
/// identical to an uninterrupted run.
pub fn pretrain(
    model: &mut Model,
    data: &mut Batcher,
    cfg: &PretrainConfig,
    out: &Path,
    stop_after: Option<u64>,
    reset_optimizer: bool,
    progress: &mut dyn Progress,
) -> Result<Vec<LogRow>> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let ckpt = out.join("checkpoint");
    let state_path = out.join("state.json");
    let log_path = out.join("log.csv");
    let mut start = 0;
    // The checkpoint folder holds its own state.json (written with it and swapped in with it);
    // runs made before that kept it beside the folder.
    let resume = [
        (ckpt.clone(), ckpt.join("state.json")),
        (
            out.join("checkpoint.old"),
            out.join("checkpoint.old").join("state.json"),
        ),
        (ckpt.clone(), state_path.clone()),
    ]
    .into_iter()
    .find(|(_, s)| s.exists());
    if let Some((ckpt, state_path)) = resume {
        let text = std::fs::read_to_string(&state_path).map_err(io(&state_path))?;
        let st: State = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", state_path.display())))?;
        if st.config != *cfg {
            return Err(Error::Invalid(format!(
                "{} holds a run with different settings; use another --out or the same settings",
                out.display()
            )));
        }
        crate::load_model_state(model, &ckpt, reset_optimizer)?;
        if reset_optimizer {
            progress.event("the optimizer starts afresh (--reset-optimizer)");
        }
        start = st.iter;
        progress.event(&format!("resuming from step {start}"));
        // Rows written after the checkpoint (a run killed between two checkpoints) go: the
        // resumed steps write them again.
        crate::trim_log(&log_path, start)?;
        // Replay the data stream to where it was (the stream is deterministic).
        for _ in 0..start {
            data.next_batch(cfg.batch, progress)?;
        }
    } else {
        std::fs::write(&log_path, "iter,loss,grad_norm,lr,skipped\n").map_err(io(&log_path))?;
    }
    let mut log_file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .map_err(io(&log_path))?;
    let mut rows = Vec::new();
    let mut non_finite = 0;
    let mut ema_loss = f64::NAN;
    let end = stop_after
        .map(|n| (start + n).min(cfg.iters))
        .unwrap_or(cfg.iters);
    for i in start..end {
        let batch = data.next_batch(cfg.batch, progress)?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ (i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let captions: Vec<String> = batch
            .captions
            .iter()
            .map(|c| {
                if rng.random_bool(cfg.caption_dropout) {
                    String::new()
                } else {
                    c.clone()
                }
            })
            .collect();
        let cond = model.encode_prompts(&captions)?;
        model.zero_grad()?;
        let loss = model.diffusion_loss(&batch.images, cond, rng.random(), 1.0)?;
        model.release(cond)?;
        let lr = cfg.lr_at(i);
        let stats = if loss.is_finite() {
            let stats = model.step(&OptimConfig {
                weight_decay: cfg.weight_decay,
                clip_grad_norm: Some(cfg.clip_grad_norm),
                ema_decay: cfg.ema_decay,
                ..OptimConfig::adamw(lr)
            })?;
            if cfg.ema_decay.is_some() && !stats.ema {
                return Err(Error::Invalid(
                    "the model plugin keeps no moving average of its weights (ema_decay); \
                     pretrain without it"
                        .into(),
                ));
            }
            stats
        } else {
            model.zero_grad()?;
            adt_plugin_api::StepStats {
                grad_norm: f64::NAN,
                clipped: false,
                skipped_non_finite: true,
                step: i,
                ema: cfg.ema_decay.is_some(),
            }
        };
        let skipped = stats.skipped_non_finite || !loss.is_finite();
        if skipped {
            non_finite += 1;
            progress.event(&format!(
                "step {}: non-finite loss or gradient, update skipped",
                i + 1
            ));
            if non_finite >= cfg.max_non_finite {
                return Err(Error::Diverged {
                    reason: format!(
                        "{non_finite} non-finite steps in a row at step {}; last good checkpoint is {}",
                        i + 1,
                        ckpt.display()
                    ),
                });
            }
        } else {
            non_finite = 0;
            ema_loss = if ema_loss.is_nan() {
                loss
            } else {
                0.98 * ema_loss + 0.02 * loss
            };
        }
        let row = LogRow {
            iter: i + 1,
            loss,
            grad_norm: stats.grad_norm,
            lr,
            skipped,
        };
        writeln!(
            log_file,
            "{},{},{},{},{}",
            row.iter, row.loss, row.grad_norm, row.lr, row.skipped
        )
        .map_err(io(&log_path))?;
        rows.push(row);
        progress.update(i + 1, cfg.iters, &format!("loss {ema_loss:.4} lr {lr:.2e}"));
        let last = i + 1 == end;
        if (i + 1) % cfg.checkpoint_every == 0 || last {
            save_checkpoint(
                model,
                out,
                &State {
                    iter: i + 1,
                    config: cfg.clone(),
                },
            )?;
        }
    }
    Ok(rows)
}

fn save_checkpoint(model: &Model, out: &Path, state: &State) -> Result<()> {
    // Weights, optimizer and state are written together into `checkpoint.tmp` and swapped in
    // with renames, so a crash leaves either the previous checkpoint or the new one, never
    // weights newer than the recorded step.
    let tmp = out.join("checkpoint.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    model.save_state(&tmp)?;
    let text = serde_json::to_string_pretty(state).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(tmp.join("state.json"), &text).map_err(io(&tmp))?;
    crate::swap_in_checkpoint(out, &tmp)?;
    // A copy beside the folder for tools that look there (`pretrain` reports progress from it).
    let side = out.join(".state.json.tmp");
    std::fs::write(&side, text).map_err(io(&side))?;
    let dst = out.join("state.json");
    std::fs::rename(&side, &dst).map_err(io(&dst))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_schedule_warms_up_then_decays_to_the_floor() {
        let c = PretrainConfig {
            iters: 1000,
            warmup: 100,
            lr: 1.0,
            final_lr_fraction: 0.1,
            ..Default::default()
        };
        assert!((c.lr_at(0) - 0.01).abs() < 1e-12);
        assert!((c.lr_at(99) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(100) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(550) - 0.55).abs() < 1e-9);
        assert!((c.lr_at(1000) - 0.1).abs() < 1e-12);
    }
}
