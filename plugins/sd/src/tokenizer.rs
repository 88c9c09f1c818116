//! Prompt → token ids as the diffusers pipelines call their tokenizers: the `tokenizer.json`
//! model with its special tokens, truncated to the context length keeping the final end token,
//! padded with the pad token of `tokenizer_config.json`.

use std::path::Path;

use crate::load::json;
use crate::{Error, Result};

/// A tokenizer folder (`tokenizer/`, `tokenizer_2/`, `tokenizer_3/`).
pub struct PromptTokenizer {
    inner: Option<tokenizers::Tokenizer>,
    len: usize,
    pad: u32,
    /// Hashed mode: (vocabulary size, start id, end id).
    hashed: Option<(u32, u32, u32)>,
}

impl PromptTokenizer {
    /// Load `dir/tokenizer.json` and `dir/tokenizer_config.json`; every prompt becomes `len`
    /// ids (77 for CLIP, 256 for SD3's T5).
    pub fn load(dir: &Path, len: usize) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::Pipeline(format!(
                "{}: missing (only the fast-tokenizer file is read; vocab.json/merges.txt or \
                 spiece.model alone are not enough)",
                path.display()
            )));
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::Pipeline(format!("{}: {e}", path.display())))?;
        let cfg: serde_json::Value = json(&dir.join("tokenizer_config.json"))?;
        let token_name = |v: &serde_json::Value| -> Option<String> {
            v.as_str().map(str::to_string).or_else(|| {
                v.get("content")
                    .and_then(|c| c.as_str())
                    .map(str::to_string)
            })
        };
        let pad_name = token_name(&cfg["pad_token"])
            .or_else(|| token_name(&cfg["eos_token"]))
            .ok_or_else(|| {
                Error::Pipeline(format!(
                    "{}: no pad_token",
                    dir.join("tokenizer_config.json").display()
                ))
            })?;
        let pad = inner.token_to_id(&pad_name).ok_or_else(|| {
            Error::Pipeline(format!(
                "{}: pad token `{pad_name}` is not in the vocabulary",
                dir.display()
            ))
        })?;
        if len < 2 {
            return Err(Error::Config(
                "a context length below 2 cannot hold the special tokens".into(),
            ));
        }
        Ok(PromptTokenizer {
            inner: Some(inner),
            len,
            pad,
            hashed: None,
        })
    }

    /// A stand-in for models with invented weights: each word becomes a hash id below
    /// `vocab − 2`, framed by `start`/`end` (when given), padded with the end id.
    pub fn hashed(len: usize, vocab: u32, start: Option<u32>, end: u32) -> Self {
        PromptTokenizer {
            inner: None,
            len,
            pad: end,
            hashed: Some((vocab, start.unwrap_or(u32::MAX), end)),
        }
    }

    /// The ids of one prompt, exactly `len` long.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = match (&self.inner, self.hashed) {
            (Some(t), _) => t
                .encode(text, true)
                .map_err(|e| Error::Input(format!("cannot tokenize {text:?}: {e}")))?
                .get_ids()
                .to_vec(),
            (None, Some((vocab, start, end))) => {
                let mut v: Vec<u32> = (start != u32::MAX).then_some(start).into_iter().collect();
                v.extend(text.split_whitespace().map(|w| {
                    let h = w.bytes().fold(0x811c_9dc5u32, |h, b| {
                        (h ^ b as u32).wrapping_mul(0x0100_0193)
                    });
                    h % (vocab - 2)
                }));
                v.push(end);
                v
            }
            (None, None) => return Err(Error::Config("tokenizer without a model".into())),
        };
        if ids.len() > self.len {
            // Truncate the content, keep the closing special token (what transformers does
            // when it truncates before adding the special tokens).
            let last = ids[ids.len() - 1];
            ids.truncate(self.len - 1);
            ids.push(last);
        }
        ids.resize(self.len, self.pad);
        Ok(ids)
    }

    /// The context length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never empty (the length is at least 2).
    pub fn is_empty(&self) -> bool {
        false
    }
}
