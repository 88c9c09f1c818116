//! AdamW over candle variables with global-norm clipping, a non-finite guard and a state that
//! can be saved and restored exactly (for bitwise resume).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The update was skipped because a gradient was not finite.
    pub skipped: bool,
}

/// AdamW (β = 0.9, 0.999, ε = 1e-8, decoupled weight decay).
pub struct AdamW {
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: u64,
    weight_decay: f64,
}

impl AdamW {
    /// An optimizer over `vars`.
    pub fn new(vars: &[Var], weight_decay: f64) -> Self {
        let zeros = |v: &Var| v.as_tensor().zeros_like().expect("zeros");
        AdamW {
            m: vars.iter().map(zeros).collect(),
            v: vars.iter().map(zeros).collect(),
            vars: vars.to_vec(),
            t: 0,
            weight_decay,
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// One update with the gradients in `grads` (missing gradients count as zero), the global
    /// norm clipped to `clip` (≤ 0: no clipping). A non-finite gradient skips the update.
    pub fn step(&mut self, grads: &GradStore, lr: f64, clip: f64) -> candle_core::Result<Step> {
        let gs: Vec<Option<Tensor>> = self
            .vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).cloned())
            .collect();
        let mut sq = 0f64;
        for g in gs.iter().flatten() {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        let norm = sq.sqrt();
        if !norm.is_finite() {
            return Ok(Step {
                grad_norm: norm,
                skipped: true,
            });
        }
        let scale = if clip > 0.0 && norm > clip {
            clip / norm
        } else {
            1.0
        };
        self.t += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        for (i, var) in self.vars.iter().enumerate() {
            // Everything here is detached: no autograd history may chain across steps.
            let g = match &gs[i] {
                Some(g) => (g.detach() * scale)?,
                None => var.as_tensor().zeros_like()?,
            };
            self.m[i] = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?.detach();
            self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?.detach();
            let mhat = (&self.m[i] / bc1)?;
            let vhat = (&self.v[i] / bc2)?;
            let upd = (mhat / (vhat.sqrt()? + eps)?)?;
            let w = var.as_tensor().detach();
            let next = ((w * (1.0 - lr * self.weight_decay))? - (upd * lr)?)?;
            var.set(&next.detach())?;
        }
        Ok(Step {
            grad_norm: norm,
            skipped: false,
        })
    }

    /// The moments and step count as named tensors (for checkpoints).
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            out.push((format!("{prefix}m.{i}"), m.clone()));
            out.push((format!("{prefix}v.{i}"), v.clone()));
        }
        out
    }

    /// Restore what [`AdamW::state`] returned, with the step count.
    pub fn restore(
        &mut self,
        get: &dyn Fn(&str) -> Option<Tensor>,
        prefix: &str,
        steps: u64,
    ) -> Result<(), String> {
        for i in 0..self.m.len() {
            let m = get(&format!("{prefix}m.{i}")).ok_or(format!("missing {prefix}m.{i}"))?;
            let v = get(&format!("{prefix}v.{i}")).ok_or(format!("missing {prefix}v.{i}"))?;
            if m.dims() != self.m[i].dims() || v.dims() != self.v[i].dims() {
                return Err(format!("optimizer state {prefix}{i} has the wrong shape"));
            }
            self.m[i] = m;
            self.v[i] = v;
        }
        self.t = steps;
        Ok(())
    }
}
