//! The ADT loop on the tiny model through the plugin table: a resumed run is bitwise the
//! uninterrupted one; a diverging run stops with a clear error and never writes a non-finite
//! checkpoint.

use adt_plugin_api::{NoiseSchedule, PlanRequest};
use adt_plugin_host::{Kind, Model, Registry};
use adt_tuner::adt::{DiscInput, DiscSchedule, Method, StartDist, TuneConfig, Tuner, tune};
use adt_tuner::backbone::ShapesEncoder;
use adt_tuner::disc::{DiscConfig, DiscLoss, Discriminator};
use adt_tuner::paths::GradPath;
use candle_core::Device;

fn registry() -> Registry {
    Registry::with_builtins(&[adt_plugin_tiny::header, adt_plugin_samplers::header]).unwrap()
}

fn model(reg: &Registry) -> Model {
    Model::create(
        reg.find(Kind::Model, "tiny").unwrap(),
        &serde_json::json!({}),
    )
    .unwrap()
}

fn config(m: &Model, iters: u64, lr: f64) -> TuneConfig {
    let d = m.describe().unwrap();
    assert!(matches!(d.schedule, NoiseSchedule::Discrete { .. }));
    TuneConfig {
        method: Method::Adt,
        iters,
        batch: 4,
        seed: 7,
        plan: PlanRequest {
            sampler: "ddim".into(),
            steps: 4,
            schedule: d.schedule.clone(),
            parameterization: d.parameterization,
            spacing: Some(d.default_spacing),
            steps_offset: d.steps_offset,
            start_index: 0,
            eta: 0.0,
            set_alpha_to_one: d.set_alpha_to_one,
            img2img: true,
        },
        start: StartDist::Uniform,
        k: 2,
        k_random: false,
        path: GradPath::Adt,
        guidance: 2.0,
        detach_uncond: false,
        lambda: 0.5,
        h: 2,
        lr,
        warmup: 1,
        d_warmup: 0,
        clip: 1.0,
        accum: 1,
        disc: DiscConfig::default(),
        max_non_finite: 2,
        checkpoint_every: 2,
        caption_dropout: 0.1,
        d_schedule: DiscSchedule::Constant,
        d_input: DiscInput::Quantized,
        d_steps: 1,
        ema: None,
    }
}

fn run(
    out: &std::path::Path,
    iters: u64,
    stop_after: Option<u64>,
    lr: f64,
) -> adt_tuner::Result<()> {
    run_with(out, iters, stop_after, lr, |_| {}).map(|_| ())
}

fn run_with(
    out: &std::path::Path,
    iters: u64,
    stop_after: Option<u64>,
    lr: f64,
    edit: impl FnOnce(&mut TuneConfig),
) -> adt_tuner::Result<Vec<adt_tuner::adt::LogRow>> {
    let reg = registry();
    let mut m = model(&reg);
    let mut cfg = config(&m, iters, lr);
    edit(&mut cfg);
    let samplers =
        adt_plugin_host::Samplers::new(reg.find(Kind::Sampler, "builtin-samplers").unwrap())
            .unwrap();
    let dev = Device::Cpu;
    let spec = adt_datasets::DataSpec::parse("builtin:shapes").unwrap();
    // A fixed random encoder: these tests are about the loop, not the backbone's quality.
    let enc = ShapesEncoder::freeze(&ShapesEncoder::init_vars(3, &dev).unwrap()).unwrap();
    let mut t = Tuner {
        model: &mut m,
        samplers: &samplers,
        disc: Some(Discriminator::new(Box::new(enc), cfg.disc.clone(), 7, &dev).unwrap()),
        data: adt_tuner::data::Batcher::new(&spec, 32).unwrap(),
        device: dev,
    };
    tune(
        &mut t,
        &cfg,
        out,
        stop_after,
        false,
        &mut adt_tuner::NoProgress,
    )
}

/// The whole generator chain — discriminator gradient, decode VJP, one denoise VJP per trained
/// evaluation, the optimizer — descends the adversarial loss: against a frozen discriminator
/// (learning rate 0) and without the diffusion term, L_adv must fall.
/// With the images quantised as the evaluation sees them (the gradient straight through the
/// rounding) it must still fall, more slowly: steps smaller than one 8-bit level do not move
/// the discriminator's input.
#[test]
fn generator_updates_descend_the_adversarial_loss_of_a_frozen_discriminator() {
    for (input, factor) in [(DiscInput::Raw, 0.75), (DiscInput::Quantized, 0.95)] {
        let out = tempfile::tempdir().unwrap();
        let rows = run_with(out.path(), 8, None, 1e-3, |c| {
            c.h = 1;
            c.lambda = 0.0;
            c.disc.lr = 0.0;
            c.disc.loss = DiscLoss::NonSaturating;
            c.d_input = input;
        })
        .unwrap();
        let adv: Vec<f64> = rows.iter().map(|r| r.loss_adv).collect();
        assert!(adv.iter().all(|v| v.is_finite()), "{adv:?}");
        let first = (adv[0] + adv[1]) / 2.0;
        let last = (adv[5] + adv[6] + adv[7]) / 3.0;
        assert!(
            last < factor * first,
            "{input:?}: L_adv did not fall: {adv:?}"
        );
    }
}

/// The model, optimizer and discriminator checkpoints of two runs are byte-identical.
fn assert_same_checkpoint(a: &std::path::Path, b: &std::path::Path, context: &str) {
    for f in [
        "checkpoint/model/model.safetensors",
        "checkpoint/model/optimizer.safetensors",
        "checkpoint/disc.safetensors",
    ] {
        let x = std::fs::read(a.join(f)).unwrap();
        let y = std::fs::read(b.join(f)).unwrap();
        assert!(
            x == y,
            "{context}{f} differs between the resumed and the uninterrupted run"
        );
    }
}

#[test]
fn a_resumed_run_is_bitwise_the_uninterrupted_one() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    run(a.path(), 6, None, 1e-4).unwrap();
    run(b.path(), 6, Some(4), 1e-4).unwrap();
    assert!(b.path().join("checkpoint/state.json").exists());
    run(b.path(), 6, None, 1e-4).unwrap();
    assert_same_checkpoint(a.path(), b.path(), "");
    let la = std::fs::read_to_string(a.path().join("log.csv")).unwrap();
    let lb = std::fs::read_to_string(b.path().join("log.csv")).unwrap();
    let strip = |s: &str| -> Vec<String> {
        // The last column is wall time.
        s.lines()
            .map(|l| l.rsplit_once(',').map_or(l, |x| x.0).to_string())
            .collect()
    };
    assert_eq!(strip(&la), strip(&lb));
    assert_eq!(la.lines().count(), 7, "header + 6 rows");
}

/// A stop asked for inside a generator accumulation window (H 3, two accumulated iterations)
/// runs on to the window's update, so the resumed run is the uninterrupted one bit for bit.
#[test]
fn a_stop_inside_an_accumulation_window_resumes_exactly() {
    let window = |c: &mut TuneConfig| {
        c.h = 3;
        c.accum = 2;
        c.checkpoint_every = 100;
    };
    let a = tempfile::tempdir().unwrap();
    run_with(a.path(), 6, None, 1e-3, window).unwrap();
    // Iteration 2 (0-based 1) sits inside the first window: the stop moves on to its update
    // (after 3), and the resume runs the second window.
    let b = tempfile::tempdir().unwrap();
    let first = run_with(b.path(), 6, Some(2), 1e-3, window).unwrap();
    assert_eq!(first.len(), 3, "the stop after 2 runs on to 3");
    run_with(b.path(), 6, None, 1e-3, window).unwrap();
    assert_same_checkpoint(a.path(), b.path(), "stop 2: ");
}

/// The moving average of the tuned weights: written beside them, not the weights themselves,
/// and a resumed run reproduces it bit for bit.
#[test]
fn the_moving_average_is_saved_and_resumes_bitwise() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ema = |c: &mut TuneConfig| c.ema = Some(0.9);
    run_with(a.path(), 6, None, 1e-3, ema).unwrap();
    run_with(b.path(), 6, Some(3), 1e-3, ema).unwrap();
    run_with(b.path(), 6, None, 1e-3, ema).unwrap();
    let read = |d: &std::path::Path, f: &str| std::fs::read(d.join("checkpoint/model").join(f));
    for f in [
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
    ] {
        assert!(
            read(a.path(), f).unwrap() == read(b.path(), f).unwrap(),
            "{f} differs between the resumed and the uninterrupted run"
        );
    }
    let tensors = |bytes: &[u8]| -> Vec<f32> {
        let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        names
            .iter()
            .flat_map(|n| {
                st.tensor(n)
                    .unwrap()
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let w = tensors(&read(a.path(), "model.safetensors").unwrap());
    let e = tensors(&read(a.path(), "ema.safetensors").unwrap());
    assert_eq!(w.len(), e.len());
    assert!(
        w.iter().zip(&e).any(|(x, y)| x != y),
        "the average must lag the weights"
    );
    // Without the option no average is kept.
    let c = tempfile::tempdir().unwrap();
    run(c.path(), 2, None, 1e-3).unwrap();
    assert!(read(c.path(), "ema.safetensors").is_err());
}

#[test]
fn divergence_stops_with_a_clear_error_and_no_non_finite_checkpoint() {
    let out = tempfile::tempdir().unwrap();
    let e = run(out.path(), 40, None, 1e30).unwrap_err().to_string();
    assert!(e.contains("non-finite"), "{e}");
    // Whatever checkpoint exists holds finite weights only.
    if let Ok(bytes) = std::fs::read(out.path().join("checkpoint/model/model.safetensors")) {
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, t) in st.tensors() {
            let finite = match t.dtype() {
                safetensors::Dtype::F32 => t
                    .data()
                    .chunks_exact(4)
                    .all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()),
                _ => true,
            };
            assert!(finite, "{name} is not finite in the checkpoint");
        }
    }
}

/// `d_steps` discriminator updates per iteration: the checkpoint counts them, and the run
/// differs from one step per iteration.
#[test]
fn several_discriminator_steps_per_iteration() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let r1 = run_with(one.path(), 3, None, 1e-4, |_| {}).unwrap();
    let r2 = run_with(two.path(), 3, None, 1e-4, |c| c.d_steps = 2).unwrap();
    let steps = |d: &std::path::Path| -> u64 {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(d.join("checkpoint/state.json")).unwrap(),
        )
        .unwrap();
        v["disc_steps"].as_u64().unwrap()
    };
    assert_eq!((steps(one.path()), steps(two.path())), (3, 6));
    assert_ne!(r1[2].loss_d, r2[2].loss_d);
}
