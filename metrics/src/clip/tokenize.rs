//! CLIP tokenizers: a transformers `tokenizer.json` (CLIP score, PickScore, the aesthetic
//! backbone needs none) or open_clip's `SimpleTokenizer` built from its
//! `bpe_simple_vocab_16e6.txt.gz` (HPSv2).

use std::path::Path;

use tokenizers::Tokenizer;

use crate::{Error, Result};

/// How token rows are padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// `processor(text=…, padding=True)`: to the longest row, with the end token; at most
    /// the context length (longer prompts are truncated, keeping the end token).
    Longest,
    /// open_clip: always the full context, padded with 0, the last token forced to `<eot>`.
    Context,
}

/// Token rows of equal length, with each row's unpadded length where the anchor passes an
/// attention mask (transformers' `padding=True`; open_clip passes none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Ids `[B][N]`.
    pub ids: Vec<Vec<u32>>,
    /// Unpadded length of each row (the attention mask's ones), when masked.
    pub lengths: Option<Vec<usize>>,
}

/// A CLIP tokenizer with its special ids and padding rule.
pub struct ClipTokenizer {
    tok: Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    context: usize,
    padding: Padding,
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Clip(format!("tokenizer {}: {e}", path.display()))
}

impl ClipTokenizer {
    /// A transformers CLIP `tokenizer.json` (with `tokenizer_config.json` beside it naming
    /// the pad token when present).
    pub fn from_hf(path: &Path, context: usize) -> Result<Self> {
        let mut tok = Tokenizer::from_file(path).map_err(|e| tok_err(path, e))?;
        // Padding and truncation are applied here, as the processor does, never by the file's
        // own settings.
        tok.with_padding(None);
        tok.with_truncation(None).map_err(|e| tok_err(path, e))?;
        let id = |s: &str| tok.token_to_id(s);
        let bos = id("<|startoftext|>").ok_or_else(|| tok_err(path, "no <|startoftext|> token"))?;
        let eos = id("<|endoftext|>").ok_or_else(|| tok_err(path, "no <|endoftext|> token"))?;
        let cfg = path.with_file_name("tokenizer_config.json");
        let pad = std::fs::read_to_string(&cfg)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v["pad_token"]
                    .as_str()
                    .or_else(|| v["pad_token"]["content"].as_str())
                    .and_then(id)
            })
            .unwrap_or(eos);
        Ok(ClipTokenizer {
            tok,
            bos,
            eos,
            pad,
            context,
            padding: Padding::Longest,
        })
    }

    /// open_clip's `SimpleTokenizer` from its BPE merges file (`.txt` or `.txt.gz`): the 256
    /// byte symbols, the same with `</w>`, the first 48 894 merges, `<start_of_text>`,
    /// `<end_of_text>`; ftfy-like cleaning (HTML unescape, whitespace collapse), lower case.
    pub fn from_open_clip_bpe(path: &Path, context: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            use std::io::Read;
            let mut s = String::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_string(&mut s)
                .map_err(|e| tok_err(path, format!("not a readable gzip file: {e}")))?;
            s
        } else {
            String::from_utf8(bytes).map_err(|e| tok_err(path, e))?
        };
        let lines: Vec<&str> = text.lines().collect();
        const N_MERGES: usize = 49152 - 256 - 2;
        if lines.len() < N_MERGES + 1 {
            return Err(tok_err(
                path,
                format!(
                    "{} lines; open_clip's bpe_simple_vocab_16e6 has {} merges",
                    lines.len(),
                    N_MERGES
                ),
            ));
        }
        let merges: Vec<(String, String)> = lines[1..=N_MERGES]
            .iter()
            .map(|l| {
                let (a, b) = l.split_once(' ').unwrap_or((l, ""));
                (a.to_string(), b.to_string())
            })
            .collect();
        let mut vocab: Vec<String> = bytes_to_unicode().iter().map(|c| c.to_string()).collect();
        let with_w: Vec<String> = vocab.iter().map(|v| format!("{v}</w>")).collect();
        vocab.extend(with_w);
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push("<start_of_text>".into());
        vocab.push("<end_of_text>".into());
        let vocab_map: serde_json::Map<String, serde_json::Value> = vocab
            .iter()
            .enumerate()
            .map(|(i, v)| (v.clone(), serde_json::Value::from(i as u64)))
            .collect();
        let merges_json: Vec<[String; 2]> = merges.into_iter().map(|(a, b)| [a, b]).collect();
        let n = vocab.len() as u32;
        let spec = serde_json::json!({
            "version": "1.0",
            "added_tokens": [
                {"id": n - 2, "content": "<start_of_text>", "single_word": false, "lstrip": false,
                 "rstrip": false, "normalized": false, "special": true},
                {"id": n - 1, "content": "<end_of_text>", "single_word": false, "lstrip": false,
                 "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                {"type": "Strip", "strip_left": true, "strip_right": true},
                {"type": "Lowercase"}
            ]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex":
                    "<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
                 "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab_map, "merges": merges_json}
        });
        let tok: Tokenizer = spec
            .to_string()
            .parse()
            .map_err(|e| tok_err(path, format!("cannot build the BPE: {e}")))?;
        Ok(ClipTokenizer {
            tok,
            bos: n - 2,
            eos: n - 1,
            pad: 0,
            context,
            padding: Padding::Context,
        })
    }

    /// Token ids of the prompts, as the anchor pads them (see [`Padding`]).
    pub fn encode(&self, prompts: &[String]) -> Result<Tokens> {
        let mut rows = Vec::with_capacity(prompts.len());
        for p in prompts {
            let text = match self.padding {
                Padding::Context => clean_open_clip(p),
                Padding::Longest => p.clone(),
            };
            let enc = self
                .tok
                .encode(text.as_str(), false)
                .map_err(|e| Error::Clip(format!("cannot tokenize {p:?}: {e}")))?;
            let mut ids = vec![self.bos];
            ids.extend_from_slice(enc.get_ids());
            ids.push(self.eos);
            if ids.len() > self.context {
                ids.truncate(self.context);
                ids[self.context - 1] = self.eos;
            }
            rows.push(ids);
        }
        let width = match self.padding {
            Padding::Context => self.context,
            Padding::Longest => rows.iter().map(Vec::len).max().unwrap_or(0),
        };
        let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
        for r in &mut rows {
            r.resize(width, self.pad);
        }
        Ok(Tokens {
            ids: rows,
            lengths: (self.padding == Padding::Longest).then_some(lengths),
        })
    }
}

/// open_clip's `basic_clean` + `whitespace_clean` (ftfy's fixes of mojibake are not
/// reproduced; ordinary prompts are unaffected): HTML entities unescaped twice, whitespace
/// collapsed, trimmed. Lower-casing is the tokenizer's normaliser.
fn clean_open_clip(s: &str) -> String {
    let u = html_unescape(&html_unescape(s));
    u.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(';').filter(|&e| e <= 10);
        let rep = end.and_then(|e| {
            let ent = &rest[1..e];
            let c = match ent {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => ent
                    .strip_prefix("#x")
                    .or_else(|| ent.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, e))
        });
        match rep {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// GPT-2's byte → printable-character table, in open_clip's order.
fn bytes_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    cs.into_iter().filter_map(char::from_u32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_and_whitespace_are_cleaned() {
        assert_eq!(
            clean_open_clip("  a &amp;amp; b\n\tc &#65; &bogus "),
            "a & b c A &bogus"
        );
    }

    #[test]
    fn byte_table_has_256_distinct_symbols() {
        let t = bytes_to_unicode();
        assert_eq!(t.len(), 256);
        assert_eq!(t[0], '!');
        let mut s = t.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 256);
    }
}
