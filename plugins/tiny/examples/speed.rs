//! Rough speed check of one training step of the tiny model on this machine.
use adt_plugin_api::{HostTensor, ModelPlugin, OptimConfig};
use adt_plugin_tiny::TinyModel;

fn main() {
    let b: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let mut m = TinyModel::create(&serde_json::json!({"weights": "random"})).unwrap();
    println!("params {}", m.describe().unwrap().parameters);
    let x0 = HostTensor::zeros(&[b, 3, 32, 32]);
    let c = m.encode_prompts(&["a red circle".to_string()]).unwrap();
    for i in 0..4 {
        let t0 = std::time::Instant::now();
        let l = m.diffusion_loss(x0.view(), c, i, 1.0).unwrap();
        let t1 = t0.elapsed();
        m.step(&OptimConfig::adamw(1e-3)).unwrap();
        println!("loss {l:.4} fwd+bwd {:?} total {:?}", t1, t0.elapsed());
    }
    let t0 = std::time::Instant::now();
    let args = adt_plugin_api::DenoiseArgs {
        x: x0.view(),
        t: &vec![500.0; b],
        cond: c,
        uncond: None,
        guidance: 1.0,
        detach_uncond: false,
    };
    m.denoise(&args).unwrap();
    println!("denoise {:?}", t0.elapsed());
}
