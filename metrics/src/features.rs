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
    /// every batch. Decoded images are preprocessed to the network's input as they arrive
    /// whenever the ones waiting hold more than [`STREAM_PIXEL_BUDGET`] pixels, so a batch of
    /// large photos never sits in memory at full size.
    pub fn features_stream(
        &self,
        images: &mut dyn Iterator<Item = RgbImage>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<f32>> {
        let per = INPUT * INPUT * 3;
        let mut out = Vec::new();
        let mut done = 0;
        loop {
            let mut data = vec![0f32; self.batch * per];
            let mut filled = 0;
            let mut waiting: Vec<RgbImage> = Vec::new();
            let mut waiting_px = 0u64;
            let mut flush = |waiting: &mut Vec<RgbImage>, filled: &mut usize| {
                let n = waiting.len();
                data[*filled * per..(*filled + n) * per]
                    .par_chunks_mut(per)
                    .zip(waiting.par_iter())
                    .for_each(|(dst, img)| crate::preprocess::preprocess_into(img, self.mode, dst));
                *filled += n;
                waiting.clear();
            };
            while filled + waiting.len() < self.batch {
                let Some(img) = images.next() else { break };
                waiting_px += img.width() as u64 * img.height() as u64;
                waiting.push(img);
                if waiting_px > STREAM_PIXEL_BUDGET {
                    flush(&mut waiting, &mut filled);
                    waiting_px = 0;
                }
            }
            flush(&mut waiting, &mut filled);
            if filled == 0 {
                break;
            }
            data.truncate(filled * per);
            out.extend(self.forward_preprocessed(data, filled)?);
            done += filled;
            progress(done);
            if filled < self.batch {
                break;
            }
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
        self.forward_preprocessed(data, images.len())
    }

    /// The network on `n` preprocessed inputs (`n × 299 × 299 × 3`, HWC).
    fn forward_preprocessed(&self, data: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        if !self.device.is_cpu() {
            let x = candle_core::Tensor::from_vec(data, (n, INPUT, INPUT, 3), &self.device)?
                .permute((0, 3, 1, 2))?
                .contiguous()?;
            let f = self.net.features_candle(&x)?;
            return Ok(f.flatten_all()?.to_vec1::<f32>()?);
        }
        let x = Act {
            n,
            h: INPUT,
            w: INPUT,
            c: 3,
            data,
        };
        self.net.features(&x)
    }
}

/// Decoded pixels [`Extractor::features_stream`] lets wait before it preprocesses them (a
/// batch of 50 small images stays one parallel step; a few large photos are preprocessed one
/// group at a time).
pub const STREAM_PIXEL_BUDGET: u64 = 16 << 20;

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
