use faer::{Accum, Mat, Par, Side};
use rand::{Rng, SeedableRng};
fn main() {
    let d = 2048;
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let x = Mat::<f64>::from_fn(3000, d, |_, _| r.random::<f64>());
    let mut s = Mat::<f64>::zeros(d, d);
    faer::linalg::matmul::matmul(
        &mut s,
        Accum::Replace,
        x.transpose(),
        &x,
        1.0 / 3000.0,
        Par::rayon(0),
    );
    for _ in 0..2 {
        let t = std::time::Instant::now();
        let e = s.self_adjoint_eigen(Side::Lower).unwrap();
        let t1 = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let mut m = Mat::<f64>::zeros(d, d);
        faer::linalg::matmul::matmul(
            &mut m,
            Accum::Replace,
            e.U().transpose(),
            &s,
            1.0,
            Par::rayon(0),
        );
        let t2 = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let v = s.self_adjoint_eigenvalues(Side::Lower).unwrap();
        let t3 = t.elapsed().as_secs_f64();
        println!(
            "eigen+vectors {t1:.3}s  gemm {t2:.3}s  eigenvalues {t3:.3}s ({})",
            v.len()
        );
    }
}
