//! Parquet files as the Hugging Face `datasets` library exports them: an image column (a struct
//! `{bytes, path}` as `datasets.Image` writes it, or a plain binary column) and a caption column
//! (`text`, `caption`, `prompt`, or the first string column). Read row by row, so a file of any
//! size streams; row groups are decoded one at a time.

use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};

use crate::{Error, Record, RecordError, RecordStream, Result, decode_image};

const IMAGE_COLUMNS: [&str; 4] = ["image", "jpg", "png", "img"];
const CAPTION_COLUMNS: [&str; 4] = ["text", "caption", "prompt", "sentence"];

/// Open a `.parquet` file or a directory of them (sorted by name).
pub fn open(path: &Path) -> Result<RecordStream> {
    let files = crate::files_with_extension(path, "parquet")?;
    let mut readers = Vec::new();
    for f in files {
        let file = File::open(&f).map_err(|source| Error::Io {
            path: f.clone(),
            source,
        })?;
        // Third-party code on untrusted bytes: a panic in it is bad data, not a crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            SerializedFileReader::new(file)
        }));
        let reader = match opened {
            Ok(r) => r.map_err(|e| Error::Parquet {
                path: f.clone(),
                reason: e.to_string(),
            })?,
            Err(panic) => {
                return Err(Error::Parquet {
                    path: f.clone(),
                    reason: format!(
                        "the parquet reader failed on corrupt metadata ({})",
                        panic_text(&*panic)
                    ),
                });
            }
        };
        let schema = reader.metadata().file_metadata().schema_descr();
        let names: Vec<String> = schema
            .root_schema()
            .get_fields()
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        let image_col = IMAGE_COLUMNS
            .iter()
            .find(|c| names.iter().any(|n| n == *c))
            .map(|c| c.to_string())
            .ok_or_else(|| Error::Parquet {
                path: f.clone(),
                reason: format!("no image column (looked for {IMAGE_COLUMNS:?}; found {names:?})"),
            })?;
        let caption_col = CAPTION_COLUMNS
            .iter()
            .find(|c| names.iter().any(|n| n == *c))
            .map(|c| c.to_string());
        readers.push((f, reader, image_col, caption_col));
    }
    Ok(Box::new(readers.into_iter().flat_map(
        |(file, reader, image_col, caption_col)| {
            let mut rows = Some(reader.into_iter());
            let mut i = 0usize;
            std::iter::from_fn(move || {
                let it = rows.as_mut()?;
                let location = format!("{}#{}", file.display(), i);
                // The parquet reader is third-party code fed untrusted bytes: a panic inside it
                // is contained here and reported as bad data, and after any error of its own
                // the rest of the file is given up (a corrupt page can make it repeat the same
                // row forever).
                let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| it.next()));
                let row = match next {
                    Ok(None) => {
                        rows = None;
                        return None;
                    }
                    Ok(Some(Ok(row))) => row,
                    Ok(Some(Err(e))) => {
                        rows = None;
                        return Some(Err(RecordError {
                            location,
                            reason: format!("{e}; the rest of this file is not read"),
                        }));
                    }
                    Err(panic) => {
                        rows = None;
                        return Some(Err(RecordError {
                            location,
                            reason: format!(
                                "the parquet reader failed on corrupt data ({}); the rest of \
                                 this file is not read",
                                panic_text(&*panic)
                            ),
                        }));
                    }
                };
                let rec = row_to_record(&row, &image_col, caption_col.as_deref(), &location, i);
                i += 1;
                Some(rec)
            })
        },
    )))
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic")
}

fn row_to_record(
    row: &Row,
    image_col: &str,
    caption_col: Option<&str>,
    location: &str,
    index: usize,
) -> std::result::Result<Record, RecordError> {
    let mut bytes: Option<Vec<u8>> = None;
    let mut caption = String::new();
    let mut key = format!("{index:08}");
    let mut first_string: Option<String> = None;
    for (name, field) in row.get_column_iter() {
        if name == image_col {
            match field {
                Field::Bytes(b) => bytes = Some(b.data().to_vec()),
                Field::Group(g) => {
                    for (sub, f) in g.get_column_iter() {
                        match (sub.as_str(), f) {
                            ("bytes", Field::Bytes(b)) => bytes = Some(b.data().to_vec()),
                            ("path", Field::Str(p)) if !p.is_empty() => {
                                key = Path::new(p)
                                    .with_extension("")
                                    .to_string_lossy()
                                    .into_owned()
                            }
                            _ => {}
                        }
                    }
                }
                Field::Null => {}
                other => {
                    return Err(RecordError {
                        location: location.to_string(),
                        reason: format!("image column holds {other:?}, not bytes"),
                    });
                }
            }
        } else if let Field::Str(s) = field {
            if Some(name.as_str()) == caption_col {
                caption = s.trim().to_string();
            } else if first_string.is_none() {
                first_string = Some(s.trim().to_string());
            }
        }
    }
    if caption_col.is_none()
        && let Some(s) = first_string
    {
        caption = s;
    }
    let Some(bytes) = bytes else {
        return Err(RecordError {
            location: location.to_string(),
            reason: "image is null".into(),
        });
    };
    let image = decode_image(&bytes, location)?;
    Ok(Record {
        key,
        image,
        caption,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/data/hf_export.parquet` was written by Hugging Face `datasets` itself
    /// (`tests/data/make_hf_parquet.py`).
    #[test]
    fn reads_a_hugging_face_export() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hf_export.parquet");
        let items: Vec<_> = open(&path).unwrap().collect();
        assert_eq!(items.len(), 3);
        let r0 = items[0].as_ref().unwrap();
        assert_eq!(
            (r0.key.as_str(), r0.caption.as_str()),
            ("red", "a red image")
        );
        assert_eq!(r0.image.dimensions(), (6, 4));
        assert_eq!(r0.image.get_pixel(1, 1).0, [200, 10, 10]);
        let r1 = items[1].as_ref().unwrap();
        assert_eq!(
            (r1.caption.as_str(), r1.image.dimensions()),
            ("a green image", (8, 8))
        );
        let bad = items[2].as_ref().unwrap_err();
        assert!(
            bad.location.ends_with("#2") && bad.reason.contains("decode"),
            "{bad}"
        );
    }

    /// Every single-byte corruption of the file's data pages (the footer left intact, so the
    /// file still opens) ends the stream within the file's rows plus one error: no panic
    /// escapes the reader and no row repeats forever.
    #[test]
    fn corrupt_pages_end_the_stream_instead_of_panicking_or_looping() {
        let src = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hf_export.parquet"),
        )
        .unwrap();
        let footer = u32::from_le_bytes(src[src.len() - 8..src.len() - 4].try_into().unwrap());
        let data_end = src.len() - 8 - footer as usize;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.parquet");
        let (mut opened, mut errors) = (0, 0);
        // Quiet the default hook while panics are expected and caught.
        let hook = std::panic::take_hook();
        static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        std::panic::set_hook(Box::new(|_| {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }));
        for at in (4..data_end).step_by(3) {
            for flip in [0xffu8, 0x80] {
                let mut bytes = src.clone();
                bytes[at] ^= flip;
                std::fs::write(&p, &bytes).unwrap();
                let Ok(stream) = open(&p) else { continue };
                opened += 1;
                let items: Vec<_> = stream.take(50).collect();
                assert!(items.len() <= 4, "byte {at}: {} items", items.len());
                errors += items.iter().filter(|r| r.is_err()).count();
            }
        }
        std::panic::set_hook(hook);
        eprintln!(
            "{opened} corrupt files opened, {errors} errors, {} reader panics contained",
            PANICS.load(std::sync::atomic::Ordering::Relaxed)
        );
        assert!(
            opened > 100 && errors > opened,
            "{opened} opened, {errors} errors"
        );
    }

    /// Inputs the fuzzer (`adt-fuzz --reader parquet`) found panicking the parquet reader's
    /// metadata parsing: refused as bad data.
    #[test]
    fn fuzz_findings_are_refused_not_panicked_on() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("parquet-")
            {
                n += 1;
                // Opening, or reading to the end, gives errors; nothing panics.
                let r = std::panic::catch_unwind(|| open(&p).map(|s| s.count()));
                assert!(r.is_ok(), "{} panicked", p.display());
            }
        }
        assert!(n >= 2, "{n} findings");
    }

    #[test]
    fn a_file_that_is_not_parquet_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.parquet");
        std::fs::write(&p, b"PAR1 nope").unwrap();
        assert!(matches!(open(&p), Err(Error::Parquet { .. })));
    }
}
