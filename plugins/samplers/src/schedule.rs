//! Timestep spacings and sigma interpolation, exactly as diffusers computes them.

use adt_plugin_api::Spacing;

/// numpy's `round` (half to even), which diffusers relies on for integer timesteps.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// `np.linspace(a, b, n)`.
pub fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![a],
        _ => {
            let step = (b - a) / (n - 1) as f64;
            (0..n)
                .map(|i| if i == n - 1 { b } else { a + step * i as f64 })
                .collect()
        }
    }
}

/// `leading` spacing: `count` multiples of `ratio`, descending, plus `steps_offset`.
fn leading(ratio: usize, count: usize, steps_offset: usize) -> Vec<f64> {
    (0..count)
        .rev()
        .map(|i| (i * ratio + steps_offset) as f64)
        .collect()
}

/// `trailing` spacing: `np.round(np.arange(n, 0, -n/m)) - 1` (the same in every scheduler).
fn trailing(n: usize, m: usize) -> Vec<f64> {
    let ratio = n as f64 / m as f64;
    (0..m)
        .map(|i| round_half_even(n as f64 - i as f64 * ratio) - 1.0)
        .collect()
}

/// Integer timesteps (DDIM, DDPM) for `m` steps of an `n`-step schedule, descending.
pub fn integer_timesteps(n: usize, m: usize, spacing: Spacing, steps_offset: usize) -> Vec<f64> {
    match spacing {
        Spacing::Leading => leading(n / m, m, steps_offset),
        Spacing::Trailing => trailing(n, m),
        Spacing::Linspace => linspace(0.0, (n - 1) as f64, m)
            .into_iter()
            .rev()
            .map(round_half_even)
            .collect(),
    }
}

/// Float timesteps of the Euler-family schedulers (`EulerDiscreteScheduler.set_timesteps`):
/// as the integer ones except that `linspace` keeps fractional timesteps.
pub fn euler_timesteps(n: usize, m: usize, spacing: Spacing, steps_offset: usize) -> Vec<f64> {
    match spacing {
        Spacing::Linspace => linspace(0.0, (n - 1) as f64, m).into_iter().rev().collect(),
        other => integer_timesteps(n, m, other, steps_offset),
    }
}

/// DPM-Solver's and UniPC's timesteps (`set_timesteps`, no λ clipping): m + 1 points, the
/// last (t = 0) dropped.
pub fn dpm_timesteps(n: usize, m: usize, spacing: Spacing, steps_offset: usize) -> Vec<f64> {
    match spacing {
        Spacing::Linspace => linspace(0.0, (n - 1) as f64, m + 1)
            .into_iter()
            .rev()
            .take(m)
            .map(round_half_even)
            .collect(),
        Spacing::Leading => leading(n / (m + 1), m + 1, steps_offset)
            .into_iter()
            .take(m)
            .collect(),
        Spacing::Trailing => trailing(n, m),
    }
}

/// Sigmas at the given (possibly fractional) timesteps, interpolated as diffusers does, with
/// the final 0 appended.
pub fn sigmas_at(timesteps: &[f64], alphas_cumprod: &[f64]) -> Vec<f64> {
    let all = karras_sigmas(alphas_cumprod);
    let mut sig: Vec<f64> = timesteps.iter().map(|&t| interp(t, &all)).collect();
    sig.push(0.0);
    sig
}

/// The k-diffusion sigmas √((1−ᾱ)/ᾱ) of a discrete schedule.
pub fn karras_sigmas(alphas_cumprod: &[f64]) -> Vec<f64> {
    alphas_cumprod
        .iter()
        .map(|a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// `np.interp(t, arange(len), values)` (clamped at the ends).
pub fn interp(t: f64, values: &[f64]) -> f64 {
    if t <= 0.0 {
        return values[0];
    }
    let last = values.len() - 1;
    if t >= last as f64 {
        return values[last];
    }
    let i = t.floor() as usize;
    let f = t - i as f64;
    values[i] * (1.0 - f) + values[i + 1] * f
}

/// Flow-matching sigmas with the SD3 shift (`FlowMatchEulerDiscreteScheduler`), with the final 0.
pub fn flow_sigmas(n: usize, m: usize, shift: f64) -> Vec<f64> {
    let shifted = |s: f64| shift * s / (1.0 + (shift - 1.0) * s);
    let sigma_min = shifted(1.0 / n as f64);
    let sigma_max = shifted(1.0);
    let mut out: Vec<f64> = linspace(sigma_max * n as f64, sigma_min * n as f64, m)
        .into_iter()
        .map(|t| shifted(t / n as f64))
        .collect();
    out.push(0.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_rounding() {
        assert_eq!(round_half_even(166.5), 166.0);
        assert_eq!(round_half_even(499.5), 500.0);
        assert_eq!(round_half_even(832.5), 832.0);
        assert_eq!(round_half_even(2.4), 2.0);
    }

    #[test]
    fn trailing_starts_at_the_last_timestep() {
        assert_eq!(integer_timesteps(1000, 10, Spacing::Trailing, 0)[0], 999.0);
        assert_eq!(integer_timesteps(1000, 10, Spacing::Trailing, 0)[9], 99.0);
        assert_eq!(
            integer_timesteps(1000, 3, Spacing::Trailing, 0),
            vec![999.0, 666.0, 332.0]
        );
    }
}
