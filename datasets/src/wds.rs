//! WebDataset tar shards (`000000.tar`, …): files grouped by key (the path up to the first dot
//! of the file name), an image (`key.jpg`, `.jpeg`, `.png`, `.webp`) with a caption in `key.txt`
//! or `key.json` (fields `caption`, `text` or `prompt`), as LAION- and JourneyDB-style data ship.
//! Shards are streamed: one sample in memory at a time.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::{Error, Record, RecordError, RecordStream, Result, decode_image};

/// Open a shard or a directory of shards (sorted by name).
///
/// A reader thread walks the shards and hands samples over a small bounded channel, so only a
/// few samples are in memory at a time however large the shards are.
pub fn open(path: &Path) -> Result<RecordStream> {
    let shards = crate::files_with_extension(path, "tar")?;
    for s in &shards {
        File::open(s).map_err(|source| Error::Io {
            path: s.clone(),
            source,
        })?;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(8);
    std::thread::Builder::new()
        .name("wds-reader".into())
        .spawn(move || {
            for shard in shards {
                if !read_shard(&shard, &tx) {
                    return;
                }
            }
        })
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Box::new(rx.into_iter()))
}

type Sender = std::sync::mpsc::SyncSender<std::result::Result<Record, RecordError>>;

#[derive(Default)]
struct Pending {
    key: String,
    image: Option<Vec<u8>>,
    txt: Option<String>,
    json: Option<String>,
}

/// Stream one shard into `tx`, grouping consecutive members by key. Returns false when the
/// receiver has gone away (the consumer stopped early).
fn read_shard(shard: &Path, tx: &Sender) -> bool {
    let loc = shard.display().to_string();
    let send = |item| tx.send(item).is_ok();
    let file = match File::open(shard) {
        Ok(f) => f,
        Err(e) => {
            return send(Err(RecordError {
                location: loc,
                reason: e.to_string(),
            }));
        }
    };
    let mut archive = tar::Archive::new(file);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            return send(Err(RecordError {
                location: loc,
                reason: format!("not a tar file: {e}"),
            }));
        }
    };
    let mut pending: Option<Pending> = None;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                if let Some(p) = pending.take()
                    && !send(finish(shard, p))
                {
                    return false;
                }
                return send(Err(RecordError {
                    location: loc,
                    reason: format!("corrupt tar entry: {e}"),
                }));
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let Ok(name) = entry.path().map(|p| p.to_string_lossy().into_owned()) else {
            continue;
        };
        let mut bytes = Vec::new();
        if let Err(e) = entry.read_to_end(&mut bytes) {
            if let Some(p) = pending.take()
                && !send(finish(shard, p))
            {
                return false;
            }
            return send(Err(RecordError {
                location: format!("{loc}:{name}"),
                reason: format!("truncated member: {e}"),
            }));
        }
        let (key, ext) = split_key(&name);
        if pending.as_ref().is_some_and(|p| p.key != key) {
            let p = pending.take().expect("checked above");
            if !send(finish(shard, p)) {
                return false;
            }
        }
        let p = pending.get_or_insert_with(|| Pending {
            key,
            ..Default::default()
        });
        match ext.as_str() {
            "jpg" | "jpeg" | "png" | "webp" => p.image = Some(bytes),
            "txt" => p.txt = Some(String::from_utf8_lossy(&bytes).into_owned()),
            "json" => p.json = Some(String::from_utf8_lossy(&bytes).into_owned()),
            _ => {}
        }
    }
    match pending {
        Some(p) => send(finish(shard, p)),
        None => true,
    }
}

fn finish(shard: &Path, p: Pending) -> std::result::Result<Record, RecordError> {
    let location = format!("{}:{}", shard.display(), p.key);
    let Some(bytes) = p.image else {
        return Err(RecordError {
            location,
            reason: "sample has no image (.jpg/.png/.webp)".into(),
        });
    };
    let image = decode_image(&bytes, &location)?;
    let caption = if let Some(t) = p.txt {
        t.trim().to_string()
    } else if let Some(j) = p.json {
        let v: serde_json::Value = serde_json::from_str(&j).map_err(|e| RecordError {
            location: location.clone(),
            reason: format!("invalid .json: {e}"),
        })?;
        ["caption", "text", "prompt"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|c| c.as_str()))
            .unwrap_or("")
            .trim()
            .to_string()
    } else {
        String::new()
    };
    Ok(Record {
        key: p.key,
        image,
        caption,
    })
}

/// Split a member name into (key, extension) at the first dot of the file name.
fn split_key(name: &str) -> (String, String) {
    let (dir, file) = match name.rfind('/') {
        Some(i) => (&name[..=i], &name[i + 1..]),
        None => ("", name),
    };
    match file.find('.') {
        Some(i) => (
            format!("{dir}{}", &file[..i]),
            file[i + 1..].to_ascii_lowercase(),
        ),
        None => (name.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;
    use std::io::Cursor;

    fn encode(img: &RgbImage, fmt: image::ImageFormat) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, fmt).unwrap();
        buf.into_inner()
    }

    fn add(builder: &mut tar::Builder<File>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder.append_data(&mut h, name, data).unwrap();
    }

    #[test]
    fn reads_samples_and_reports_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("000000.tar");
        let mut b = tar::Builder::new(File::create(&shard).unwrap());
        let img = RgbImage::from_pixel(6, 4, image::Rgb([200, 10, 10]));
        add(
            &mut b,
            "000000001.jpg",
            &encode(&img, image::ImageFormat::Jpeg),
        );
        add(&mut b, "000000001.txt", b"a red thing");
        add(
            &mut b,
            "000000002.png",
            &encode(&img, image::ImageFormat::Png),
        );
        add(
            &mut b,
            "000000002.json",
            br#"{"caption": "from json", "width": 6}"#,
        );
        add(&mut b, "000000003.jpg", b"garbage");
        add(&mut b, "000000003.txt", b"bad image");
        add(&mut b, "000000004.txt", b"caption only");
        b.into_inner().unwrap();
        let shard2 = dir.path().join("000001.tar");
        let mut b = tar::Builder::new(File::create(&shard2).unwrap());
        add(
            &mut b,
            "x/000000005.webp",
            &encode(&img, image::ImageFormat::WebP),
        );
        add(&mut b, "x/000000005.txt", b"webp");
        b.into_inner().unwrap();

        let items: Vec<_> = open(dir.path()).unwrap().collect();
        assert_eq!(items.len(), 5);
        let r1 = items[0].as_ref().unwrap();
        assert_eq!(
            (r1.key.as_str(), r1.caption.as_str()),
            ("000000001", "a red thing")
        );
        assert_eq!(r1.image.dimensions(), (6, 4));
        assert_eq!(items[1].as_ref().unwrap().caption, "from json");
        assert!(items[2].as_ref().unwrap_err().reason.contains("decode"));
        assert!(items[3].as_ref().unwrap_err().reason.contains("no image"));
        let r5 = items[4].as_ref().unwrap();
        assert_eq!(
            (r5.key.as_str(), r5.caption.as_str()),
            ("x/000000005", "webp")
        );
    }

    #[test]
    fn a_file_that_is_not_a_tar_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("000000.tar");
        std::fs::write(&shard, vec![7u8; 3000]).unwrap();
        let items: Vec<_> = open(&shard).unwrap().collect();
        assert!(!items.is_empty());
        assert!(items.iter().all(|r| r.is_err()));
    }

    #[test]
    fn key_splitting() {
        assert_eq!(
            split_key("a/b.c/0001.seg.jpg"),
            ("a/b.c/0001".to_string(), "seg.jpg".to_string())
        );
        assert_eq!(
            split_key("0001.TXT"),
            ("0001".to_string(), "txt".to_string())
        );
    }
}
