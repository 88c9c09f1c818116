//! Images to Inception features: preprocessing by [`Mode`] (in parallel), batched forward
//! passes, and the content keys under which the harness caches a set's statistics.

use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;
use sha2::Digest;

use crate::arch::{DIMS, INPUT};
use crate::inception::{Act, Inception};
use crate::{Error, Mode, Result};

/// Computes features of image streams.
pub struct Extractor<'a> {
    net: &'a Inception,
    mode: Mode,
    batch: usize,
    device: candle_core::Device,
}

impl<'a> Extractor<'a> {
    /// An extractor with `batch` images per forward pass.
    pub fn new(net: &'a Inception, mode: Mode, batch: usize) -> Self {
        Extractor {
            net,
            mode,
            batch: batch.max(1),
            device: candle_core::Device::Cpu,
        }
    }

    /// Run the network on `device`: the CPU fast path for `Device::Cpu`, the candle path
    /// (weights uploaded once) elsewhere. Preprocessing stays on the CPU either way.
    pub fn on(mut self, device: candle_core::Device) -> Self {
        self.device = device;
        self
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Features of a slice of images (`n × 2048`).
    pub fn features(&self, images: &[RgbImage]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(images.len() * DIMS);
        for chunk in images.chunks(self.batch) {
            out.extend(self.batch_features(chunk)?);
        }
        Ok(out)
    }

    /// Features of an image stream; `progress` is called with the number of images done after
    /// every batch.
    pub fn features_stream(
        &self,
        images: &mut dyn Iterator<Item = RgbImage>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        let mut batch = Vec::with_capacity(self.batch);
        let mut done = 0;
        loop {
            batch.clear();
            for _ in 0..self.batch {
                match images.next() {
                    Some(img) => batch.push(img),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            out.extend(self.batch_features(&batch)?);
            done += batch.len();
            progress(done);
        }
        Ok(out)
    }

    /// One forward pass.
    pub fn batch_features(&self, images: &[RgbImage]) -> Result<Vec<f32>> {
        let per = INPUT * INPUT * 3;
        let mut data = vec![0f32; images.len() * per];
        data.par_chunks_mut(per)
            .zip(images.par_iter())
            .for_each(|(dst, img)| crate::preprocess::preprocess_into(img, self.mode, dst));
        if !self.device.is_cpu() {
            let x =
                candle_core::Tensor::from_vec(data, (images.len(), INPUT, INPUT, 3), &self.device)?
                    .permute((0, 3, 1, 2))?
                    .contiguous()?;
            let f = self.net.features_candle(&x)?;
            return Ok(f.flatten_all()?.to_vec1::<f32>()?);
        }
        let x = Act {
            n: images.len(),
            h: INPUT,
            w: INPUT,
            c: 3,
            data,
        };
        self.net.features(&x)
    }
}

/// A content key for a feature set: the images' identity, the mode, the weights and this
/// crate's version (a change to the network code invalidates every cached set).
pub fn set_key(content: &str, mode: Mode, weights_sha256: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(content.as_bytes());
    h.update(b"\0");
    h.update(mode.name().as_bytes());
    h.update(b"\0");
    h.update(weights_sha256.as_bytes());
    h.update(b"\0");
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    crate::weights::hex(&h.finalize())
}

/// Hash of a folder's images: relative paths and file bytes, in sorted order.
pub fn hash_files(root: &Path, files: &[PathBuf]) -> Result<String> {
    let mut h = sha2::Sha256::new();
    for f in files {
        let rel = f.strip_prefix(root).unwrap_or(f);
        h.update(rel.to_string_lossy().as_bytes());
        h.update(b"\0");
        // Streamed: a file of any size is hashed in constant memory.
        let file = std::fs::File::open(f).map_err(|e| Error::io(f, e))?;
        let len = file.metadata().map_err(|e| Error::io(f, e))?.len();
        h.update(len.to_le_bytes());
        let read = std::io::copy(&mut std::io::Read::take(file, len), &mut h)
            .map_err(|e| Error::io(f, e))?;
        if read != len {
            return Err(Error::io(
                f,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("changed while it was read ({read} of {len} bytes)"),
                ),
            ));
        }
    }
    Ok(crate::weights::hex(&h.finalize()))
}
