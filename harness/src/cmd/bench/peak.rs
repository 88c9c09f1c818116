//! The f32 FMA peak of the cores a benchmark runs on, measured rather than looked up.
//!
//! Nominal figures (FMA units × lanes × clock) are wrong as often as not: AMD's Zen 4 runs
//! AVX-512 on two 256-bit FMA pipes (the same FLOP/cycle as AVX2), turbo clocks depend on
//! how many cores are busy, and virtual machines may share a physical core between two
//! vCPUs. So each thread runs a loop of independent register-resident FMAs (twelve
//! accumulators, enough to cover the FMA latency on current x86 and Arm cores) at every
//! vector width the CPU has, and the best total rate is the peak. Benchmarks print their
//! throughput as a fraction of it.

use std::time::Instant;

/// The measured peak.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Peak {
    /// Threads that ran the loop at once.
    pub threads: usize,
    /// Best total rate over the vector widths tried, in GFLOP/s (one FMA = 2 FLOP).
    pub gflops: f64,
    /// The instruction set that reached it (e.g. `avx512f`, `avx2+fma`, `neon`).
    pub isa: &'static str,
    /// Every width tried: (instruction set, GFLOP/s).
    pub tried: Vec<(&'static str, f64)>,
}

impl Peak {
    /// `flops_per_s` as a fraction of the peak.
    pub fn fraction(&self, flops_per_s: f64) -> f64 {
        flops_per_s / (self.gflops * 1e9)
    }
}

/// FMAs per accumulator per call of a kernel (times 12 accumulators × lanes × 2 FLOP).
const ROUNDS: usize = 1 << 22;

/// Timed runs per kernel (about 15 ms each on a 3.5 GHz core).
const TRIES: usize = 8;

type Kernel = fn(usize) -> f32;

/// The kernels this CPU can run: (name, lanes, kernel).
fn kernels() -> Vec<(&'static str, usize, Kernel)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, usize, Kernel)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            v.push(("avx512f", 16, x86::fma512));
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            v.push(("avx2+fma", 8, x86::fma256));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        v.push(("neon", 4, arm::fma128));
    }
    v
}

/// Measure the peak with `threads` threads. Each kernel runs [`TRIES`] short times and the
/// best is kept: on a shared host the best run is the one another tenant disturbed least.
/// `None` on a CPU without a vector FMA this knows.
pub fn measure(threads: usize) -> Option<Peak> {
    let threads = threads.max(1);
    let mut tried = Vec::new();
    for (name, lanes, k) in kernels() {
        let mut best = 0f64;
        for _ in 0..TRIES {
            let t = Instant::now();
            let sink: f32 = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads).map(|_| s.spawn(move || k(ROUNDS))).collect();
                hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
            });
            let dt = t.elapsed().as_secs_f64();
            std::hint::black_box(sink);
            let flops = (threads * ROUNDS * 12 * lanes * 2) as f64;
            best = best.max(flops / dt / 1e9);
        }
        tried.push((name, best));
    }
    let (isa, gflops) = tried.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1))?;
    Some(Peak {
        threads,
        gflops,
        isa,
        tried,
    })
}

/// The peak for a benchmark on `dev`: measured with `threads` threads on the CPU (saying so
/// unless `quiet`), `None` on an accelerator.
pub fn of_cpu(dev: &candle_core::Device, threads: usize, quiet: bool) -> Option<Peak> {
    if !dev.is_cpu() {
        return None;
    }
    if !quiet {
        eprintln!("measuring the f32 FMA peak of {threads} threads …");
    }
    measure(threads)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    macro_rules! fma_loop {
        ($set1:ident, $fma:ident, $add:ident, $store:ident, $lanes:literal, $rounds:ident) => {{
            let b = $set1(0.999_9);
            let c = $set1(1e-6);
            let mut a = [$set1(0.0); 12];
            for (i, v) in a.iter_mut().enumerate() {
                *v = $set1(i as f32);
            }
            for _ in 0..$rounds {
                a[0] = $fma(a[0], b, c);
                a[1] = $fma(a[1], b, c);
                a[2] = $fma(a[2], b, c);
                a[3] = $fma(a[3], b, c);
                a[4] = $fma(a[4], b, c);
                a[5] = $fma(a[5], b, c);
                a[6] = $fma(a[6], b, c);
                a[7] = $fma(a[7], b, c);
                a[8] = $fma(a[8], b, c);
                a[9] = $fma(a[9], b, c);
                a[10] = $fma(a[10], b, c);
                a[11] = $fma(a[11], b, c);
            }
            let mut s = a[0];
            for v in &a[1..] {
                s = $add(s, *v);
            }
            let mut out = [0f32; $lanes];
            $store(out.as_mut_ptr(), s);
            out.iter().sum()
        }};
    }

    #[target_feature(enable = "avx512f")]
    fn fma512_inner(rounds: usize) -> f32 {
        // SAFETY: `out` has 16 floats, the width of one unaligned 512-bit store.
        unsafe {
            fma_loop!(
                _mm512_set1_ps,
                _mm512_fmadd_ps,
                _mm512_add_ps,
                _mm512_storeu_ps,
                16,
                rounds
            )
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn fma256_inner(rounds: usize) -> f32 {
        // SAFETY: `out` has 8 floats, the width of one unaligned 256-bit store.
        unsafe {
            fma_loop!(
                _mm256_set1_ps,
                _mm256_fmadd_ps,
                _mm256_add_ps,
                _mm256_storeu_ps,
                8,
                rounds
            )
        }
    }

    pub fn fma512(rounds: usize) -> f32 {
        // SAFETY: only listed by `kernels` when the CPU reports avx512f.
        unsafe { fma512_inner(rounds) }
    }

    pub fn fma256(rounds: usize) -> f32 {
        // SAFETY: only listed by `kernels` when the CPU reports avx2 and fma.
        unsafe { fma256_inner(rounds) }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    pub fn fma128(rounds: usize) -> f32 {
        // SAFETY: NEON is part of the aarch64 baseline.
        unsafe {
            let b = vdupq_n_f32(0.999_9);
            let c = vdupq_n_f32(1e-6);
            let mut a = [vdupq_n_f32(0.0); 12];
            for (i, v) in a.iter_mut().enumerate() {
                *v = vdupq_n_f32(i as f32);
            }
            for _ in 0..rounds {
                for v in a.iter_mut() {
                    *v = vfmaq_f32(c, *v, b);
                }
            }
            a.iter().map(|v| vaddvq_f32(*v)).sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a CPU with a vector FMA the loop reports a positive, finite rate, the best of the
    /// widths tried, and fractions scale with it.
    #[test]
    fn peak_is_the_best_width_and_fractions_follow() {
        let Some(p) = measure(1) else {
            eprintln!("no vector FMA kernel for this CPU; nothing to measure");
            return;
        };
        assert!(p.gflops.is_finite() && p.gflops > 0.1, "{p:?}");
        let best = p.tried.iter().map(|t| t.1).fold(0.0, f64::max);
        assert_eq!(p.gflops, best);
        assert!((p.fraction(p.gflops * 0.5e9) - 0.5).abs() < 1e-12);
    }
}
