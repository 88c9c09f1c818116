//! Parity of the CLIP-based metrics with `../shared/fixtures/clip-metrics` (transformers
//! 5.24 `CLIPModel` + `CLIPProcessor` (torchvision and PIL backends), torchmetrics' CLIP
//! score, PickScore's scoring, the LAION aesthetic v2 head, open_clip 3.3 + HPSv2's
//! transform), on the fixture's real photos, within the tolerances its README states.

use std::path::{Path, PathBuf};

use adt_metrics::clip::load::{load_hf, load_open_clip};
use adt_metrics::clip::preprocess::{Processor, Resample};
use adt_metrics::clip::scores;
use adt_metrics::clip::{AestheticHead, ClipTokenizer, Metric, Scorer, normalize_rows};
use candle_core::{Device, Tensor};

fn fixture() -> Option<PathBuf> {
    crate::common::fixture("clip-metrics", "reference.safetensors")
}

struct Ref(Vec<u8>);

impl Ref {
    fn get(&self, name: &str) -> (Vec<usize>, Vec<f64>) {
        let st = safetensors::SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let b = t.data();
        let v: Vec<f64> = match t.dtype() {
            safetensors::Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            safetensors::Dtype::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            safetensors::Dtype::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            safetensors::Dtype::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            d => panic!("{name}: dtype {d:?}"),
        };
        (t.shape().to_vec(), v)
    }
}

fn load_ref(dir: &Path) -> Ref {
    Ref(std::fs::read(dir.join("reference.safetensors")).unwrap())
}

/// The fixture's images in reference order (index N of every tensor), converted to RGB.
fn images(dir: &Path) -> Vec<image::RgbImage> {
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    r["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            image::open(dir.join(i["file"].as_str().unwrap()))
                .unwrap()
                .to_rgb8()
        })
        .collect()
}

fn prompts(dir: &Path) -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("prompts.json")).unwrap()).unwrap()
}

fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// `full[:, :, 1::s, 1::s]` of processed images and the per-image sums.
fn subsample(px: &[Vec<f32>], s: usize) -> (Vec<f64>, Vec<f64>) {
    let mut sub = Vec::new();
    let mut sums = Vec::new();
    for p in px {
        for c in 0..3 {
            for y in (1..224).step_by(s) {
                for x in (1..224).step_by(s) {
                    sub.push(p[c * 224 * 224 + y * 224 + x] as f64);
                }
            }
        }
        sums.push(p.iter().map(|&v| v as f64).sum());
    }
    (sub, sums)
}

fn check(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let d = max_abs(got, want);
    eprintln!("{what}: max |Δ| = {d:.3e} (tol {tol:.0e})");
    assert!(d <= tol, "{what}: max |Δ| {d:e} > {tol:e}");
}

#[test]
fn processors_match_torchvision_pil_and_hpsv2() {
    let Some(dir) = fixture() else { return };
    let r = load_ref(&dir);
    let imgs = images(&dir);
    for (proc, key, sum_key, s, tol) in [
        (
            Processor::openai(Resample::Torchvision),
            "hf_pixel_values_s4",
            "hf_pixel_values_sum",
            4,
            1e-5,
        ),
        (
            Processor::openai(Resample::Pil),
            "hf_pixel_values_pil_s8",
            "hf_pixel_values_pil_sum",
            8,
            1e-5,
        ),
        (
            Processor::hps(true),
            "hps_pixel_values_s4",
            "hps_pixel_values_sum",
            4,
            2e-4,
        ),
        (
            Processor::hps(false),
            "hps_pixel_values_noantialias_s8",
            "hps_pixel_values_noantialias_sum",
            8,
            2e-4,
        ),
    ] {
        let px: Vec<Vec<f32>> = imgs.iter().map(|i| proc.apply(i)).collect();
        let (sub, sums) = subsample(&px, s);
        check(key, &sub, &r.get(key).1, tol);
        // The checksum over 150 528 values: float summation order allows ~1e-2.
        check(sum_key, &sums, &r.get(sum_key).1, 0.05);
    }
}

#[test]
fn transformers_clip_towers_and_scores_match() {
    let Some(dir) = fixture() else { return };
    let r = load_ref(&dir);
    let dev = Device::Cpu;
    let (model, prov) = load_hf(&dir.join("hf-clip"), &dev).unwrap();
    assert_eq!(prov.family, "transformers");
    assert!(
        (model.logit_scale() - 4.3).abs() < 1e-6,
        "logit_scale from the weights"
    );

    // Tokens: processor(text=prompts, padding=True).
    let tok = ClipTokenizer::from_hf(&dir.join("hf-clip/tokenizer.json"), 77).unwrap();
    let ps = prompts(&dir);
    let ids = tok.encode(&ps).unwrap();
    let want_ids = r.get("hf_input_ids").1;
    let got_ids: Vec<f64> = ids.ids.iter().flatten().map(|&i| i as f64).collect();
    assert_eq!(got_ids, want_ids, "token ids");
    let (shape, mask) = r.get("hf_attention_mask");
    let lens: Vec<usize> = mask
        .chunks(shape[1])
        .map(|row| row.iter().filter(|&&m| m == 1.0).count())
        .collect();
    assert_eq!(ids.lengths.as_deref(), Some(&lens[..]), "attention mask");

    // Vision from the reference's own processor outputs is not stored in full, so the
    // towers run on our torchvision-backend pixels (checked above to 1e-5).
    let imgs = images(&dir);
    let proc = Processor::openai(Resample::Torchvision);
    let px: Vec<f32> = imgs.iter().flat_map(|i| proc.apply(i)).collect();
    let v = model.encode_images(&px, imgs.len()).unwrap();
    check(
        "hf_vision_last_hidden_state",
        &flat(&v.last_hidden),
        &r.get("hf_vision_last_hidden_state").1,
        1e-4,
    );
    check(
        "hf_vision_pooled",
        &flat(&v.pooled),
        &r.get("hf_vision_pooled").1,
        1e-4,
    );
    check(
        "hf_image_embeds",
        &flat(&v.embeds),
        &r.get("hf_image_embeds").1,
        1e-4,
    );
    let t = model.encode_text(&ids).unwrap();
    check(
        "hf_text_last_hidden_state",
        &flat(&t.last_hidden),
        &r.get("hf_text_last_hidden_state").1,
        1e-4,
    );
    check(
        "hf_text_pooled",
        &flat(&t.pooled),
        &r.get("hf_text_pooled").1,
        1e-4,
    );
    check(
        "hf_text_embeds",
        &flat(&t.embeds),
        &r.get("hf_text_embeds").1,
        1e-4,
    );

    let img_n = normalize_rows(&v.embeds).unwrap();
    let txt_n = normalize_rows(&t.embeds).unwrap();
    check(
        "hf_image_embeds_normalized",
        &flat(&img_n),
        &r.get("hf_image_embeds_normalized").1,
        1e-5,
    );
    check(
        "hf_text_embeds_normalized",
        &flat(&txt_n),
        &r.get("hf_text_embeds_normalized").1,
        1e-5,
    );
    let cos: Vec<f64> = scores::cosines(&img_n, &txt_n)
        .unwrap()
        .into_iter()
        .flatten()
        .map(f64::from)
        .collect();
    check("cos_image_text", &cos, &r.get("cos_image_text").1, 1e-5);
    let logits: Vec<f64> = cos.iter().map(|c| c * (4.3f64).exp()).collect();
    check(
        "hf_logits_per_image",
        &logits,
        &r.get("hf_logits_per_image").1,
        1e-3,
    );

    // CLIP score (torchmetrics): per pair, paired 0..2, the clamped mean.
    let per_pair: Vec<f64> = cos.iter().map(|c| 100.0 * c).collect();
    check(
        "clipscore_per_pair",
        &per_pair,
        &r.get("clipscore_per_pair").1,
        1e-3,
    );
    let three = scores::clip_score_pairs(&img_n.narrow(0, 0, 3).unwrap(), &txt_n).unwrap();
    check(
        "clipscore_paired_3",
        &three,
        &r.get("clipscore_paired_3").1,
        1e-3,
    );
    let metric = scores::clip_score_metric(&three);
    check(
        "clipscore_torchmetrics_3",
        &[metric],
        &r.get("clipscore_torchmetrics_3").1,
        1e-3,
    );

    // PickScore: logits [prompts, images], softmax over images.
    let pl = scores::pickscore_logits(&img_n, &txt_n, model.logit_scale()).unwrap();
    let pl_flat: Vec<f64> = pl.iter().flatten().map(|&v| v as f64).collect();
    check(
        "pickscore_logits",
        &pl_flat,
        &r.get("pickscore_logits").1,
        1e-3,
    );
    let probs: Vec<f64> = pl
        .iter()
        .flat_map(|row| scores::softmax(row))
        .map(f64::from)
        .collect();
    check("pickscore_probs", &probs, &r.get("pickscore_probs").1, 1e-5);

    // Aesthetic head on the normalised image embeddings.
    let head = AestheticHead::load(&dir.join("aesthetic-head.safetensors"), &dev).unwrap();
    let aes = head.forward(&img_n).unwrap();
    check("aesthetic_score", &aes, &r.get("aesthetic_score").1, 1e-5);

    // The PIL-backend embeddings.
    let pil = Processor::openai(Resample::Pil);
    let px: Vec<f32> = imgs.iter().flat_map(|i| pil.apply(i)).collect();
    let e = normalize_rows(&model.encode_images(&px, imgs.len()).unwrap().embeds).unwrap();
    check(
        "hf_image_embeds_normalized_from_pil",
        &flat(&e),
        &r.get("hf_image_embeds_normalized_from_pil").1,
        1e-5,
    );

    // The same numbers through the Scorer (what `adt-bench score` runs).
    let s = Scorer::from_parts(Metric::ClipScore, model, Some(tok), proc, None);
    let three_prompts: Vec<String> = ps.clone();
    let got = s.score(&imgs[..3], Some(&three_prompts), 2).unwrap();
    check(
        "Scorer clipscore per sample",
        &got.per_sample,
        &r.get("clipscore_paired_3").1,
        1e-3,
    );
    check(
        "Scorer clipscore value",
        &[got.value],
        &r.get("clipscore_torchmetrics_3").1,
        1e-3,
    );
}

#[test]
fn open_clip_hpsv2_matches() {
    let Some(dir) = fixture() else { return };
    let r = load_ref(&dir);
    let dev = Device::Cpu;
    let (model, prov) = load_open_clip(
        &dir.join("open-clip/open_clip_model.safetensors"),
        Some(&dir.join("open-clip/tiny-hpsv2-vit.json")),
        &dev,
    )
    .unwrap();
    assert_eq!(prov.family, "open_clip");
    let imgs = images(&dir);
    let proc = Processor::hps(true);
    let px: Vec<f32> = imgs.iter().flat_map(|i| proc.apply(i)).collect();
    let img = model.encode_images(&px, imgs.len()).unwrap().embeds;
    check(
        "oc_image_features",
        &flat(&img),
        &r.get("oc_image_features").1,
        1e-4,
    );
    let img_n = normalize_rows(&img).unwrap();
    check(
        "oc_image_features_normalized",
        &flat(&img_n),
        &r.get("oc_image_features_normalized").1,
        1e-5,
    );

    // Text from the reference token ids (the tokenizer is checked in its own test).
    let (shape, ids) = r.get("oc_input_ids");
    let ids = adt_metrics::clip::Tokens {
        ids: ids
            .chunks(shape[1])
            .map(|r| r.iter().map(|&v| v as u32).collect())
            .collect(),
        lengths: None,
    };
    let txt = model.encode_text(&ids).unwrap().embeds;
    check(
        "oc_text_features",
        &flat(&txt),
        &r.get("oc_text_features").1,
        1e-4,
    );
    let txt_n = normalize_rows(&txt).unwrap();
    check(
        "oc_text_features_normalized",
        &flat(&txt_n),
        &r.get("oc_text_features_normalized").1,
        1e-5,
    );
    let all: Vec<f64> = scores::cosines(&img_n, &txt_n)
        .unwrap()
        .into_iter()
        .flatten()
        .map(f64::from)
        .collect();
    check(
        "hpsv2_score_all_prompts",
        &all,
        &r.get("hpsv2_score_all_prompts").1,
        1e-5,
    );
    let p0 = txt_n
        .narrow(0, 0, 1)
        .unwrap()
        .repeat((imgs.len(), 1))
        .unwrap();
    let diag = scores::hps_pairs(&img_n, &p0).unwrap();
    check("hpsv2_score", &diag, &r.get("hpsv2_score").1, 1e-5);
    check(
        "oc_logit_scale",
        &[model.logit_scale() as f64],
        &r.get("oc_logit_scale").1,
        1e-6,
    );
}

#[test]
fn open_clip_tokenizer_matches_the_real_vocabulary() {
    let Some(dir) = fixture() else { return };
    let bpe = match adt_metrics::clip::open_clip_bpe(None) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIPPED: open_clip's BPE vocabulary is not available: {e}");
            return;
        }
    };
    let tok = ClipTokenizer::from_open_clip_bpe(&bpe, 77).unwrap();
    let r = load_ref(&dir);
    let ids = tok.encode(&prompts(&dir)).unwrap();
    assert_eq!(ids.lengths, None, "open_clip passes no attention mask");
    let got: Vec<f64> = ids.ids.iter().flatten().map(|&i| i as f64).collect();
    assert_eq!(got, r.get("oc_input_ids").1, "open_clip token ids");
    // Truncation keeps <eot> last; HTML entities are unescaped like open_clip's basic_clean.
    let long = vec!["word ".repeat(100)];
    let row = &tok.encode(&long).unwrap().ids[0];
    assert_eq!(row.len(), 77);
    assert_eq!((row[0], row[76]), (49406, 49407));
    let a = tok
        .encode(&["salt &amp; pepper".into(), "salt & pepper".into()])
        .unwrap();
    assert_eq!(a.ids[0], a.ids[1]);
}

#[test]
fn wrong_family_checkpoints_are_refused_by_name() {
    let Some(dir) = fixture() else { return };
    let dev = Device::Cpu;
    // An open_clip file where a transformers folder is expected, and the reverse.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.join("hf-clip/config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        dir.join("open-clip/open_clip_model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    /// The error's message (the call must fail).
    fn message<T>(r: adt_metrics::Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }
    let e = message(load_hf(tmp.path(), &dev));
    assert!(e.contains("open_clip checkpoint"), "{e}");
    let oc = |p: &str| message(load_open_clip(&dir.join(p), None, &dev));
    let e = oc("hf-clip/model.safetensors");
    assert!(e.contains("transformers CLIPModel"), "{e}");
    // The aesthetic head is neither.
    let e = oc("aesthetic-head.safetensors");
    assert!(e.contains("aesthetic-predictor head"), "{e}");
    // A CLIP model given as the aesthetic head.
    let e = message(AestheticHead::load(
        &dir.join("hf-clip/model.safetensors"),
        &dev,
    ));
    assert!(e.contains("not the aesthetic head"), "{e}");
    // An open_clip file without a config and no embedded config of its size.
    let e = oc("open-clip/open_clip_model.safetensors");
    assert!(e.contains("open_clip_config.json"), "{e}");
}

#[test]
fn hpsv2_style_torch_checkpoints_are_read() {
    // `{'state_dict': {'module.' + name: float16}}` as HPSv2's *_compressed.pt files.
    let Some(dir) = fixture() else { return };
    let pt =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/open-clip-compressed-f16.pt");
    let got = adt_metrics::clip::load::read_file(&pt).unwrap();
    let want =
        adt_metrics::clip::load::read_file(&dir.join("open-clip/open_clip_model.safetensors"))
            .unwrap();
    assert_eq!(got.len(), 7, "{:?}", got.keys().collect::<Vec<_>>());
    for (name, r) in &got {
        let w = want
            .get(name)
            .unwrap_or_else(|| panic!("`{name}`: module. prefix not stripped?"));
        assert_eq!(r.dims(), w.dims(), "{name}");
        let f32s = |t: &Tensor| -> Vec<f32> {
            t.to_dtype(candle_core::DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        for (a, b) in f32s(r).iter().zip(&f32s(w)) {
            // float16 storage: relative rounding 2^-11.
            assert!((a - b).abs() <= b.abs() * 1e-3 + 1e-6, "{name}: {a} vs {b}");
        }
    }
}

#[test]
fn a_tokenizer_file_with_its_own_padding_gives_the_same_ids() {
    let Some(dir) = fixture() else { return };
    let src = dir.join("hf-clip/tokenizer.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&src).unwrap()).unwrap();
    v["padding"] = serde_json::json!({"strategy": {"Fixed": 77}, "direction": "Right",
        "pad_to_multiple_of": null, "pad_id": 619, "pad_type_id": 0, "pad_token": "<|endoftext|>"});
    v["truncation"] = serde_json::json!({"direction": "Right", "max_length": 5,
        "strategy": "LongestFirst", "stride": 0});
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("tokenizer.json");
    std::fs::write(&p, v.to_string()).unwrap();
    let ps = prompts(&dir);
    let a = ClipTokenizer::from_hf(&src, 77)
        .unwrap()
        .encode(&ps)
        .unwrap();
    let b = ClipTokenizer::from_hf(&p, 77).unwrap().encode(&ps).unwrap();
    assert_eq!(a, b);
}
