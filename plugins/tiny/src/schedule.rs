//! The tiny model's noise schedule: the cosine schedule of Nichol & Dhariwal (2021) over 1000
//! training steps, with betas clipped at 0.999 so that ᾱ at t = 999 is (numerically) zero —
//! zero terminal SNR. With v-prediction this lets a sampler start from pure noise and still
//! produce recognisable images in 10 steps (see `shared/docs/toy-adt-prototype.md`, trap 1).

/// Number of training timesteps.
pub const NUM_TRAIN_TIMESTEPS: usize = 1000;

/// ᾱ_t for t = 0..999, computed in f64 as `improved-diffusion`'s `betas_for_alpha_bar` does.
pub fn alphas_cumprod() -> Vec<f64> {
    let s = 0.008;
    let f = |t: f64| {
        (((t + s) / (1.0 + s)) * std::f64::consts::FRAC_PI_2)
            .cos()
            .powi(2)
    };
    let n = NUM_TRAIN_TIMESTEPS;
    let mut out = Vec::with_capacity(n);
    let mut acc = 1.0;
    for i in 0..n {
        let t1 = i as f64 / n as f64;
        let t2 = (i + 1) as f64 / n as f64;
        let beta = (1.0 - f(t2) / f(t1)).min(0.999);
        acc *= 1.0 - beta;
        out.push(acc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_shape() {
        let a = alphas_cumprod();
        assert_eq!(a.len(), 1000);
        assert!(a.windows(2).all(|w| w[1] < w[0]), "monotone");
        assert!(a[0] > 0.9999 && a[0] < 1.0);
        // Half-way the cosine schedule sits near ᾱ = 0.5.
        assert!((a[499] - 0.5).abs() < 0.02, "{}", a[499]);
        assert!(a[999] < 1e-6, "terminal SNR must be ~0: {}", a[999]);
    }
}
