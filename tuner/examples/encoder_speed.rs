//! Time a few encoder training steps: `cargo run --release -p adt-tuner --example encoder_speed`.
use adt_tuner::backbone::{EncoderTrainConfig, train_encoder};
fn main() {
    let cfg = EncoderTrainConfig {
        iters: 20,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let vars = train_encoder(&cfg, &candle_core::Device::Cpu, &mut adt_tuner::NoProgress).unwrap();
    println!("{:.3} s/step", t.elapsed().as_secs_f64() / 20.0);
    let enc = adt_tuner::backbone::ShapesEncoder::freeze(&vars).unwrap();
    println!(
        "{:?}",
        adt_tuner::backbone::accuracy(&enc, 500, &candle_core::Device::Cpu).unwrap()
    );
}
