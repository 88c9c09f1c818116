//! Bootstrap intervals for FID and KID of small sets, computed in Gram space.
//!
//! With `n` images per set and `n ≪ 2048`, every quantity FID needs is a function of the inner
//! products of the feature rows: for centred rows `X` (n₁ × d) and `Y` (n₂ × d), scaled by
//! `1/√(n−1)`, `Σ₁ = XᵀX`, `Σ₂ = YᵀY`, and the non-zero eigenvalues of `Σ₁Σ₂` are the squared
//! singular values of the n₂ × n₁ matrix `YXᵀ`; so `tr √(Σ₁Σ₂)` is its nuclear norm. The mean
//! term and the traces come from the same Gram matrix. [`GramSets`] holds the Gram matrix of
//! every feature row of every set once; a FID or KID of any two index lists (with repeats, as a
//! bootstrap resample has them) then costs a few n × n products and one n × n eigen solve.
//!
//! Intervals are percentile intervals (statrs' quantiles) centred on the estimate
//! ([`centred_interval`]): resampling images with replacement duplicates rows, which lowers a
//! set's rank and shifts a resampled FID upwards by more than its spread at small n (seen: +4
//! to +20 at n = 64); the shift is removed, the spread kept.

use faer::{Accum, Mat, Par, Side};
use statrs::statistics::{Data, OrderStatistics};

use crate::{Error, Result};

/// Feature sets and the Gram matrix (f64) of all their rows.
pub struct GramSets {
    gram: Mat<f64>,
    dim: usize,
    starts: Vec<usize>,
}

impl GramSets {
    /// `sets`: row-major `n_i × dim` f32 features each.
    pub fn new(sets: &[&[f32]], dim: usize) -> Result<Self> {
        let mut starts = vec![0];
        for s in sets {
            if dim == 0 || s.len() % dim != 0 {
                return Err(Error::Mismatch(format!(
                    "a feature set of {} values is not a multiple of {dim}",
                    s.len()
                )));
            }
            starts.push(starts.last().copied().unwrap_or(0) + s.len() / dim);
        }
        let n = *starts.last().unwrap_or(&0);
        let rows = Mat::<f64>::from_fn(n, dim, |i, j| {
            let k = starts.partition_point(|&s| s <= i) - 1;
            sets[k][(i - starts[k]) * dim + j] as f64
        });
        let mut gram = Mat::<f64>::zeros(n, n);
        faer::linalg::matmul::matmul(
            &mut gram,
            Accum::Replace,
            &rows,
            rows.transpose(),
            1.0,
            Par::rayon(0),
        );
        Ok(Self { gram, dim, starts })
    }

    /// The global row indices of set `k`.
    pub fn rows(&self, k: usize) -> std::ops::Range<usize> {
        self.starts[k]..self.starts[k + 1]
    }

    /// Number of sets.
    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    /// Whether there are no sets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn block(&self, a: &[usize], b: &[usize]) -> Mat<f64> {
        Mat::from_fn(a.len(), b.len(), |i, j| self.gram[(a[i], b[j])])
    }

    /// FID between the rows `a` and the rows `b` (global indices; repeats allowed).
    pub fn fid(&self, a: &[usize], b: &[usize]) -> Result<f64> {
        let (na, nb) = (a.len(), b.len());
        if na < 2 || nb < 2 {
            return Err(Error::TooFew {
                what: "FID set".into(),
                n: na.min(nb) as u64,
                min: 2,
            });
        }
        let (kaa, kbb, kab) = (self.block(a, a), self.block(b, b), self.block(a, b));
        let mean = |m: &Mat<f64>| {
            let mut s = 0.0;
            for j in 0..m.ncols() {
                for i in 0..m.nrows() {
                    s += m[(i, j)];
                }
            }
            s / (m.nrows() * m.ncols()) as f64
        };
        let mean_term = mean(&kaa) - 2.0 * mean(&kab) + mean(&kbb);
        // Centring: H K H with H = I − 11ᵀ/n, written as K − row means − column means + mean.
        let centre = |k: &Mat<f64>| -> Mat<f64> {
            let (r, c) = (k.nrows(), k.ncols());
            let rm: Vec<f64> = (0..r)
                .map(|i| (0..c).map(|j| k[(i, j)]).sum::<f64>() / c as f64)
                .collect();
            let cm: Vec<f64> = (0..c)
                .map(|j| (0..r).map(|i| k[(i, j)]).sum::<f64>() / r as f64)
                .collect();
            let m = rm.iter().sum::<f64>() / r as f64;
            Mat::from_fn(r, c, |i, j| k[(i, j)] - rm[i] - cm[j] + m)
        };
        let (ca, cb, cab) = (centre(&kaa), centre(&kbb), centre(&kab));
        let tr = |m: &Mat<f64>| (0..m.nrows()).map(|i| m[(i, i)]).sum::<f64>();
        let tr_a = tr(&ca) / (na as f64 - 1.0);
        let tr_b = tr(&cb) / (nb as f64 - 1.0);
        // M = Xc Ycᵀ / √((na−1)(nb−1)); tr √(Σ₁Σ₂) = Σ √eig(MᵀM).
        let s = 1.0 / ((na as f64 - 1.0) * (nb as f64 - 1.0));
        let mut mtm = Mat::<f64>::zeros(nb, nb);
        faer::linalg::matmul::matmul(&mut mtm, Accum::Replace, cab.transpose(), &cab, s, Par::Seq);
        for j in 0..nb {
            for i in 0..j {
                let v = 0.5 * (mtm[(i, j)] + mtm[(j, i)]);
                mtm[(i, j)] = v;
                mtm[(j, i)] = v;
            }
        }
        let eig = mtm
            .self_adjoint_eigenvalues(Side::Lower)
            .map_err(|e| Error::Linalg(format!("{e:?}")))?;
        let tr_sqrt: f64 = eig.iter().map(|l| l.max(0.0).sqrt()).sum();
        Ok(mean_term + tr_a + tr_b - 2.0 * tr_sqrt)
    }

    /// KID (clean-fid's cubic polynomial kernel, unbiased MMD²) between the rows `a` and `b`,
    /// on the whole sets: what clean-fid's subset estimate is when both sets have the same size
    /// n ≤ 1000 (every subset is then the whole set).
    pub fn kid(&self, a: &[usize], b: &[usize]) -> Result<f64> {
        let m = a.len().min(b.len());
        if m < 2 {
            return Err(Error::TooFew {
                what: "KID set".into(),
                n: m as u64,
                min: 2,
            });
        }
        let (a, b) = (&a[..m], &b[..m]);
        let d = self.dim as f64;
        let k = |x: usize, y: usize| (self.gram[(x, y)] / d + 1.0).powi(3);
        let (mut a_off, mut b_sum) = (0.0, 0.0);
        for i in 0..m {
            for j in 0..m {
                if i != j {
                    a_off += k(a[i], a[j]) + k(b[i], b[j]);
                }
                b_sum += k(b[i], a[j]);
            }
        }
        let t = a_off / (m as f64 - 1.0) - b_sum * 2.0 / m as f64;
        Ok(t / m as f64)
    }
}

/// `reps` bootstrap replicates of the mean of `values` (images resampled with
/// replacement), from a ChaCha8 stream seeded by `seed`.
pub fn mean_replicates(values: &[f64], reps: usize, seed: u64) -> Vec<f64> {
    use rand::SeedableRng;
    if values.is_empty() {
        return Vec::new();
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..reps)
        .map(|_| {
            resample(&mut rng, values.len())
                .iter()
                .map(|&i| values[i])
                .sum::<f64>()
                / values.len() as f64
        })
        .collect()
}

/// `n` indices drawn uniformly from `0..n` with replacement.
pub fn resample(rng: &mut impl rand::Rng, n: usize) -> Vec<usize> {
    (0..n).map(|_| rng.random_range(0..n)).collect()
}

/// Two-stage bootstrap over seeds. `per_seed[s]` holds seed `s`'s sample-level replicates (all
/// of one length). Each of `reps` replicates draws as many seeds as there are, with
/// replacement, and for each draw one of that seed's replicates at random; the replicate is
/// the mean over the draws. The seed-to-seed spread (tuning noise) and the within-seed spread
/// (finite samples) both enter the interval.
pub fn over_seeds(per_seed: &[Vec<f64>], reps: usize, seed: u64) -> Vec<f64> {
    use rand::{Rng, SeedableRng};
    let s = per_seed.len();
    if s == 0 || per_seed.iter().any(|v| v.is_empty()) {
        return Vec::new();
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..reps)
        .map(|_| {
            (0..s)
                .map(|_| {
                    let v = &per_seed[rng.random_range(0..s)];
                    v[rng.random_range(0..v.len())]
                })
                .sum::<f64>()
                / s as f64
        })
        .collect()
}

/// The percentile interval of `values` moved by the replicates' bias (their mean − `point`),
/// so it is centred where the estimate is: `point + (q_lo − mean, q_hi − mean)`. Resampling
/// images with replacement duplicates rows, which shifts every resampled FID (and KID) up by
/// far more than its spread at small n; the spread is the sampling variability we want, the
/// shift an artefact of the duplicates (Efron's bias correction applied to the interval).
pub fn centred_interval(point: f64, values: &[f64], level: f64) -> Result<(f64, f64)> {
    let (lo, hi) = percentile_interval(values, level)?;
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    Ok((point + lo - mean, point + hi - mean))
}

/// The `level` (e.g. 0.95) percentile interval of bootstrap replicates; non-finite replicates
/// are an error (a replicate that failed must not shrink the interval).
pub fn percentile_interval(values: &[f64], level: f64) -> Result<(f64, f64)> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return Err(Error::Mismatch(
            "bootstrap replicates are empty or not finite".into(),
        ));
    }
    let mut data = Data::new(values.to_vec());
    let a = (1.0 - level) / 2.0;
    Ok((data.quantile(a), data.quantile(1.0 - a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{FeatureStats, fid, kid};
    use rand::{Rng, SeedableRng};

    fn features(n: usize, d: usize, seed: u64, shift: f32) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * d)
            .map(|i| rng.random::<f32>() * (1.0 + (i % d) as f32 / d as f32) + shift)
            .collect()
    }

    fn gaussian(f: &[f32], d: usize) -> crate::stats::Gaussian {
        let mut s = FeatureStats::new(d);
        s.add(f);
        s.gaussian()
    }

    #[test]
    fn gram_fid_and_kid_equal_the_covariance_route() {
        let d = 48;
        for (na, nb) in [(20, 20), (30, 17), (60, 70)] {
            let a = features(na, d, 1, 0.0);
            let b = features(nb, d, 2, 0.3);
            let g = GramSets::new(&[&a, &b], d).unwrap();
            let (ra, rb): (Vec<usize>, Vec<usize>) = (g.rows(0).collect(), g.rows(1).collect());
            let want = fid(&gaussian(&a, d), &gaussian(&b, d)).unwrap().fid;
            let got = g.fid(&ra, &rb).unwrap();
            assert!(
                (got - want).abs() <= 1e-8 * want.abs().max(1.0),
                "{na}×{nb}: {got} vs {want}"
            );
            if na == nb {
                let want = kid(&a, &b, d, 3, 1000, 0).unwrap().kid;
                let got = g.kid(&ra, &rb).unwrap();
                assert!((got - want).abs() <= 1e-10, "{got} vs {want}");
            }
        }
    }

    #[test]
    fn repeated_rows_are_the_duplicated_set() {
        let d = 16;
        let a = features(10, d, 3, 0.0);
        let b = features(12, d, 4, 0.1);
        let g = GramSets::new(&[&a, &b], d).unwrap();
        let idx = [0usize, 0, 3, 5, 5, 5, 9];
        let dup: Vec<f32> = idx
            .iter()
            .flat_map(|&i| a[i * d..(i + 1) * d].to_vec())
            .collect();
        let want = fid(&gaussian(&dup, d), &gaussian(&b, d)).unwrap().fid;
        let rb: Vec<usize> = g.rows(1).collect();
        let got = g.fid(&idx, &rb).unwrap();
        assert!(
            (got - want).abs() <= 1e-8 * want.max(1.0),
            "{got} vs {want}"
        );
    }

    #[test]
    fn the_seed_bootstrap_spans_the_seed_means() {
        // Seeds whose sample-level replicates are constant: every replicate is a mean of a
        // multiset of the three seed values, so it lies within their range, hits both ends
        // (all draws the same seed, p = 1/27 each) and averages to their mean.
        let per_seed = vec![vec![1.0; 10], vec![2.0; 10], vec![6.0; 10]];
        let r = over_seeds(&per_seed, 4000, 7);
        assert_eq!(r.len(), 4000);
        assert!(r.iter().all(|&v| (1.0..=6.0).contains(&v)));
        assert!(r.contains(&1.0) && r.contains(&6.0));
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        assert!((mean - 3.0).abs() < 0.1, "{mean}");
        // One seed: the sample-level replicates themselves.
        let r = over_seeds(&[vec![4.0, 5.0]], 1000, 1);
        assert!(r.iter().all(|&v| v == 4.0 || v == 5.0));
        assert!(over_seeds(&[], 10, 0).is_empty());
    }

    #[test]
    fn percentile_interval_brackets_the_middle_mass() {
        let v: Vec<f64> = (0..=1000).map(|i| i as f64).collect();
        let (lo, hi) = percentile_interval(&v, 0.95).unwrap();
        assert!(
            (lo - 25.0).abs() < 1.0 && (hi - 975.0).abs() < 1.0,
            "{lo} {hi}"
        );
        assert!(percentile_interval(&[1.0, f64::NAN], 0.95).is_err());
        assert!(percentile_interval(&[], 0.95).is_err());
        // Replicates shifted by +100 (the duplicates' bias): the centred interval keeps their
        // spread around the estimate.
        let shifted: Vec<f64> = v.iter().map(|x| x + 100.0 - 500.0).collect();
        let (lo, hi) = centred_interval(7.0, &shifted, 0.95).unwrap();
        assert!(
            (lo - (7.0 - 475.0)).abs() < 1.0 && (hi - (7.0 + 475.0)).abs() < 1.0,
            "{lo} {hi}"
        );
    }
}
