//! Batches of images and captions from a data source, in the model's resolution and range.

use adt_datasets::{DataSpec, RecordStream, transform};
use adt_plugin_api::HostTensor;

use crate::{Error, Progress, Result};

/// A batch: images `[B, 3, S, S]` in [-1, 1] and their captions.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images.
    pub images: HostTensor,
    /// Captions, one per image.
    pub captions: Vec<String>,
}

/// Draws consecutive batches from a (possibly unlimited) stream; restarts a finite source when
/// it ends (epochs), and reports then skips bad records.
pub struct Batcher {
    spec: DataSpec,
    size: u32,
    stream: RecordStream,
    /// Bad records skipped so far.
    pub skipped: usize,
    /// Records delivered so far.
    pub delivered: u64,
}

impl Batcher {
    /// Open a source at the model's resolution.
    pub fn new(spec: &DataSpec, size: u32) -> Result<Batcher> {
        let stream = adt_datasets::open_resized(spec, size)?;
        Ok(Batcher {
            spec: spec.clone(),
            size,
            stream,
            skipped: 0,
            delivered: 0,
        })
    }

    /// The next `n` examples.
    pub fn next_batch(&mut self, n: usize, progress: &mut dyn Progress) -> Result<Batch> {
        let s = self.size as usize;
        let mut data = Vec::with_capacity(n * 3 * s * s);
        let mut captions = Vec::with_capacity(n);
        let mut restarts = 0;
        while captions.len() < n {
            match self.stream.next() {
                Some(Ok(rec)) => {
                    data.extend(transform::to_chw_signed(&rec.image));
                    captions.push(rec.caption);
                    self.delivered += 1;
                }
                Some(Err(e)) => {
                    self.skipped += 1;
                    progress.event(&e.to_string());
                }
                None => {
                    restarts += 1;
                    if restarts > 1 || self.delivered == 0 {
                        return Err(Error::DataExhausted {
                            skipped: self.skipped,
                        });
                    }
                    self.stream = adt_datasets::open_resized(&self.spec, self.size)?;
                }
            }
            if captions.len() < n && self.delivered == 0 && self.skipped > 10_000 {
                return Err(Error::DataExhausted {
                    skipped: self.skipped,
                });
            }
        }
        Ok(Batch {
            images: HostTensor {
                shape: vec![n, 3, s, s],
                data,
            },
            captions,
        })
    }
}
