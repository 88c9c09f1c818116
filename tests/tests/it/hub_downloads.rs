//! Downloads from the Hugging Face hub, against a local stand-in that gives the same HTTP
//! answers (the repo listing with its commit; `resolve/REV/FILE` with `x-repo-commit`, `etag`
//! and `content-range`), so the pinning is tested without network: the pipeline loader of the
//! SD plugins and the CLIP score models' file fetcher.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// The commit `main` names when a repo is listed, and the one it has moved to for every
/// later request by branch name.
const OLD: &str = "1111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222";

/// The content of `file` at `commit`.
fn content(commit: &str, file: &str) -> Vec<u8> {
    format!("{file} at {commit}\n").into_bytes()
}

/// A hub serving `repo` with `files`, whose `main` is `OLD` in listings and `NEW` when a
/// file is asked for by branch name. Returns the endpoint and the request paths seen.
fn moving_hub(
    repo: &'static str,
    files: &'static [&'static str],
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let Ok(clone) = s.try_clone() else { continue };
            let mut r = BufReader::new(clone);
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut first_byte = false;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if h.to_ascii_lowercase().starts_with("range: bytes=0-0") {
                    first_byte = true;
                }
            }
            log.lock().unwrap().push(path.clone());
            let listing = format!("/api/models/{repo}/revision/");
            let resolve = format!("/{repo}/resolve/");
            let (status, headers, body): (&str, String, Vec<u8>) =
                if let Some(rev) = path.strip_prefix(&listing) {
                    let commit = if rev == "main" { OLD } else { rev };
                    let siblings: Vec<String> = files
                        .iter()
                        .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
                        .collect();
                    let body = format!(
                        "{{\"sha\":\"{commit}\",\"siblings\":[{}]}}",
                        siblings.join(",")
                    );
                    ("200 OK", String::new(), body.into_bytes())
                } else if let Some((rev, file)) =
                    path.strip_prefix(&resolve).and_then(|r| r.split_once('/'))
                {
                    if !files.contains(&file) {
                        ("404 Not Found", String::new(), Vec::new())
                    } else {
                        let commit = if rev == "main" { NEW } else { rev };
                        let body = content(commit, file);
                        let etag = hex(&<sha2::Sha256 as sha2::Digest>::digest(&body));
                        let mut h = format!("x-repo-commit: {commit}\r\netag: \"{etag}\"\r\n");
                        if first_byte {
                            h += &format!("content-range: bytes 0-0/{}\r\n", body.len());
                            ("206 Partial Content", h, body[..1].to_vec())
                        } else {
                            ("200 OK", h, body)
                        }
                    }
                } else {
                    ("404 Not Found", String::new(), Vec::new())
                };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    (endpoint, seen)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn no_fetch_by_branch(seen: &Mutex<Vec<String>>) {
    let paths = seen.lock().unwrap().clone();
    assert!(
        paths.iter().all(|p| !p.contains("/resolve/main/")),
        "a file was fetched by branch name: {paths:?}"
    );
}

/// A pipeline: every file comes from the commit the listing named, though `main` moves on
/// the hub meanwhile; the snapshot is that commit's, `refs/main` points at it, offline use
/// finds the same snapshot, and its origin (for manifests) is that commit.
#[test]
fn pipeline_downloads_pin_the_listed_commit() {
    use adt_plugin_sd::hub;
    const FILES: &[&str] = &[
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ];
    let (endpoint, seen) = moving_hub("org/pipe", FILES);
    let cache = tempfile::tempdir().unwrap();
    let snap =
        hub::resolve_in("org/pipe", Some(cache.path()), None, Some(Some(&endpoint))).unwrap();
    assert!(
        snap.ends_with(format!("snapshots/{OLD}")),
        "{}",
        snap.display()
    );
    for f in FILES {
        assert_eq!(std::fs::read(snap.join(f)).unwrap(), content(OLD, f), "{f}");
    }
    let root = cache.path().join("models--org--pipe");
    let main = std::fs::read_to_string(root.join("refs/main")).unwrap();
    assert_eq!(main.trim(), OLD);
    assert!(!root.join(format!("snapshots/{NEW}")).exists());
    no_fetch_by_branch(&seen);
    let offline = hub::resolve_in("org/pipe", Some(cache.path()), None, None).unwrap();
    assert_eq!(offline, snap);
    assert_eq!(hub::origin(&snap), Some(("org/pipe".into(), OLD.into())));
}

/// A score model's files, fetched one at a time: all from one commit (the listed one, then
/// the one the cache already names), never by branch name; an absent file is `None`.
#[test]
fn score_model_files_come_from_one_commit() {
    use adt_metrics::clip::hub;
    const FILES: &[&str] = &["config.json", "model.safetensors"];
    let (endpoint, seen) = moving_hub("org/clip", FILES);
    let cache = tempfile::tempdir().unwrap();
    let c = Some(cache.path().to_path_buf());
    let on = Some(Some(endpoint.as_str()));
    let mut got = Vec::new();
    for f in FILES {
        let p = hub::repo_file_in("org/clip", f, "--flag", c.clone(), on)
            .unwrap()
            .unwrap();
        assert!(
            p.parent().unwrap().ends_with(format!("snapshots/{OLD}")),
            "{}",
            p.display()
        );
        assert_eq!(std::fs::read(&p).unwrap(), content(OLD, f), "{f}");
        got.push(p);
    }
    let root = cache.path().join("models--org--clip");
    let main = std::fs::read_to_string(root.join("refs/main")).unwrap();
    assert_eq!(main.trim(), OLD);
    no_fetch_by_branch(&seen);
    let listings = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.starts_with("/api/"))
        .count();
    assert_eq!(
        listings, 1,
        "the second file used the commit the cache names"
    );
    assert_eq!(
        hub::repo_file_in("org/clip", "tokenizer.json", "--flag", c.clone(), on).unwrap(),
        None
    );
    let offline = hub::repo_file_in("org/clip", "config.json", "--flag", c, None).unwrap();
    assert_eq!(offline.as_ref(), got.first());
}
