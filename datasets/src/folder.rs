//! Image folders with captions, in the layouts people actually ship:
//! a sidecar `name.txt` next to `name.png`, or a Hugging Face `imagefolder` metadata file
//! (`metadata.jsonl` or `metadata.csv` with a `file_name` column and a caption column named
//! `text`, `caption`, `prompt` or the first other string column). Folders are read recursively;
//! a metadata file applies to the folder it is in and its subfolders (paths are relative to it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{Error, Record, RecordError, RecordStream, Result, decode_image, is_image_path};

/// Caption column names, in order of preference.
const CAPTION_COLUMNS: [&str; 4] = ["text", "caption", "prompt", "sentence"];

/// Open an image folder as a stream (images sorted by path; decoding is lazy).
pub fn open(root: &Path) -> Result<RecordStream> {
    let mut images = Vec::new();
    let mut captions: HashMap<PathBuf, String> = HashMap::new();
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    walk(root, &mut seen, &mut images, &mut captions, &mut problems)?;
    images.sort();
    if images.is_empty() {
        return Err(Error::Empty {
            path: root.to_path_buf(),
        });
    }
    let root = root.to_path_buf();
    let records = images.into_iter().map(move |path| {
        let location = path.display().to_string();
        let bytes = crate::read_capped(&path, crate::MAX_IMAGE_ALLOC).map_err(|e| RecordError {
            location: location.clone(),
            reason: format!("cannot read: {e}"),
        })?;
        let image = decode_image(&bytes, &location)?;
        let caption = match captions.get(&path) {
            Some(c) => c.clone(),
            None => {
                let sidecar = path.with_extension("txt");
                match std::fs::read_to_string(&sidecar) {
                    Ok(s) => s.trim().to_string(),
                    Err(_) => String::new(),
                }
            }
        };
        let key = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .with_extension("")
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/");
        Ok(Record {
            key,
            image,
            caption,
        })
    });
    let problems = problems.into_iter().map(Err);
    Ok(Box::new(problems.chain(records)))
}

/// Every image and metadata file under `dir`. Symlinked folders are followed, but no real
/// folder is read twice (`seen` holds the canonical paths read), so links that loop end.
fn walk(
    dir: &Path,
    seen: &mut std::collections::HashSet<PathBuf>,
    images: &mut Vec<PathBuf>,
    captions: &mut HashMap<PathBuf, String>,
    problems: &mut Vec<RecordError>,
) -> Result<()> {
    if let Ok(real) = std::fs::canonicalize(dir)
        && !seen.insert(real)
    {
        problems.push(RecordError {
            location: dir.display().to_string(),
            reason: "a link to a folder already read (a symlink loop or a second link); skipped"
                .into(),
        });
        return Ok(());
    }
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, seen, images, captions, problems)?;
        } else if is_image_path(&path) {
            images.push(path);
        } else if path.file_name().is_some_and(|n| n == "metadata.jsonl") {
            read_jsonl(&path, dir, captions, problems);
        } else if path.file_name().is_some_and(|n| n == "metadata.csv") {
            read_csv(&path, dir, captions, problems);
        }
    }
    Ok(())
}

fn read_jsonl(
    path: &Path,
    dir: &Path,
    captions: &mut HashMap<PathBuf, String>,
    problems: &mut Vec<RecordError>,
) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(RecordError {
                location: path.display().to_string(),
                reason: e.to_string(),
            });
            return;
        }
    };
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let location = format!("{}:{}", path.display(), i + 1);
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                problems.push(RecordError {
                    location,
                    reason: format!("invalid JSON: {e}"),
                });
                continue;
            }
        };
        let Some(obj) = value.as_object() else {
            problems.push(RecordError {
                location,
                reason: "line is not a JSON object".into(),
            });
            continue;
        };
        let Some(file) = obj.get("file_name").and_then(|v| v.as_str()) else {
            problems.push(RecordError {
                location,
                reason: "no `file_name` field".into(),
            });
            continue;
        };
        let caption = CAPTION_COLUMNS
            .iter()
            .find_map(|c| obj.get(*c).and_then(|v| v.as_str()))
            .or_else(|| {
                obj.iter()
                    .find(|(k, v)| *k != "file_name" && v.is_string())
                    .and_then(|(_, v)| v.as_str())
            })
            .unwrap_or("");
        captions.insert(dir.join(file), caption.trim().to_string());
    }
}

fn read_csv(
    path: &Path,
    dir: &Path,
    captions: &mut HashMap<PathBuf, String>,
    problems: &mut Vec<RecordError>,
) {
    let mut rdr = match csv::Reader::from_path(path) {
        Ok(r) => r,
        Err(e) => {
            problems.push(RecordError {
                location: path.display().to_string(),
                reason: e.to_string(),
            });
            return;
        }
    };
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            problems.push(RecordError {
                location: path.display().to_string(),
                reason: e.to_string(),
            });
            return;
        }
    };
    let Some(file_col) = headers.iter().position(|h| h == "file_name") else {
        problems.push(RecordError {
            location: path.display().to_string(),
            reason: "no `file_name` column".into(),
        });
        return;
    };
    let cap_col = CAPTION_COLUMNS
        .iter()
        .find_map(|c| headers.iter().position(|h| h == *c))
        .or_else(|| (0..headers.len()).find(|&i| i != file_col));
    for (i, row) in rdr.records().enumerate() {
        let location = format!("{}:{}", path.display(), i + 2);
        match row {
            Ok(row) => {
                let Some(file) = row.get(file_col) else {
                    continue;
                };
                let caption = cap_col.and_then(|c| row.get(c)).unwrap_or("");
                captions.insert(dir.join(file), caption.trim().to_string());
            }
            Err(e) => problems.push(RecordError {
                location,
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    fn png(path: &Path, v: u8) {
        RgbImage::from_pixel(4, 4, image::Rgb([v, v, v]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn sidecar_and_metadata_and_bad_records() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        png(&root.join("a.png"), 10);
        std::fs::write(root.join("a.txt"), "first caption\n").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        png(&root.join("sub/b.png"), 20);
        std::fs::write(
            root.join("sub/metadata.jsonl"),
            "{\"file_name\": \"b.png\", \"text\": \"second\"}\nnot json\n",
        )
        .unwrap();
        std::fs::create_dir(root.join("csv")).unwrap();
        png(&root.join("csv/c.png"), 30);
        std::fs::write(
            root.join("csv/metadata.csv"),
            "file_name,caption\nc.png,\"third, with comma\"\n",
        )
        .unwrap();
        std::fs::write(root.join("broken.jpg"), b"not a jpeg").unwrap();

        let items: Vec<_> = open(root).unwrap().collect();
        let ok: Vec<_> = items.iter().filter_map(|r| r.as_ref().ok()).collect();
        let bad: Vec<_> = items.iter().filter_map(|r| r.as_ref().err()).collect();
        let caps: Vec<(&str, &str)> = ok
            .iter()
            .map(|r| (r.key.as_str(), r.caption.as_str()))
            .collect();
        assert_eq!(
            caps,
            vec![
                ("a", "first caption"),
                ("csv/c", "third, with comma"),
                ("sub/b", "second")
            ]
        );
        assert_eq!(ok[2].image.get_pixel(0, 0).0, [20, 20, 20]);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad.iter().any(|e| e.location.ends_with("metadata.jsonl:2")));
        assert!(
            bad.iter()
                .any(|e| e.location.ends_with("broken.jpg") && e.reason.contains("decode"))
        );
    }

    /// Two links back to the folder itself: every image once, the loops reported, no hang.
    #[cfg(unix)]
    #[test]
    fn symlink_loops_end() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        png(&root.join("a.png"), 10);
        std::os::unix::fs::symlink(root, root.join("loop1")).unwrap();
        std::os::unix::fs::symlink(root, root.join("loop2")).unwrap();
        let items: Vec<_> = open(root).unwrap().collect();
        let ok = items.iter().filter(|r| r.is_ok()).count();
        let loops = items
            .iter()
            .filter_map(|r| r.as_ref().err())
            .filter(|e| e.reason.contains("symlink loop"))
            .count();
        assert_eq!((ok, loops), (1, 2), "{items:?}");
    }

    #[test]
    fn empty_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(open(dir.path()), Err(Error::Empty { .. })));
    }
}
