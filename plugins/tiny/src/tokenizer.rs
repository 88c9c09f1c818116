//! The tiny model's tokenizer: lower-case words over a fixed vocabulary (the built-in data
//! set's caption words), `<unk>` for anything else, padded/truncated to [`MAX_TOKENS`].

/// Tokens per prompt.
pub const MAX_TOKENS: usize = 12;
/// Padding id (also the whole of the empty prompt, used for classifier-free guidance).
pub const PAD: u32 = 0;
/// Unknown-word id.
pub const UNK: u32 = 1;

/// The vocabulary, in id order after `<pad>` and `<unk>`.
pub const WORDS: [&str; 20] = [
    "a",
    "on",
    "background",
    "gradient",
    "small",
    "large",
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "circle",
    "square",
    "triangle",
    "white",
    "black",
    "gray",
    "navy",
    "beige",
];

/// Vocabulary size including `<pad>` and `<unk>`.
pub const VOCAB: usize = WORDS.len() + 2;

/// Tokenize one prompt into exactly [`MAX_TOKENS`] ids.
pub fn tokenize(prompt: &str) -> Vec<u32> {
    let mut ids: Vec<u32> = prompt
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let w = w.to_lowercase();
            let w = match w.as_str() {
                "grey" => "gray".to_string(),
                _ => w,
            };
            WORDS
                .iter()
                .position(|v| *v == w)
                .map(|i| i as u32 + 2)
                .unwrap_or(UNK)
        })
        .take(MAX_TOKENS)
        .collect();
    ids.resize(MAX_TOKENS, PAD);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_captions() {
        let ids = tokenize("A large Red circle on a navy background!");
        assert_eq!(&ids[..8], &[2, 7, 8, 14, 3, 2, 20, 4]);
        assert!(ids[8..].iter().all(|&i| i == PAD));
        assert_eq!(tokenize(""), vec![PAD; MAX_TOKENS]);
        assert_eq!(tokenize("zebra")[0], UNK);
        assert_eq!(tokenize(&"a ".repeat(40)).len(), MAX_TOKENS);
    }
}
