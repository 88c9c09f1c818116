//! What a run evaluates on: the prompts (a prompt file, or the captions of an evaluation data
//! source), their categories where the file has them (PartiPrompts' `Category` and
//! `Challenge`), and the FID reference (the evaluation source's images, or reference
//! statistics from an `.npz`). Every input is read with bounds and hashed for the manifest.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};

use crate::exit::DataError;

/// The largest prompt file read (bytes).
pub const MAX_PROMPT_FILE: u64 = 64 << 20;
/// The most records an evaluation source is read for (the seeded subset draws from these).
pub const MAX_POOL: usize = 1 << 16;

/// Which N of the prompts (or evaluation records) a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subset {
    /// The first N, in file order.
    First,
    /// N drawn without replacement with this seed (kept in file order).
    Seeded(u64),
}

impl std::str::FromStr for Subset {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if s == "first" {
            return Ok(Subset::First);
        }
        match s.strip_prefix("seeded:").map(str::parse) {
            Some(Ok(seed)) => Ok(Subset::Seeded(seed)),
            _ => bail!("the evaluation subset is `first` or `seeded:SEED`, not `{s}`"),
        }
    }
}

impl std::fmt::Display for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subset::First => f.write_str("first"),
            Subset::Seeded(s) => write!(f, "seeded:{s}"),
        }
    }
}

impl Subset {
    /// The indices of `n` of `total` items, ascending.
    pub fn pick(self, total: usize, n: usize) -> Vec<usize> {
        let n = n.min(total);
        match self {
            Subset::First => (0..n).collect(),
            Subset::Seeded(seed) => {
                let mut idx: Vec<usize> = (0..total).collect();
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                idx.shuffle(&mut rng);
                let mut v = idx[..n].to_vec();
                v.sort_unstable();
                v
            }
        }
    }
}

/// Prompts with their categories.
#[derive(Debug, Clone, Default)]
pub struct PromptSet {
    /// One prompt per image.
    pub prompts: Vec<String>,
    /// Category fields (e.g. `Category`, `Challenge`), each with one value per prompt.
    pub categories: Vec<(String, Vec<String>)>,
}

impl PromptSet {
    /// The same prompts restricted to `idx`.
    pub fn select(&self, idx: &[usize]) -> PromptSet {
        PromptSet {
            prompts: idx.iter().map(|&i| self.prompts[i].clone()).collect(),
            categories: self
                .categories
                .iter()
                .map(|(f, v)| (f.clone(), idx.iter().map(|&i| v[i].clone()).collect()))
                .collect(),
        }
    }

    /// SHA-256 of the prompts (each followed by a NUL), hex.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        for p in &self.prompts {
            h.update(p.as_bytes());
            h.update([0u8]);
        }
        hex(&h.finalize())
    }
}

/// Hex digits of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Column names taken as the prompt when none is named, in order.
const PROMPT_COLUMNS: &[&str] = &["Prompt", "prompt", "caption", "text", "Caption", "Text"];
/// Column names taken as categories (PartiPrompts' and the common lower-case one).
const CATEGORY_COLUMNS: &[&str] = &["Category", "Challenge", "category"];

/// Read a prompt file: plain text (one prompt a line), CSV / TSV with a header, or JSONL
/// (one object a line). `column` names the prompt column (default: `Prompt`, `prompt`,
/// `caption` or `text`, the first present). Returns the prompts, the file's SHA-256, and its
/// category columns (`Category`, `Challenge`, `category`) where present.
pub fn read_prompts(path: &Path, column: Option<&str>) -> anyhow::Result<(PromptSet, String)> {
    let text = read_bounded(path, MAX_PROMPT_FILE)?;
    let sha = adt_plugin_kit::sha256_hex(text.as_bytes());
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let set = match ext.as_str() {
        "csv" => table(path, &text, b',', column)?,
        "tsv" => table(path, &text, b'\t', column)?,
        "jsonl" => jsonl(path, &text, column)?,
        _ => {
            if column.is_some() {
                bail!(
                    "{}: a plain-text prompt file has no columns (use .csv, .tsv or .jsonl for --prompt-column)",
                    path.display()
                );
            }
            PromptSet {
                prompts: text
                    .lines()
                    .map(|l| l.trim_end_matches('\r').to_string())
                    .filter(|l| !l.trim().is_empty())
                    .collect(),
                categories: Vec::new(),
            }
        }
    };
    if set.prompts.is_empty() {
        return Err(DataError(format!("{} holds no prompts", path.display())).into());
    }
    Ok((set, sha))
}

fn read_bounded(path: &Path, max: u64) -> anyhow::Result<String> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot read the prompt file {}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the prompt file {}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(DataError(format!(
            "{} is larger than {} MiB; split it or take a subset",
            path.display(),
            max >> 20
        ))
        .into());
    }
    String::from_utf8(bytes).map_err(|e| {
        DataError(format!(
            "{} is not UTF-8 text (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
        .into()
    })
}

fn pick_column(path: &Path, header: &[String], column: Option<&str>) -> anyhow::Result<usize> {
    match column {
        Some(c) => header.iter().position(|h| h == c).ok_or_else(|| {
            DataError(format!(
                "{} has no column `{c}` (columns: {})",
                path.display(),
                header.join(", ")
            ))
            .into()
        }),
        None => PROMPT_COLUMNS
            .iter()
            .find_map(|c| header.iter().position(|h| h == c))
            .ok_or_else(|| {
                DataError(format!(
                    "{} has none of the prompt columns {} (columns: {}); name one with --prompt-column",
                    path.display(),
                    PROMPT_COLUMNS.join(", "),
                    header.join(", ")
                ))
                .into()
            }),
    }
}

fn table(path: &Path, text: &str, delim: u8, column: Option<&str>) -> anyhow::Result<PromptSet> {
    let mut rd = csv::ReaderBuilder::new()
        .delimiter(delim)
        .flexible(false)
        // PartiPrompts' TSV has quotes inside prompts that are not CSV quoting.
        .quoting(delim != b'\t')
        .from_reader(text.as_bytes());
    let header: Vec<String> = rd
        .headers()
        .map_err(|e| DataError(format!("{}: {e}", path.display())))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    let col = pick_column(path, &header, column)?;
    let cats: Vec<(usize, String)> = CATEGORY_COLUMNS
        .iter()
        .filter_map(|c| {
            header
                .iter()
                .position(|h| h == c)
                .map(|i| (i, c.to_string()))
        })
        .filter(|(i, _)| *i != col)
        .collect();
    let mut set = PromptSet {
        prompts: Vec::new(),
        categories: cats.iter().map(|(_, n)| (n.clone(), Vec::new())).collect(),
    };
    for (line, r) in rd.records().enumerate() {
        let r = r.map_err(|e| DataError(format!("{} row {}: {e}", path.display(), line + 2)))?;
        let p = r.get(col).unwrap_or("").trim();
        if p.is_empty() {
            continue;
        }
        set.prompts.push(p.to_string());
        for (k, (i, _)) in cats.iter().enumerate() {
            set.categories[k]
                .1
                .push(r.get(*i).unwrap_or("").trim().to_string());
        }
    }
    Ok(set)
}

fn jsonl(path: &Path, text: &str, column: Option<&str>) -> anyhow::Result<PromptSet> {
    let mut set = PromptSet::default();
    let mut fields: Option<(String, Vec<String>)> = None;
    for (line, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(l)
            .map_err(|e| DataError(format!("{} line {}: {e}", path.display(), line + 1)))?;
        let obj = v.as_object().ok_or_else(|| {
            DataError(format!(
                "{} line {}: not a JSON object",
                path.display(),
                line + 1
            ))
        })?;
        let (key, cats) = match &fields {
            Some(f) => f.clone(),
            None => {
                let keys: Vec<String> = obj.keys().cloned().collect();
                let key = keys[pick_column(path, &keys, column)?].clone();
                let cats: Vec<String> = CATEGORY_COLUMNS
                    .iter()
                    .filter(|c| obj.contains_key(**c) && **c != key)
                    .map(|c| c.to_string())
                    .collect();
                set.categories = cats.iter().map(|c| (c.clone(), Vec::new())).collect();
                fields = Some((key.clone(), cats.clone()));
                (key, cats)
            }
        };
        let p = obj.get(&key).and_then(|x| x.as_str()).ok_or_else(|| {
            DataError(format!(
                "{} line {}: no string `{key}`",
                path.display(),
                line + 1
            ))
        })?;
        if p.trim().is_empty() {
            continue;
        }
        set.prompts.push(p.trim().to_string());
        for (k, c) in cats.iter().enumerate() {
            let val = match obj.get(c) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            set.categories[k].1.push(val);
        }
    }
    Ok(set)
}

/// An evaluation data source read for a run: `n` records (by `subset` of the first
/// [`MAX_POOL`]), their captions and images, and a content hash of both.
pub struct EvalData {
    /// The captions.
    pub captions: Vec<String>,
    /// The images at the source's resolution.
    pub images: Vec<image::RgbImage>,
    /// SHA-256 over every image's pixels, size and caption.
    pub sha256: String,
    /// The source as written.
    pub source: String,
}

/// Read `n` records of a data source (image folder with captions, parquet, webdataset,
/// `builtin:shapes?…`); a record that cannot be read stops with its name.
pub fn read_eval_data(source: &str, n: usize, subset: Subset) -> anyhow::Result<EvalData> {
    let spec = adt_datasets::DataSpec::parse(source)
        .with_context(|| format!("cannot open the evaluation data {source}"))?;
    let pool = match subset {
        Subset::First => n,
        Subset::Seeded(_) => MAX_POOL,
    };
    let mut recs = Vec::new();
    for r in adt_datasets::open(&spec)?.take(pool) {
        recs.push(r.map_err(|e| DataError(e.to_string()))?);
    }
    if recs.len() < 2 {
        return Err(DataError(format!(
            "the evaluation data {source} has {} record(s); FID needs at least 2",
            recs.len()
        ))
        .into());
    }
    let idx = subset.pick(recs.len(), n);
    let mut h = Sha256::new();
    let (mut captions, mut images) = (Vec::new(), Vec::new());
    for i in idx {
        let r = &recs[i];
        h.update(r.image.width().to_le_bytes());
        h.update(r.image.height().to_le_bytes());
        h.update(r.image.as_raw());
        h.update(r.caption.as_bytes());
        h.update([0u8]);
        captions.push(r.caption.clone());
        images.push(r.image.clone());
    }
    Ok(EvalData {
        captions,
        images,
        sha256: hex(&h.finalize()),
        source: spec.to_string(),
    })
}

/// The FID reference a run compares with.
pub enum Reference {
    /// Images (written to `OUT/real`), from the evaluation source.
    Images(PathBuf),
    /// Reference statistics (`.npz`, clean-fid / pytorch-fid layout).
    Stats(PathBuf),
}

/// The evaluation split of the built-in data set: the default evaluation data.
pub fn default_eval_source() -> String {
    format!(
        "builtin:shapes?offset={}",
        adt_datasets::shapes::EVAL_OFFSET
    )
}

/// Everything a run evaluates on, resolved from its options.
pub struct EvalInputs {
    /// The prompts (N of them) with their categories.
    pub prompts: PromptSet,
    /// The evaluation records read (their captions / images).
    pub eval: Option<EvalData>,
    /// A second real set of the same captions (the real-vs-real floor), when there is one.
    pub floor: Option<EvalData>,
    /// The FID reference.
    pub reference: Option<Reference>,
    /// What went in, with content hashes, for the manifest.
    pub manifest: serde_json::Value,
}

/// Resolve the evaluation inputs: prompts from `prompts` (else the evaluation data's
/// captions), the reference from `fid_ref` (else the evaluation data's images); the
/// evaluation data is `eval_data`, or the built-in evaluation split when neither prompts nor
/// evaluation data are given.
pub fn resolve(
    prompts: Option<&Path>,
    column: Option<&str>,
    eval_data: Option<&str>,
    floor_data: Option<&str>,
    subset: Subset,
    fid_ref: Option<&Path>,
    num: usize,
) -> anyhow::Result<EvalInputs> {
    let source = match (eval_data, prompts) {
        (Some(s), _) => Some(s.to_string()),
        (None, None) => Some(default_eval_source()),
        (None, Some(_)) => None,
    };
    let eval = source
        .as_deref()
        .map(|s| read_eval_data(s, num, subset))
        .transpose()?;
    let mut manifest = serde_json::json!({ "subset": subset.to_string() });
    let set = match prompts {
        Some(p) => {
            let (all, sha) = read_prompts(p, column)?;
            let idx = subset.pick(all.prompts.len(), num);
            if idx.len() < 2 {
                return Err(DataError(format!(
                    "{} holds {} prompt(s); FID needs at least 2",
                    p.display(),
                    idx.len()
                ))
                .into());
            }
            manifest["prompts"] = serde_json::json!({
                "file": p, "sha256": sha, "in_file": all.prompts.len(), "used": idx.len(),
                "categories": all.categories.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
            });
            all.select(&idx)
        }
        None => {
            let data = eval
                .as_ref()
                .context("no prompts: give --prompts FILE or --eval-data SOURCE")?;
            if let Some(i) = data.captions.iter().position(|c| c.trim().is_empty()) {
                return Err(DataError(format!(
                    "record {i} of the evaluation data {} has no caption; give the prompts with \
                     --prompts FILE",
                    data.source
                ))
                .into());
            }
            manifest["prompts"] = serde_json::json!({ "from": "eval_data captions" });
            PromptSet {
                prompts: data.captions.clone(),
                categories: Vec::new(),
            }
        }
    };
    if let Some(d) = &eval {
        manifest["eval_data"] = serde_json::json!({
            "source": d.source, "records": d.images.len(), "sha256": d.sha256,
        });
    }
    let floor_source = match (floor_data, &eval) {
        (Some(f), _) => Some(f.to_string()),
        (None, Some(d)) => redrawn(&d.source),
        (None, None) => None,
    };
    let floor = match (floor_source, &eval) {
        (Some(f), Some(d)) => {
            let fd = read_eval_data(&f, d.images.len(), subset)
                .with_context(|| format!("the floor data {f}"))?;
            check_same_captions(d, &fd)?;
            manifest["floor_data"] = serde_json::json!({
                "source": fd.source, "records": fd.images.len(), "sha256": fd.sha256,
            });
            Some(fd)
        }
        (Some(f), None) => {
            bail!("--floor-data {f} needs the evaluation data it pairs with (--eval-data SOURCE)")
        }
        (None, _) => None,
    };
    let reference = match (fid_ref, &eval) {
        (Some(p), _) => {
            let sha = adt_plugin_kit::sha256_file(p)
                .with_context(|| format!("cannot read --fid-ref {}", p.display()))?;
            manifest["fid_ref"] = serde_json::json!({ "file": p, "sha256": sha });
            Some(Reference::Stats(p.to_path_buf()))
        }
        (None, Some(_)) => Some(Reference::Images(PathBuf::from("real"))),
        (None, None) => bail!(
            "FID needs a reference for these prompts: give --eval-data SOURCE (its images) or \
             --fid-ref FILE.npz (statistics)"
        ),
    };
    manifest["prompts_sha256"] = set.sha256().into();
    Ok(EvalInputs {
        prompts: set,
        eval,
        floor,
        reference,
        manifest,
    })
}

/// The built-in set's other drawing of the same captions (`draw=1`), for a built-in source
/// drawn as itself; `None` for any other source.
pub fn redrawn(source: &str) -> Option<String> {
    match adt_datasets::DataSpec::parse(source).ok()? {
        adt_datasets::DataSpec::Shapes { mut config, offset } if config.draw == 0 => {
            config.draw = 1;
            Some(adt_datasets::DataSpec::Shapes { config, offset }.to_string())
        }
        _ => None,
    }
}

/// The floor set must hold the evaluation set's captions, in order, and as many records.
fn check_same_captions(eval: &EvalData, floor: &EvalData) -> anyhow::Result<()> {
    if floor.captions.len() != eval.captions.len() {
        return Err(DataError(format!(
            "the floor data {} has {} record(s), the evaluation data {} has {}",
            floor.source,
            floor.captions.len(),
            eval.source,
            eval.captions.len()
        ))
        .into());
    }
    if let Some(i) = (0..eval.captions.len()).find(|&i| eval.captions[i] != floor.captions[i]) {
        return Err(DataError(format!(
            "the floor data {} must hold the evaluation data's captions in order; record {i} \
             reads {:?} there and {:?} in {}",
            floor.source, floor.captions[i], eval.captions[i], eval.source
        ))
        .into());
    }
    Ok(())
}

/// A content hash of a data source: the spec of a built-in set; for files, SHA-256 over every
/// file's relative path and SHA-256 (files in name order, folders walked).
pub fn source_sha256(source: &str) -> anyhow::Result<String> {
    let spec = adt_datasets::DataSpec::parse(source)?;
    let root = match &spec {
        adt_datasets::DataSpec::Shapes { .. } => {
            return Ok(adt_plugin_kit::sha256_hex(spec.to_string().as_bytes()));
        }
        adt_datasets::DataSpec::Folder { path }
        | adt_datasets::DataSpec::Parquet { path }
        | adt_datasets::DataSpec::WebDataset { path } => path.clone(),
    };
    // The same listing FID's statistics cache uses (sorted, folders walked).
    let files = if root.is_dir() {
        crate::engine::evaluate::files_under(&root)?
    } else {
        vec![root.clone()]
    };
    let mut h = Sha256::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap_or(f);
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0u8]);
        h.update(
            adt_plugin_kit::sha256_file(f)
                .with_context(|| format!("cannot read {}", f.display()))?
                .as_bytes(),
        );
    }
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_files_of_every_kind_read_with_their_categories() {
        let d = tempfile::tempdir().unwrap();
        let txt = d.path().join("p.txt");
        std::fs::write(&txt, "a cat\n\n  \r\na dog\r\n").unwrap();
        let (s, sha) = read_prompts(&txt, None).unwrap();
        assert_eq!(s.prompts, ["a cat", "a dog"]);
        assert_eq!(sha.len(), 64);
        // PartiPrompts' layout: quotes inside a TSV field are text.
        let tsv = d.path().join("parti.tsv");
        std::fs::write(
            &tsv,
            "Prompt\tCategory\tChallenge\tNote\nA \"quoted\" sign\tArts\tWriting & Symbols\t\nbread\tFood & Beverage\tBasic\tx\n",
        )
        .unwrap();
        let (s, _) = read_prompts(&tsv, None).unwrap();
        assert_eq!(s.prompts, ["A \"quoted\" sign", "bread"]);
        assert_eq!(
            s.categories[0],
            (
                "Category".into(),
                vec!["Arts".into(), "Food & Beverage".into()]
            )
        );
        assert_eq!(s.categories[1].0, "Challenge");
        let csv = d.path().join("p.csv");
        std::fs::write(&csv, "id,text\n1,\"one, two\"\n2,three\n").unwrap();
        assert_eq!(
            read_prompts(&csv, None).unwrap().0.prompts,
            ["one, two", "three"]
        );
        let e = read_prompts(&csv, Some("caption")).unwrap_err().to_string();
        assert!(
            e.contains("no column `caption`") && e.contains("id, text"),
            "{e}"
        );
        let jl = d.path().join("p.jsonl");
        std::fs::write(
            &jl,
            "{\"caption\": \"x\", \"category\": \"A\"}\n{\"caption\": \"y\", \"category\": 3}\n",
        )
        .unwrap();
        let (s, _) = read_prompts(&jl, None).unwrap();
        assert_eq!(s.prompts, ["x", "y"]);
        assert_eq!(s.categories[0].1, ["A", "3"]);
        let bad = d.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"caption\": \"x\"}\nnot json\n").unwrap();
        assert!(
            read_prompts(&bad, None)
                .unwrap_err()
                .to_string()
                .contains("line 2")
        );
        let empty = d.path().join("e.txt");
        std::fs::write(&empty, "\n\n").unwrap();
        assert!(
            read_prompts(&empty, None)
                .unwrap_err()
                .to_string()
                .contains("no prompts")
        );
        let bin = d.path().join("b.txt");
        std::fs::write(&bin, [0xffu8, 0xfe, 0x00]).unwrap();
        assert!(
            read_prompts(&bin, None)
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );
    }

    /// PartiPrompts' own TSV (`../shared/data/prompts/parti`), read as it is.
    #[test]
    fn parti_prompts_read_with_categories_and_challenges() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/prompts/parti/PartiPrompts.tsv");
        if !p.is_file() {
            eprintln!("SKIPPED: {} not found", p.display());
            return;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let rows = text
            .lines()
            .skip(1)
            .filter(|l| !l.split('\t').next().unwrap_or("").trim().is_empty())
            .count();
        let (s, _) = read_prompts(&p, None).unwrap();
        assert_eq!(s.prompts.len(), rows);
        let fields: Vec<&str> = s.categories.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["Category", "Challenge"]);
        for (_, v) in &s.categories {
            assert_eq!(v.len(), rows);
            assert!(v.iter().all(|c| !c.is_empty()));
        }
    }

    #[test]
    fn subsets_are_first_or_seeded_and_stable() {
        assert_eq!(Subset::First.pick(10, 3), [0, 1, 2]);
        assert_eq!(Subset::First.pick(2, 3), [0, 1]);
        let a = Subset::Seeded(7).pick(100, 10);
        assert_eq!(a, Subset::Seeded(7).pick(100, 10));
        assert_ne!(a, Subset::Seeded(8).pick(100, 10));
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a.len() == 10);
        assert_eq!("seeded:3".parse::<Subset>().unwrap(), Subset::Seeded(3));
        assert!("random".parse::<Subset>().is_err());
    }

    #[test]
    fn the_default_evaluation_is_the_built_in_split() {
        let i = resolve(None, None, None, None, Subset::First, None, 4).unwrap();
        assert_eq!(i.prompts.prompts, crate::sampling::eval_prompts(4));
        assert!(matches!(i.reference, Some(Reference::Images(_))));
        // Its floor: the same captions drawn anew.
        let f = i.floor.as_ref().expect("a floor set for the built-in data");
        let e = i.eval.as_ref().unwrap();
        assert_eq!(f.captions, e.captions);
        assert!(f.source.ends_with("&draw=1"), "{}", f.source);
        assert!(f.images.iter().zip(&e.images).all(|(a, b)| a != b));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p.txt");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        let e = resolve(Some(&p), None, None, None, Subset::First, None, 4)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--eval-data") && e.contains("--fid-ref"), "{e}");
    }

    #[test]
    fn a_floor_set_must_hold_the_evaluation_captions_in_order() {
        let eval = "builtin:shapes?offset=100";
        // Other captions (another offset): refused, naming the first record that differs.
        let e = format!(
            "{:#}",
            resolve(
                None,
                None,
                Some(eval),
                Some("builtin:shapes?offset=200"),
                Subset::First,
                None,
                4
            )
            .err()
            .unwrap()
        );
        assert!(
            e.contains("captions in order") && e.contains("record 0"),
            "{e}"
        );
        // An explicit drawing of the same captions is accepted.
        let i = resolve(
            None,
            None,
            Some(eval),
            Some("builtin:shapes?offset=100&draw=5"),
            Subset::First,
            None,
            4,
        )
        .unwrap();
        assert!(i.floor.unwrap().source.ends_with("&draw=5"));
        assert_eq!(redrawn("builtin:shapes?offset=3&draw=2"), None);
        assert_eq!(
            redrawn("builtin:shapes?offset=3").as_deref(),
            Some("builtin:shapes?seed=0&size=32&offset=3&draw=1")
        );
    }
}
