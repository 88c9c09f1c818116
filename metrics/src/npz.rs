//! `.npz` statistics files as pytorch-fid (`np.savez_compressed(mu=, sigma=)`) and clean-fid
//! (`np.savez`) write them: a zip of `.npy` arrays, stored or deflated. We read `mu` / `sigma`
//! (float64 or float32, C or Fortran order) and optional `feats` (clean-fid's KID key), and
//! write `mu`, `sigma`, `n` (sample count), optional `feats`, and `meta` (the mode, weights
//! hash and feature count as JSON bytes in a uint8 array, which `np.load` reads without pickle).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use crate::stats::Gaussian;
use crate::{Error, Result};

/// The values of one array.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// `<f8`.
    F64(Vec<f64>),
    /// `<f4`.
    F32(Vec<f32>),
    /// `<i8`.
    I64(Vec<i64>),
    /// `|u1`.
    U8(Vec<u8>),
}

/// One array (C order).
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Values.
    pub data: Data,
}

impl Array {
    /// Values as f64 whatever the stored type.
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            Data::F64(v) => v.clone(),
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::U8(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
}

/// The largest array an `.npz` entry may hold (8 GiB: the features of a million images at
/// 2048 f32 values each).
pub const MAX_ENTRY_BYTES: u64 = 8 << 30;

/// Read every array of an `.npz` file.
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, Array>> {
    let bad = |problem: String| Error::Stats {
        path: path.to_path_buf(),
        problem,
    };
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f))
        .map_err(|e| bad(format!("not an .npz (zip) file: {e}")))?;
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| bad(format!("entry {i}: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| bad(format!("entry {i}: {e}")))?
            .to_string();
        let Some(key) = name.strip_suffix(".npy") else {
            continue;
        };
        // The declared size is the archive's word, not a fact: the allocation is capped, and
        // no entry may inflate past MAX_ENTRY_BYTES whatever it declares.
        if entry.size() > MAX_ENTRY_BYTES {
            return Err(bad(format!(
                "{name} declares {} bytes, more than the {MAX_ENTRY_BYTES} an array may hold",
                entry.size()
            )));
        }
        let mut bytes = Vec::with_capacity((entry.size() as usize).min(1 << 26));
        (&mut entry)
            .take(MAX_ENTRY_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("{name}: {e}")))?;
        if bytes.len() as u64 > MAX_ENTRY_BYTES {
            return Err(bad(format!(
                "{name} inflates past the {MAX_ENTRY_BYTES} bytes an array may hold"
            )));
        }
        let arr = parse_npy(&bytes).map_err(|p| bad(format!("{name}: {p}")))?;
        out.insert(key.to_string(), arr);
    }
    Ok(out)
}

/// Parse one `.npy` array (versions 1–3; `<f8`, `<f4`, `<i8`, `|u1`; C or 2-D Fortran order).
pub fn parse_npy(b: &[u8]) -> std::result::Result<Array, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy array".into());
    }
    let (hlen, start): (usize, usize) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => {
            if b.len() < 12 {
                return Err("truncated header".into());
            }
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = std::str::from_utf8(
        start
            .checked_add(hlen)
            .and_then(|end| b.get(start..end))
            .ok_or("truncated header")?,
    )
    .map_err(|_| "header is not text")?;
    let field = |key: &str| -> std::result::Result<&str, String> {
        let at = header
            .find(&format!("'{key}'"))
            .ok_or(format!("header lacks {key}"))?;
        Ok(header
            .get(at + key.len() + 2..)
            .unwrap_or("")
            .trim_start_matches([':', ' ']))
    };
    let descr = field("descr")?;
    let descr = descr
        .trim_start_matches('\'')
        .split('\'')
        .next()
        .unwrap_or("");
    let fortran = field("fortran_order")?.starts_with("True");
    let shape_s = field("shape")?;
    let shape_s = shape_s
        .strip_prefix('(')
        .and_then(|s| s.split_once(')'))
        .map(|(inner, _)| inner)
        .ok_or_else(|| format!("bad shape in header {header:?}"))?;
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| format!("bad shape ({shape_s})"))?;
    // Sizes are checked before anything is allocated: a header may declare any shape.
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has more elements than can be addressed"))?;
    let body = &b[start + hlen..];
    let need = |size: usize| -> std::result::Result<&[u8], String> {
        let bytes = n
            .checked_mul(size)
            .ok_or_else(|| format!("shape {shape:?} needs more bytes than can be addressed"))?;
        body.get(..bytes).ok_or(format!(
            "holds {} bytes, shape {shape:?} needs {bytes}",
            body.len()
        ))
    };
    let data = match descr {
        "<f8" => Data::F64(
            need(8)?
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        "<f4" => Data::F32(
            need(4)?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                .collect(),
        ),
        "<i8" => Data::I64(
            need(8)?
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        "|u1" | "<u1" => Data::U8(need(1)?.to_vec()),
        other => return Err(format!("unsupported dtype {other}")),
    };
    let mut arr = Array { shape, data };
    if fortran && arr.shape.len() == 2 {
        arr = transpose_fortran(arr);
    } else if fortran && arr.shape.len() > 2 {
        return Err("Fortran-order arrays of rank > 2 are not supported".into());
    }
    Ok(arr)
}

fn transpose_fortran(a: Array) -> Array {
    let (r, c) = (a.shape[0], a.shape[1]);
    fn t<T: Copy>(v: &[T], r: usize, c: usize) -> Vec<T> {
        // Fortran: element (i, j) at j*r + i.
        (0..r * c).map(|k| v[(k % c) * r + k / c]).collect()
    }
    let data = match &a.data {
        Data::F64(v) => Data::F64(t(v, r, c)),
        Data::F32(v) => Data::F32(t(v, r, c)),
        Data::I64(v) => Data::I64(t(v, r, c)),
        Data::U8(v) => Data::U8(t(v, r, c)),
    };
    Array {
        shape: a.shape,
        data,
    }
}

fn npy_bytes(a: &Array) -> Vec<u8> {
    let (descr, body): (&str, Vec<u8>) = match &a.data {
        Data::F64(v) => ("<f8", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Data::F32(v) => ("<f4", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Data::I64(v) => ("<i8", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Data::U8(v) => ("|u1", v.clone()),
    };
    let shape = match a.shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", a.shape[0]),
        _ => format!(
            "({})",
            a.shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // numpy pads so that the data starts at a multiple of 64, header ends with '\n'.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + body.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&body);
    out
}

/// Write arrays as an `.npz` (deflated when `compress`, readable as `np.savez_compressed`'s),
/// atomically.
pub fn write_npz(path: &Path, arrays: &[(&str, Array)], compress: bool) -> Result<()> {
    let method = if compress {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    // Level 1: statistics are dense f64 noise to deflate, so higher levels cost several times
    // the time for a few percent of size.
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .compression_level(compress.then_some(1))
        .large_file(true);
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        for (name, a) in arrays {
            w.start_file(format!("{name}.npy"), opts)
                .map_err(|e| Error::Stats {
                    path: path.to_path_buf(),
                    problem: e.to_string(),
                })?;
            w.write_all(&npy_bytes(a)).map_err(|e| Error::io(path, e))?;
        }
        w.finish().map_err(|e| Error::Stats {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
    }
    crate::weights::write_atomic(path, &buf.into_inner())
}

/// What a statistics file holds.
#[derive(Debug, Clone)]
pub struct StatsFile {
    /// μ and Σ.
    pub gaussian: Gaussian,
    /// Raw features (for KID), `n × d`, when stored.
    pub features: Option<Vec<f32>>,
    /// Our metadata (mode, weights hash …), when the file is ours.
    pub meta: Option<serde_json::Value>,
}

/// Read `mu` / `sigma` (and `feats`, `n`, `meta` when present) from an `.npz`.
pub fn read_stats(path: &Path) -> Result<StatsFile> {
    let arrays = read_npz(path)?;
    let bad = |problem: String| Error::Stats {
        path: path.to_path_buf(),
        problem,
    };
    let mu = arrays
        .get("mu")
        .ok_or_else(|| bad("no array `mu` (expected pytorch-fid / clean-fid statistics)".into()))?;
    let sigma = arrays
        .get("sigma")
        .ok_or_else(|| bad("no array `sigma`".into()))?;
    let d = mu.shape.first().copied().unwrap_or(0);
    if mu.shape.len() != 1 || sigma.shape != [d, d] {
        return Err(bad(format!(
            "`mu` has shape {:?} and `sigma` {:?}; expected [d] and [d, d]",
            mu.shape, sigma.shape
        )));
    }
    let gaussian = Gaussian {
        mu: mu.to_f64(),
        sigma: sigma.to_f64(),
        count: arrays
            .get("n")
            .and_then(|a| a.to_f64().first().map(|&v| v as u64)),
    };
    if gaussian
        .mu
        .iter()
        .chain(&gaussian.sigma)
        .any(|v| !v.is_finite())
    {
        return Err(bad("`mu` or `sigma` holds non-finite values".into()));
    }
    let features: Option<Vec<f32>> = match arrays.get("feats") {
        Some(a) if a.shape.len() == 2 && a.shape[1] == d => {
            Some(a.to_f64().into_iter().map(|v| v as f32).collect())
        }
        Some(a) => {
            return Err(bad(format!(
                "`feats` has shape {:?}; `mu` says rows of {d}",
                a.shape
            )));
        }
        None => None,
    };
    // The features and the Gaussian must describe the same set: the same count, and `mu` the
    // features' mean (to the rounding of the features to f32).
    if let Some(f) = &features {
        if f.iter().any(|v| !v.is_finite()) {
            return Err(bad("`feats` holds non-finite values".into()));
        }
        let rows = f.len().checked_div(d).unwrap_or(0);
        if let Some(c) = gaussian.count
            && c != rows as u64
        {
            return Err(bad(format!("`n` says {c} images, `feats` holds {rows}")));
        }
        if rows > 0 {
            let mut mean = vec![0.0f64; d];
            for row in f.chunks_exact(d) {
                for (m, &v) in mean.iter_mut().zip(row) {
                    *m += v as f64;
                }
            }
            let scale = gaussian.mu.iter().fold(1.0f64, |a, v| a.max(v.abs()));
            let worst = mean
                .iter()
                .zip(&gaussian.mu)
                .map(|(s, m)| (s / rows as f64 - m).abs())
                .fold(0.0f64, f64::max);
            if worst.is_nan() || worst > 1e-4 * scale {
                return Err(bad(format!(
                    "`mu` is not the mean of `feats` (they differ by up to {worst:.3e}): the \
                     arrays come from different sets"
                )));
            }
        }
    }
    let meta = match arrays.get("meta") {
        Some(Array {
            data: Data::U8(b), ..
        }) => serde_json::from_slice(b).ok(),
        _ => None,
    };
    Ok(StatsFile {
        gaussian,
        features,
        meta,
    })
}

/// Write statistics readable by pytorch-fid and clean-fid (`mu`, `sigma`), plus `n`, optional
/// `feats` and `meta`.
pub fn write_stats(
    path: &Path,
    g: &Gaussian,
    features: Option<&[f32]>,
    meta: &serde_json::Value,
) -> Result<()> {
    let d = g.dim();
    let mut arrays = vec![
        (
            "mu",
            Array {
                shape: vec![d],
                data: Data::F64(g.mu.clone()),
            },
        ),
        (
            "sigma",
            Array {
                shape: vec![d, d],
                data: Data::F64(g.sigma.clone()),
            },
        ),
    ];
    if let Some(n) = g.count {
        arrays.push((
            "n",
            Array {
                shape: vec![],
                data: Data::I64(vec![n as i64]),
            },
        ));
    }
    if let Some(f) = features {
        arrays.push((
            "feats",
            Array {
                shape: vec![f.len() / d, d],
                data: Data::F32(f.to_vec()),
            },
        ));
    }
    let meta_bytes = serde_json::to_vec(meta).unwrap_or_default();
    arrays.push((
        "meta",
        Array {
            shape: vec![meta_bytes.len()],
            data: Data::U8(meta_bytes),
        },
    ));
    write_npz(path, &arrays, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, body: &[u8]) -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(body);
        b
    }

    /// Headers that declare impossible shapes are errors, never a panic, an overflow or an
    /// allocation of what they declare.
    #[test]
    fn hostile_headers_are_refused() {
        for (header, want) in [
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': ), }",
                "bad shape",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (",
                "bad shape",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape'",
                "bad shape",
            ),
            (
                "{'descr': '<f8', 'fortran_order': True, 'shape': (3, 9223372036854775808), }",
                "addressed",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }",
                "addressed",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1000,), }",
                "needs 4000",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (x,), }",
                "bad shape",
            ),
        ] {
            let e = parse_npy(&npy(header, &[0; 16])).unwrap_err();
            assert!(e.contains(want), "{header}: {e}");
        }
        // A header length past the end of the file.
        let mut b = npy("{}", &[]);
        b[8] = 0xff;
        assert!(parse_npy(&b).unwrap_err().contains("truncated"));
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.npz");
        let g = Gaussian {
            mu: vec![1.0, 2.0, 3.0],
            sigma: (0..9).map(|i| i as f64 * 0.5).collect(),
            count: Some(2),
        };
        let feats = vec![0.5f32, 1.0, 2.5, 1.5, 3.0, 3.5];
        write_stats(&p, &g, Some(&feats), &serde_json::json!({"mode": "clean"})).unwrap();
        let s = read_stats(&p).unwrap();
        assert_eq!(s.gaussian, g);
        assert_eq!(s.features.as_deref(), Some(&feats[..]));
        assert_eq!(s.meta.unwrap()["mode"], "clean");
    }

    /// Features that do not belong to the Gaussian beside them (another count, another mean,
    /// another width) are refused rather than mixed into KID.
    #[test]
    fn features_must_match_their_gaussian() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.npz");
        let g = |count| Gaussian {
            mu: vec![1.0, 2.0, 3.0],
            sigma: vec![0.0; 9],
            count,
        };
        let feats = [0.5f32, 1.0, 2.5, 1.5, 3.0, 3.5];
        for (gauss, f, want) in [
            (g(Some(3)), &feats[..], "`n` says 3 images, `feats` holds 2"),
            (g(None), &[0.0f32; 6][..], "not the mean of `feats`"),
            (g(None), &feats[..4], "rows of 3"),
        ] {
            let rows = f.len() / 2;
            let arrays = [
                (
                    "mu",
                    Array {
                        shape: vec![3],
                        data: Data::F64(gauss.mu.clone()),
                    },
                ),
                (
                    "sigma",
                    Array {
                        shape: vec![3, 3],
                        data: Data::F64(gauss.sigma.clone()),
                    },
                ),
                (
                    "feats",
                    Array {
                        shape: vec![2, rows],
                        data: Data::F32(f.to_vec()),
                    },
                ),
            ];
            let mut arrays = arrays.to_vec();
            if let Some(c) = gauss.count {
                arrays.push((
                    "n",
                    Array {
                        shape: vec![],
                        data: Data::I64(vec![c as i64]),
                    },
                ));
            }
            write_npz(&p, &arrays, false).unwrap();
            let e = read_stats(&p).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn fortran_order_is_transposed() {
        // Column-major storage of [[0,1,2],[3,4,5]].
        let body: Vec<u8> = [0.0f64, 3.0, 1.0, 4.0, 2.0, 5.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b = npy(
            "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }",
            &body,
        );
        let a = parse_npy(&b).unwrap();
        assert_eq!(a.data, Data::F64(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
    }

    #[test]
    fn truncated_array_is_an_error() {
        let hdr = "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(hdr.len() as u16).to_le_bytes());
        b.extend_from_slice(hdr.as_bytes());
        b.extend_from_slice(&1.0f64.to_le_bytes());
        assert!(parse_npy(&b).unwrap_err().contains("bytes"));
    }
}
