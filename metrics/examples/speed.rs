//! Quick Inception timing: `cargo run --release -p adt-metrics --example speed [batch] [batches]`.
use adt_metrics::inception::Act;
use adt_metrics::weights::{Fetch, resolve};
use adt_metrics::{Inception, InceptionWeights};
use rand::{Rng, SeedableRng};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let batch = args.first().copied().unwrap_or(16);
    let batches = args.get(1).copied().unwrap_or(4);
    let (p, _) = resolve(None, Fetch::Auto).unwrap();
    let net = Inception::new(&InceptionWeights::load(&p).unwrap());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let x = Act {
        n: batch,
        h: 299,
        w: 299,
        c: 3,
        data: (0..batch * 299 * 299 * 3)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect(),
    };
    net.features(&x).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..batches {
        net.features(&x).unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    println!("{:.2} images/s", (batch * batches) as f64 / dt);
}
