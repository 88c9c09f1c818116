//! Every tokenizer of the three fixture pipelines reproduces the ids transformers recorded:
//! the prompt, the empty negative prompt and three awkward strings (unicode/case/digits,
//! odd whitespace, a prompt longer than the context that must be truncated keeping the end
//! token).

use crate::common::*;
use adt_plugin_sd::tokenizer::PromptTokenizer;

#[test]
fn prompts_tokenize_to_the_recorded_ids() {
    let mut checked = 0;
    for family in ["sd15", "sdxl", "sd3"] {
        let Some(dir) = fixture(family) else { return };
        let refs = reference_json(&dir);
        for (name, rec) in refs["tokenizers"].as_object().unwrap() {
            let len = rec["model_max_length_used"].as_u64().unwrap() as usize;
            let tok = PromptTokenizer::load(&dir.join(name), len).unwrap();
            let ids = |v: &serde_json::Value| -> Vec<u32> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            };
            let prompt = refs["prompt"].as_str().unwrap();
            assert_eq!(
                tok.encode(prompt).unwrap(),
                ids(&rec["prompt_ids"]),
                "{family}/{name} prompt"
            );
            assert_eq!(
                tok.encode("").unwrap(),
                ids(&rec["negative_ids"]),
                "{family}/{name} empty"
            );
            for e in rec["extra_strings"].as_array().unwrap() {
                let text = e["text"].as_str().unwrap();
                assert_eq!(
                    tok.encode(text).unwrap(),
                    ids(&e["ids"]),
                    "{family}/{name} {text:?}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked,
        3 * (1 + 2 + 3),
        "every extra string of every tokenizer"
    );
}
