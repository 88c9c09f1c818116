//! candle-side helpers for model plugin authors, shared by the built-in `tiny` model and the
//! SD-family plugins: [`Trainer`] (gradient accumulation across `denoise_vjp` calls and AdamW
//! with clipping, a non-finite guard and resumable state), [`device`], host-tensor
//! conversion, and canonical (byte-reproducible) safetensors.
//!
//! Depends on `adt-plugin-api` and candle only; every copy of this crate lives inside one
//! plugin library, so no candle tensor ever crosses the boundary (DESIGN §2.1).

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};

use adt_plugin_api::{HostTensor, OptimConfig, PluginError, PluginResult, StepStats, TensorRef};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use sha2::{Digest, Sha256};

/// A candle error as a plugin error.
pub fn err(e: candle_core::Error) -> PluginError {
    PluginError(e.to_string())
}

/// `cpu` (default) or `cuda[:N]`. A build without the `cuda` feature says how to get one.
pub fn device(spec: Option<&str>) -> PluginResult<Device> {
    match spec.unwrap_or("cpu") {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let idx: usize = s
                .strip_prefix("cuda:")
                .unwrap_or("0")
                .parse()
                .map_err(|_| PluginError::msg(format!("bad device `{s}` (cpu or cuda:N)")))?;
            if !cfg!(feature = "cuda") {
                return Err(PluginError::msg(format!(
                    "this build has no CUDA; build with `--features cuda` \
                     (scripts/build-cuda.sh) to use `{s}`"
                )));
            }
            Device::new_cuda(idx).map_err(|e| PluginError(format!("cannot open {s}: {e}")))
        }
        s => Err(PluginError::msg(format!(
            "unknown device `{s}` (cpu or cuda:N)"
        ))),
    }
}

/// A borrowed host tensor → a candle tensor on `device` (f32).
pub fn to_candle(t: TensorRef<'_>, device: &Device) -> PluginResult<Tensor> {
    Tensor::from_slice(t.data, t.shape, device).map_err(err)
}

/// A candle tensor → an owned f32 host tensor.
pub fn to_host(t: &Tensor) -> PluginResult<HostTensor> {
    let shape = t.dims().to_vec();
    let data = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(err)?;
    Ok(HostTensor { shape, data })
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex SHA-256 of a file, streamed (a multi-gigabyte weight file is never held in
/// memory).
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Rewrite a safetensors file's JSON header with sorted keys, so that the same tensors and
/// metadata always give the same bytes (the `safetensors` crate writes metadata from a
/// `HashMap`, whose order changes from process to process).
pub fn canonical_safetensors(mut bytes: Vec<u8>) -> PluginResult<Vec<u8>> {
    if bytes.len() < 8 {
        return Err(PluginError::msg("not a safetensors buffer"));
    }
    let n = u64::from_le_bytes(
        bytes[..8]
            .try_into()
            .map_err(|_| PluginError::msg("bad header"))?,
    ) as usize;
    let header = bytes
        .get(8..8 + n)
        .ok_or_else(|| PluginError::msg("truncated safetensors header"))?;
    // Rebuild every object with keys inserted in sorted order (serde_json may be built with
    // `preserve_order`, in which case insertion order is what gets written).
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<(String, serde_json::Value)> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    let value: serde_json::Value = serde_json::from_slice(header)?;
    let mut sorted = serde_json::to_vec(&sort(value))?;
    if sorted.len() > n {
        return Err(PluginError::msg(
            "canonical header longer than the original",
        ));
    }
    sorted.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&sorted);
    Ok(bytes)
}

/// Serialize named tensors (canonical bytes) with string metadata.
pub fn serialize(
    tensors: &[(String, Tensor)],
    meta: HashMap<String, String>,
) -> PluginResult<Vec<u8>> {
    let views: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| PluginError(format!("cannot serialize tensors: {e}")))?;
    canonical_safetensors(bytes)
}

/// The optimizer state of a checkpoint folder (`optimizer.safetensors`, as
/// [`Trainer::state_bytes`] wrote it). Its absence is an error: a resume without the
/// optimizer's moments would silently train differently.
pub fn read_optimizer_state(dir: &std::path::Path) -> PluginResult<Vec<u8>> {
    let opt = dir.join("optimizer.safetensors");
    std::fs::read(&opt).map_err(|e| {
        PluginError(format!(
            "cannot read {} ({e}): a checkpoint holds the optimizer's state beside the \
             weights; load the weights alone as `weights` instead",
            opt.display()
        ))
    })
}

/// The tensors of safetensors `bytes` named as `vars`, each checked against its variable's
/// shape, loaded on `device` in f32; a missing, misshapen or extra tensor is an error.
pub fn read_like(
    bytes: &[u8],
    vars: &BTreeMap<String, Var>,
    device: &Device,
) -> PluginResult<BTreeMap<String, Tensor>> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| PluginError(format!("corrupt safetensors: {e}")))?;
    if st.len() != vars.len() {
        return Err(PluginError(format!(
            "the file holds {} tensors, the model trains {}",
            st.len(),
            vars.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (name, var) in vars {
        let view = st
            .tensor(name)
            .map_err(|_| PluginError(format!("the file lacks tensor `{name}`")))?;
        let t = candle_core::safetensors::Load::load(&view, device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(err)?;
        if t.dims() != var.dims() {
            return Err(PluginError(format!(
                "tensor `{name}` has shape {:?}, expected {:?}",
                t.dims(),
                var.dims()
            )));
        }
        out.insert(name.clone(), t);
    }
    Ok(out)
}

/// Write `bytes` to `dir/name` through a temporary file and a rename.
pub fn write_atomic(dir: &std::path::Path, name: &str, bytes: &[u8]) -> PluginResult<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

/// Conditioning handles: what `encode_prompts` returns and `release_cond` frees.
pub struct Handles<T> {
    map: HashMap<u64, T>,
    next: u64,
}

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Handles {
            map: HashMap::new(),
            next: 1,
        }
    }
}

impl<T> Handles<T> {
    /// Store a value; its handle (never 0, never reused).
    pub fn insert(&mut self, v: T) -> u64 {
        let h = self.next;
        self.next += 1;
        self.map.insert(h, v);
        h
    }

    /// The value of a handle.
    pub fn get(&self, h: u64) -> PluginResult<&T> {
        self.map
            .get(&h)
            .ok_or_else(|| PluginError(format!("unknown conditioning handle {h}")))
    }

    /// Free a handle.
    pub fn remove(&mut self, h: u64) -> PluginResult<()> {
        self.map
            .remove(&h)
            .map(|_| ())
            .ok_or_else(|| PluginError(format!("unknown conditioning handle {h}")))
    }
}

/// Gradients accumulated over `denoise_vjp` / `diffusion_loss` calls, and AdamW on them.
///
/// Moments are kept in f32 whatever the parameters' dtype (candle's own AdamW keeps them in
/// the parameter dtype, which loses bf16 updates), and so is the optional moving average of
/// the weights (`OptimConfig::ema_decay`).
#[derive(Default)]
pub struct Trainer {
    grads: BTreeMap<String, Tensor>,
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
    step: u64,
    ema: BTreeMap<String, Tensor>,
    ema_updates: u64,
}

impl Trainer {
    /// No gradients, no moments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add the gradients of `vars` found in `grads` to the accumulators.
    pub fn accumulate(
        &mut self,
        vars: &BTreeMap<String, Var>,
        grads: &GradStore,
    ) -> PluginResult<()> {
        for (name, var) in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                // candle does not detach the gradients of variables: they still reference the
                // forward graph. Detach, or every accumulated gradient keeps its evaluation's
                // activations alive until zero_grad (memory growing with K).
                let g = g.to_dtype(DType::F32).map_err(err)?.detach();
                let acc = match self.grads.remove(name) {
                    Some(a) => (a + g).map_err(err)?.detach(),
                    None => g,
                };
                self.grads.insert(name.clone(), acc);
            }
        }
        Ok(())
    }

    /// The accumulated gradient of one parameter.
    pub fn grad(&self, name: &str) -> Option<&Tensor> {
        self.grads.get(name)
    }

    /// Drop the accumulated gradients.
    pub fn zero_grad(&mut self) {
        self.grads.clear();
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The moving average of the weights (f32, by parameter name); empty until a step asks
    /// for one.
    pub fn ema(&self) -> &BTreeMap<String, Tensor> {
        &self.ema
    }

    /// Restore the moving average (read back from a checkpoint's `ema.safetensors`; the
    /// update count comes with the optimizer state). Tensors are kept in f32.
    pub fn set_ema(&mut self, ema: BTreeMap<String, Tensor>) -> PluginResult<()> {
        self.ema = ema
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F32).map_err(err)?.detach())))
            .collect::<PluginResult<_>>()?;
        Ok(())
    }

    /// The decay applied at the moving average's update number `n` (0-based): 0 at the first
    /// (the average starts as a copy of the weights), then `min(decay, (1 + n) / (10 + n))`.
    pub fn ema_decay_at(decay: f64, n: u64) -> f64 {
        if n == 0 {
            0.0
        } else {
            decay.min((1 + n) as f64 / (10 + n) as f64)
        }
    }

    fn update_ema(&mut self, vars: &BTreeMap<String, Var>, decay: f64) -> PluginResult<()> {
        let d = Self::ema_decay_at(decay, self.ema_updates);
        for (name, var) in vars {
            let w = var.as_tensor().to_dtype(DType::F32).map_err(err)?.detach();
            let avg = match self.ema.get(name) {
                Some(e) if d > 0.0 => ((e * d).map_err(err)? + (w * (1.0 - d)).map_err(err)?)
                    .map_err(err)?
                    .detach(),
                // A copy: `to_dtype` to the same dtype shares the variable's storage, which
                // the next step overwrites in place.
                _ => w.copy().map_err(err)?,
            };
            self.ema.insert(name.clone(), avg);
        }
        self.ema_updates += 1;
        Ok(())
    }

    /// Forget gradients, moments, the moving average and the step counts.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// One AdamW step on the accumulated gradients (divided by `grad_scale_divisor`, clipped
    /// to `clip_grad_norm`); a non-finite gradient norm skips the step. Clears the gradients.
    pub fn step(
        &mut self,
        vars: &BTreeMap<String, Var>,
        c: &OptimConfig,
    ) -> PluginResult<StepStats> {
        if let Some(d) = c.ema_decay
            && !(0.0..1.0).contains(&d)
        {
            return Err(PluginError(format!("ema_decay must be in [0, 1), got {d}")));
        }
        let div = if c.grad_scale_divisor > 0.0 {
            c.grad_scale_divisor
        } else {
            1.0
        };
        let mut sq = 0f64;
        for g in self.grads.values() {
            sq += g
                .sqr()
                .and_then(|t| t.sum_all())
                .and_then(|t| t.to_scalar::<f32>())
                .map_err(err)? as f64;
        }
        let grad_norm = sq.sqrt() / div;
        if !grad_norm.is_finite() {
            self.grads.clear();
            return Ok(StepStats {
                grad_norm,
                clipped: false,
                skipped_non_finite: true,
                step: self.step,
                ema: c.ema_decay.is_some(),
            });
        }
        let mut scale = 1.0 / div;
        let mut clipped = false;
        if let Some(max) = c.clip_grad_norm
            && grad_norm > max
        {
            scale *= max / (grad_norm + 1e-12);
            clipped = true;
        }
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for (name, var) in vars {
            let Some(g) = self.grads.get(name) else {
                continue;
            };
            let g = (g * scale).map_err(err)?;
            let m = match self.m.get(name) {
                Some(m) => ((m * c.beta1).map_err(err)? + (&g * (1.0 - c.beta1)).map_err(err)?)
                    .map_err(err)?,
                None => (&g * (1.0 - c.beta1)).map_err(err)?,
            };
            let g2 = g.sqr().map_err(err)?;
            let v = match self.v.get(name) {
                Some(v) => ((v * c.beta2).map_err(err)? + (&g2 * (1.0 - c.beta2)).map_err(err)?)
                    .map_err(err)?,
                None => (&g2 * (1.0 - c.beta2)).map_err(err)?,
            };
            let mhat = (&m / bc1).map_err(err)?;
            let vhat = (&v / bc2).map_err(err)?;
            let upd = (mhat / (vhat.sqrt().map_err(err)? + c.eps).map_err(err)?).map_err(err)?;
            let w = var.as_tensor().to_dtype(DType::F32).map_err(err)?;
            let decayed = (w * (1.0 - c.lr * c.weight_decay)).map_err(err)?;
            let neww = (decayed - (upd * c.lr).map_err(err)?)
                .and_then(|t| t.to_dtype(var.dtype()))
                .map_err(err)?;
            var.set(&neww.detach()).map_err(err)?;
            self.m.insert(name.clone(), m.detach());
            self.v.insert(name.clone(), v.detach());
        }
        self.grads.clear();
        if let Some(d) = c.ema_decay {
            self.update_ema(vars, d)?;
        }
        Ok(StepStats {
            grad_norm,
            clipped,
            skipped_non_finite: false,
            step: self.step,
            ema: c.ema_decay.is_some(),
        })
    }

    /// The moments and step counts as canonical safetensors bytes (`m.NAME`, `v.NAME`,
    /// metadata `step` and `ema_updates`; the moving average itself is written by the plugin
    /// in its model format, see [`Trainer::ema`]).
    pub fn state_bytes(&self) -> PluginResult<Vec<u8>> {
        let mut opt: Vec<(String, Tensor)> = Vec::new();
        for (k, t) in &self.m {
            opt.push((format!("m.{k}"), t.clone()));
        }
        for (k, t) in &self.v {
            opt.push((format!("v.{k}"), t.clone()));
        }
        let mut meta = HashMap::new();
        meta.insert("step".to_string(), self.step.to_string());
        if self.ema_updates > 0 {
            meta.insert("ema_updates".to_string(), self.ema_updates.to_string());
        }
        serialize(&opt, meta)
    }

    /// Restore what [`Trainer::state_bytes`] wrote; gradients are cleared.
    pub fn load_state_bytes(&mut self, bytes: &[u8], device: &Device) -> PluginResult<()> {
        self.reset();
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| PluginError(e.to_string()))?;
        let count = |key: &str| {
            meta.metadata()
                .as_ref()
                .and_then(|m| m.get(key))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        self.step = count("step");
        self.ema_updates = count("ema_updates");
        let st =
            safetensors::SafeTensors::deserialize(bytes).map_err(|e| PluginError(e.to_string()))?;
        for name in st.names() {
            let view = st.tensor(name).map_err(|e| PluginError(e.to_string()))?;
            let t = candle_core::safetensors::Load::load(&view, device).map_err(err)?;
            if let Some(k) = name.strip_prefix("m.") {
                self.m.insert(k.to_string(), t);
            } else if let Some(k) = name.strip_prefix("v.") {
                self.v.insert(k.to_string(), t);
            }
        }
        Ok(())
    }
}
