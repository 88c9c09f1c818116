//! Debug probe: per-timestep v and x0 errors of a checkpoint on built-in-like data.
use adt_plugin_api::{DenoiseArgs, ModelPlugin};
use adt_plugin_tiny::{TinyModel, schedule};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

fn main() {
    let w = std::env::args().nth(1).unwrap();
    let mut m = TinyModel::create(&serde_json::json!({"weights": w})).unwrap();
    let ac = schedule::alphas_cumprod();
    // A flat red square on gray, 8 copies.
    let b = 8;
    let mut x0 = vec![0f32; b * 3 * 32 * 32];
    for i in 0..b {
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let inside = (8..24).contains(&x) && (8..24).contains(&y);
                    let v = if inside { [0.7, -0.7, -0.7][c] } else { 0.0 };
                    x0[((i * 3 + c) * 32 + y) * 32 + x] = v;
                }
            }
        }
    }
    let cond = m
        .encode_prompts(&vec![
            "a large red square on a gray background".to_string();
            b
        ])
        .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for t in [10usize, 100, 300, 500, 700, 900, 999] {
        let (a, s) = (ac[t].sqrt() as f32, (1.0 - ac[t]).sqrt() as f32);
        let eps: Vec<f32> = (0..x0.len())
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let xt: Vec<f32> = x0.iter().zip(&eps).map(|(x, e)| a * x + s * e).collect();
        let shape = [b, 3, 32, 32];
        let args = DenoiseArgs {
            x: adt_plugin_api::TensorRef {
                shape: &shape,
                data: &xt,
            },
            t: &vec![t as f32; b],
            cond,
            uncond: None,
            guidance: 1.0,
            detach_uncond: false,
        };
        let out = m.denoise(&args).unwrap();
        let n = x0.len() as f32;
        let mut ev = 0.0;
        let mut ex = 0.0;
        let mut ex_base = 0.0;
        for j in 0..x0.len() {
            let v = a * eps[j] - s * x0[j];
            ev += (out.data[j] - v).powi(2);
            let x0h = a * xt[j] - s * out.data[j];
            ex += (x0h - x0[j]).powi(2);
            ex_base += x0[j].powi(2);
        }
        println!(
            "t {t:4} a {a:.3} s {s:.3}: v mse {:.4}  x0 mse {:.4} (zero-predictor {:.4})",
            ev / n,
            ex / n,
            ex_base / n
        );
    }
}
