//! Feature statistics and the two distances.
//!
//! * [`FeatureStats`]: count, Σx and Σxxᵀ in f64 — shards merge exactly (sums add), and μ, Σ
//!   follow (Σ with the ÷(N−1) of `np.cov`, as pytorch-fid, clean-fid and TTUR use).
//! * [`fid`]: ‖μ₁−μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂), with the trace of the square root by the
//!   symmetric route: Σ₁Σ₂ is similar to Σ₁^½ Σ₂ Σ₁^½ (symmetric PSD), so
//!   tr √(Σ₁Σ₂) = Σᵢ √max(λᵢ(Σ₁^½ Σ₂ Σ₁^½), 0) — two symmetric eigensolves (faer, f64).
//! * [`kid`]: clean-fid's `kernel_distance` — cubic polynomial kernel k(x,y) = (xᵀy/d + 1)³,
//!   100 subsets of min(n₁, n₂, 1000) drawn without replacement, unbiased MMD² per subset,
//!   averaged; we also report the standard deviation over subsets.

use faer::{Accum, Mat, MatRef, Par, Side};
use rand::SeedableRng;
use rand::seq::index::sample;

use crate::{Error, Result};

/// Mergeable first and second moments of a feature set.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    /// Feature dimension.
    pub dim: usize,
    /// Number of samples.
    pub count: u64,
    /// Σx.
    pub sum: Vec<f64>,
    /// Σxxᵀ, `dim × dim` row-major (symmetric).
    pub sum_outer: Vec<f64>,
}

impl FeatureStats {
    /// Empty statistics of dimension `dim`.
    pub fn new(dim: usize) -> Self {
        FeatureStats {
            dim,
            count: 0,
            sum: vec![0.0; dim],
            sum_outer: vec![0.0; dim * dim],
        }
    }

    /// Add `rows` feature vectors (row-major `rows × dim`).
    pub fn add(&mut self, features: &[f32]) {
        let d = self.dim;
        assert_eq!(features.len() % d, 0, "features are rows of {d}");
        let n = features.len() / d;
        if n == 0 {
            return;
        }
        let x: Vec<f64> = features.iter().map(|&v| v as f64).collect();
        let xm = MatRef::from_row_major_slice(&x, n, d);
        let mut acc = faer::MatMut::from_row_major_slice_mut(&mut self.sum_outer, d, d);
        faer::linalg::matmul::matmul(&mut acc, Accum::Add, xm.transpose(), xm, 1.0, Par::rayon(0));
        for row in x.chunks(d) {
            for (s, v) in self.sum.iter_mut().zip(row) {
                *s += v;
            }
        }
        self.count += n as u64;
    }

    /// Merge another shard (exact: sums add).
    pub fn merge(&mut self, other: &FeatureStats) -> Result<()> {
        if other.dim != self.dim {
            return Err(Error::Mismatch(format!(
                "dimension {} vs {}",
                self.dim, other.dim
            )));
        }
        self.count += other.count;
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        for (a, b) in self.sum_outer.iter_mut().zip(&other.sum_outer) {
            *a += b;
        }
        Ok(())
    }

    /// The mean.
    pub fn mean(&self) -> Vec<f64> {
        let n = self.count as f64;
        self.sum.iter().map(|s| s / n).collect()
    }

    /// The covariance with divisor N−1 (`np.cov`), row-major.
    pub fn covariance(&self) -> Vec<f64> {
        let d = self.dim;
        let n = self.count as f64;
        let mu = self.mean();
        let mut c = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                c[i * d + j] = (self.sum_outer[i * d + j] - n * mu[i] * mu[j]) / (n - 1.0);
            }
        }
        c
    }

    /// μ and Σ as a [`Gaussian`].
    pub fn gaussian(&self) -> Gaussian {
        Gaussian {
            mu: self.mean(),
            sigma: self.covariance(),
            count: Some(self.count),
        }
    }
}

/// μ and Σ of a feature set (what `.npz` statistics files hold).
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    /// Mean, `d`.
    pub mu: Vec<f64>,
    /// Covariance, `d × d` row-major.
    pub sigma: Vec<f64>,
    /// Number of samples, when known.
    pub count: Option<u64>,
}

impl Gaussian {
    /// Dimension.
    pub fn dim(&self) -> usize {
        self.mu.len()
    }
}

/// A FID value with the diagnostics of its square root.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct FidResult {
    /// The distance.
    pub fid: f64,
    /// ‖μ₁ − μ₂‖².
    pub mean_term: f64,
    /// tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂).
    pub cov_term: f64,
    /// The most negative eigenvalue clamped to 0 (round-off; large values mean trouble).
    pub min_eigenvalue: f64,
    /// Number of eigenvalues of Σ₁^½Σ₂Σ₁^½ above 1e-10·λ_max (the numerical rank).
    pub rank: usize,
    /// How Σ₁ was factored: `cholesky` (full rank) or `eigen` (rank-deficient).
    pub route: &'static str,
}

/// What FID needs of one side's covariance Σ₁: a factor F with Σ₁ = F Fᵀ, so that Σ₁Σ₂ is
/// similar to the symmetric PSD matrix Fᵀ Σ₂ F and tr √(Σ₁Σ₂) = Σᵢ √λᵢ(Fᵀ Σ₂ F).
///
/// * Cholesky (F = L) when Σ₁ is numerically positive definite (N > d samples): one cheap
///   factorisation;
/// * eigen (F = U diag(√max(λ, 0))) otherwise — rank-deficient covariances (N ≤ d), with the
///   round-off negatives clamped.
///
/// Either way the trace comes from one symmetric eigenvalue solve. Compute the factor once when
/// one reference meets many candidates.
pub struct SqrtFactor {
    f: Mat<f64>,
    route: &'static str,
}

impl SqrtFactor {
    /// Factor a symmetric PSD `d × d` matrix (row-major).
    pub fn new(sigma: &[f64], d: usize) -> Result<Self> {
        let m = MatRef::from_row_major_slice(sigma, d, d);
        if let Ok(llt) = m.llt(Side::Lower) {
            return Ok(SqrtFactor {
                f: llt.L().to_owned(),
                route: "cholesky",
            });
        }
        Self::eigen(sigma, d)
    }

    /// Factor through the eigendecomposition (always applicable to a PSD matrix).
    pub fn eigen(sigma: &[f64], d: usize) -> Result<Self> {
        let m = MatRef::from_row_major_slice(sigma, d, d);
        let evd = m
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| Error::Linalg(format!("{e:?}")))?;
        let s = evd.S();
        // Eigenvalues ascend; columns with λ ≤ 0 are zero in F and add only zero eigenvalues to
        // Fᵀ Σ₂ F, so they are dropped exactly — a rank-r covariance (N ≤ d samples) leaves a
        // smaller matrix to solve.
        let first = (0..d).find(|&j| s[j] > 0.0).unwrap_or(d);
        let u = evd.U();
        let f = Mat::<f64>::from_fn(d, d - first, |i, j| u[(i, first + j)] * s[first + j].sqrt());
        Ok(SqrtFactor { f, route: "eigen" })
    }

    /// Which factorisation was used.
    pub fn route(&self) -> &'static str {
        self.route
    }
}

/// FID between two Gaussians.
pub fn fid(a: &Gaussian, b: &Gaussian) -> Result<FidResult> {
    let d = a.dim();
    if b.dim() != d {
        return Err(Error::Mismatch(format!("dimension {d} vs {}", b.dim())));
    }
    fid_with_factor(a, &SqrtFactor::new(&a.sigma, d)?, b)
}

/// FID with side `a` factored: eigenvalues of Fᵀ Σ_b F (two GEMMs, one symmetric solve).
pub fn fid_with_factor(a: &Gaussian, fa: &SqrtFactor, b: &Gaussian) -> Result<FidResult> {
    let d = a.dim();
    if b.dim() != d || fa.f.nrows() != d {
        return Err(Error::Mismatch(format!("dimension {d} vs {}", b.dim())));
    }
    let sb = MatRef::from_row_major_slice(&b.sigma, d, d);
    let r = fa.f.ncols();
    let mut t = Mat::<f64>::zeros(r, d);
    faer::linalg::matmul::matmul(
        &mut t,
        Accum::Replace,
        fa.f.transpose(),
        sb,
        1.0,
        Par::rayon(0),
    );
    let mut m = Mat::<f64>::zeros(r, r);
    faer::linalg::matmul::matmul(&mut m, Accum::Replace, &t, &fa.f, 1.0, Par::rayon(0));
    // Symmetrise against round-off.
    for j in 0..r {
        for i in 0..j {
            let v = 0.5 * (m[(i, j)] + m[(j, i)]);
            m[(i, j)] = v;
            m[(j, i)] = v;
        }
    }
    let eig = m
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|e| Error::Linalg(format!("{e:?}")))?;
    let lmax = eig.iter().cloned().fold(0.0f64, f64::max);
    let min_eigenvalue = eig.iter().cloned().fold(f64::INFINITY, f64::min);
    let rank = eig.iter().filter(|&&l| l > 1e-10 * lmax).count();
    let tr_sqrt: f64 = eig.iter().map(|l| l.max(0.0).sqrt()).sum();
    let tr_a: f64 = (0..d).map(|i| a.sigma[i * d + i]).sum();
    let tr_b: f64 = (0..d).map(|i| b.sigma[i * d + i]).sum();
    let mean_term: f64 = a.mu.iter().zip(&b.mu).map(|(x, y)| (x - y) * (x - y)).sum();
    let cov_term = tr_a + tr_b - 2.0 * tr_sqrt;
    Ok(FidResult {
        fid: mean_term + cov_term,
        mean_term,
        cov_term,
        min_eigenvalue,
        rank,
        route: fa.route,
    })
}

/// KID as clean-fid computes it, with a seeded subset sampler.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct KidResult {
    /// Mean over subsets.
    pub kid: f64,
    /// Standard deviation over subsets (ddof 0).
    pub std: f64,
    /// Number of subsets.
    pub subsets: usize,
    /// Subset size.
    pub subset_size: usize,
    /// The sampler's seed.
    pub seed: u64,
}

/// KID between two feature sets (`n × d` row-major f32 each).
pub fn kid(
    feats1: &[f32],
    feats2: &[f32],
    d: usize,
    num_subsets: usize,
    max_subset_size: usize,
    seed: u64,
) -> Result<KidResult> {
    let (n1, n2) = (feats1.len() / d, feats2.len() / d);
    let m = n1.min(n2).min(max_subset_size);
    if m < 2 {
        return Err(Error::TooFew {
            what: "KID subset".into(),
            n: m as u64,
            min: 2,
        });
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(num_subsets);
    let gather = |f: &[f32], idx: &[usize]| -> Mat<f64> {
        Mat::from_fn(idx.len(), d, |i, j| f[idx[i] * d + j] as f64)
    };
    for _ in 0..num_subsets {
        // clean-fid draws x from the second set first, then y from the first.
        let ix: Vec<usize> = sample(&mut rng, n2, m).into_vec();
        let iy: Vec<usize> = sample(&mut rng, n1, m).into_vec();
        let x = gather(feats2, &ix);
        let y = gather(feats1, &iy);
        let k = |p: &Mat<f64>, q: &Mat<f64>| -> Mat<f64> {
            let mut g = Mat::<f64>::zeros(m, m);
            faer::linalg::matmul::matmul(
                &mut g,
                Accum::Replace,
                p,
                q.transpose(),
                1.0 / d as f64,
                Par::rayon(0),
            );
            g
        };
        let (kxx, kyy, kxy) = (k(&x, &x), k(&y, &y), k(&x, &y));
        let cube = |v: f64| (v + 1.0).powi(3);
        let mut a_sum = 0.0;
        let mut a_diag = 0.0;
        let mut b_sum = 0.0;
        for i in 0..m {
            for j in 0..m {
                let a = cube(kxx[(i, j)]) + cube(kyy[(i, j)]);
                a_sum += a;
                if i == j {
                    a_diag += a;
                }
                b_sum += cube(kxy[(i, j)]);
            }
        }
        let t = (a_sum - a_diag) / (m as f64 - 1.0) - b_sum * 2.0 / m as f64;
        values.push(t / m as f64);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    Ok(KidResult {
        kid: mean,
        std: var.sqrt(),
        subsets: num_subsets,
        subset_size: m,
        seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn random_features(n: usize, d: usize, seed: u64, shift: f32) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * d)
            .map(|i| rng.random::<f32>() * (1.0 + (i % d) as f32 / d as f32) + shift)
            .collect()
    }

    #[test]
    fn merged_shards_equal_one_pass() {
        let d = 16;
        let f = random_features(100, d, 1, 0.0);
        let mut one = FeatureStats::new(d);
        one.add(&f);
        let mut a = FeatureStats::new(d);
        a.add(&f[..37 * d]);
        let mut b = FeatureStats::new(d);
        b.add(&f[37 * d..]);
        a.merge(&b).unwrap();
        assert_eq!(a.count, one.count);
        for (x, y) in a.sum_outer.iter().zip(&one.sum_outer) {
            assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0));
        }
        // Covariance equals the two-pass (centred) estimate.
        let n = 100.0;
        let mu = one.mean();
        let cov = one.covariance();
        for i in 0..d {
            for j in 0..d {
                let mut c = 0.0;
                for r in 0..100 {
                    c += (f[r * d + i] as f64 - mu[i]) * (f[r * d + j] as f64 - mu[j]);
                }
                assert!((cov[i * d + j] - c / (n - 1.0)).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn fid_of_commuting_covariances_has_the_closed_form() {
        // Σ₁ = Q diag(a) Qᵀ, Σ₂ = Q diag(b) Qᵀ: tr√(Σ₁Σ₂) = Σ√(ab).
        let d = 24;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let g = Mat::<f64>::from_fn(d, d, |_, _| rng.random::<f64>() - 0.5);
        let q = g.qr().compute_Q();
        let a: Vec<f64> = (0..d)
            .map(|i| 10f64.powf(-6.0 + 8.0 * i as f64 / d as f64))
            .collect();
        let b: Vec<f64> = (0..d)
            .map(|i| 10f64.powf(2.0 - 7.0 * i as f64 / d as f64))
            .collect();
        let build = |l: &[f64]| -> Vec<f64> {
            let mut m = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..d {
                    m[i * d + j] = (0..d).map(|k| q[(i, k)] * l[k] * q[(j, k)]).sum();
                }
            }
            m
        };
        let mu1: Vec<f64> = (0..d).map(|i| i as f64 * 0.1).collect();
        let mu2: Vec<f64> = (0..d).map(|i| 1.0 - i as f64 * 0.05).collect();
        let g1 = Gaussian {
            mu: mu1.clone(),
            sigma: build(&a),
            count: None,
        };
        let g2 = Gaussian {
            mu: mu2.clone(),
            sigma: build(&b),
            count: None,
        };
        let exact: f64 = mu1
            .iter()
            .zip(&mu2)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            + a.iter()
                .zip(&b)
                .map(|(x, y)| x + y - 2.0 * (x * y).sqrt())
                .sum::<f64>();
        let r = fid(&g1, &g2).unwrap();
        assert_eq!(r.route, "cholesky");
        assert!((r.fid - exact).abs() < 1e-9 * exact, "{} vs {exact}", r.fid);
        let e = fid_with_factor(&g1, &SqrtFactor::eigen(&g1.sigma, d).unwrap(), &g2).unwrap();
        assert!(
            (e.fid - exact).abs() < 1e-9 * exact,
            "eigen route {} vs {exact}",
            e.fid
        );
        let self_fid = fid(&g1, &g1).unwrap().fid;
        eprintln!("self FID {self_fid:e}");
        let trace: f64 = a.iter().sum();
        assert!(
            self_fid.abs() < 1e-9 * 2.0 * trace,
            "{self_fid} vs trace {trace}"
        );
    }

    #[test]
    fn kid_is_near_zero_for_one_distribution_and_positive_for_two() {
        let d = 32;
        let a = random_features(300, d, 1, 0.0);
        let b = random_features(300, d, 2, 0.0);
        let c = random_features(300, d, 3, 0.3);
        let same = kid(&a, &b, d, 20, 100, 0).unwrap();
        let diff = kid(&a, &c, d, 20, 100, 0).unwrap();
        assert!(same.kid.abs() < 3.0 * same.std + 1e-3, "{same:?}");
        assert!(diff.kid > 10.0 * same.std.max(1e-4), "{diff:?} vs {same:?}");
        assert_eq!(kid(&a, &c, d, 20, 100, 0).unwrap(), diff, "seeded");
    }
}
