//! Weight packagings: a genuine `torch.save` state dict (made by torch, committed), and the
//! converted cache file against the archive it came from.

use adt_metrics::weights::read_tensors;

#[test]
fn reads_a_real_torch_save_state_dict() {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch_save_small.pth");
    let t = read_tensors(&p, b"PK\x03\x04").unwrap();
    let w = &t["Conv2d_1a_3x3.conv.weight"];
    assert_eq!(w.shape, [2, 3, 3, 3]);
    // torch.linspace(-1, 1, 54)
    for (i, v) in w.data.iter().enumerate() {
        let want = -1.0 + 2.0 * i as f32 / 53.0;
        assert!((v - want).abs() < 1e-6, "{i}: {v} vs {want}");
    }
    // A view into a shared storage at offset 4 of arange(12) * 0.5.
    assert_eq!(t["Conv2d_1a_3x3.bn.running_mean"].data, [2.0, 2.5]);
    assert_eq!(t["Conv2d_1a_3x3.bn.running_var"].data, [1.5, 2.5]);
    assert!(!t.contains_key("Conv2d_1a_3x3.bn.num_batches_tracked"));
}

#[test]
fn corrupt_weight_files_are_refused_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.pth");
    std::fs::write(&p, b"PK\x03\x04 this is not a zip").unwrap();
    let e = adt_metrics::InceptionWeights::load(&p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.pth") && e.contains("zip"), "{e}");
    std::fs::write(&p, b"hello").unwrap();
    let e = adt_metrics::InceptionWeights::load(&p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("neither"), "{e}");
}

/// A `torch.save`-shaped archive: `archive/data.pkl` and the given storage entries.
fn archive(dir: &std::path::Path, pickle: &[u8], storages: &[(&str, &[u8])]) -> std::path::PathBuf {
    use std::io::Write;
    let p = dir.join("hostile.pth");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
    let o =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", o).unwrap();
    z.write_all(pickle).unwrap();
    for (k, b) in storages {
        z.start_file(format!("archive/data/{k}"), o).unwrap();
        z.write_all(b).unwrap();
    }
    z.finish().unwrap();
    p
}

fn unicode(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

/// `{name: _rebuild_tensor_v2(storage('0', numel), offset, (n,), (1,), False, OrderedDict())}`
/// with the argument tuple cut to `args` items; `offset` as an 8-byte LONG1.
fn state_dict_pickle(name: &str, numel: u8, offset: i64, n: u8, args: usize) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    p.extend(unicode(name));
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    let mut items: Vec<Vec<u8>> = Vec::new();
    let mut storage = b"(".to_vec();
    storage.extend(unicode("storage"));
    storage.extend_from_slice(b"ctorch\nFloatStorage\n");
    storage.extend(unicode("0"));
    storage.extend(unicode("cpu"));
    storage.extend_from_slice(&[b'K', numel, b't', b'Q']);
    items.push(storage);
    let mut off = vec![0x8a, 8];
    off.extend_from_slice(&offset.to_le_bytes());
    items.push(off);
    items.push(vec![b'K', n, 0x85]);
    items.push(vec![b'K', 1, 0x85]);
    items.push(vec![0x89]);
    items.push(b"ccollections\nOrderedDict\n)R".to_vec());
    for it in items.into_iter().take(args) {
        p.extend(it);
    }
    p.extend_from_slice(b"tRu.");
    p
}

fn load_err(p: &std::path::Path) -> String {
    read_tensors(p, b"PK\x03\x04").unwrap_err().to_string()
}

/// The archive builder above reads back as torch writes it: a well-formed tensor is found.
#[test]
fn a_hand_built_archive_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = archive(
        dir.path(),
        &state_dict_pickle("w", 4, 1, 3, 6),
        &[("0", &data)],
    );
    let t = read_tensors(&p, b"PK\x03\x04").unwrap();
    assert_eq!(t["w"].shape, [3]);
    assert_eq!(t["w"].data, [2.0, 3.0, 4.0]);
}

/// Hostile pickles inside archives are refused with a message, quickly and without growing
/// memory: a short `_rebuild_tensor_v2` argument tuple, a storage offset of 2⁶²−1, a view past
/// the end of its storage, a memo re-read into a doubling tuple and two million nested tuples.
#[test]
fn hostile_pickles_are_refused_not_crashed_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = [0u8; 16];
    let p = archive(
        dir.path(),
        &state_dict_pickle("w", 4, 0, 3, 2),
        &[("0", &data)],
    );
    let e = load_err(&p);
    assert!(
        e.contains("fewer than four arguments") && e.contains("`w`"),
        "{e}"
    );

    let p = archive(
        dir.path(),
        &state_dict_pickle("w", 4, (1 << 62) - 1, 3, 6),
        &[("0", &data)],
    );
    let e = load_err(&p);
    assert!(e.contains("overflow"), "{e}");

    let p = archive(
        dir.path(),
        &state_dict_pickle("w", 4, 2, 3, 6),
        &[("0", &data)],
    );
    let e = load_err(&p);
    assert!(e.contains("holds 16 bytes, need 20"), "{e}");

    // t = (); then 40 rounds of t = (t, t) through the memo, as the root.
    let mut pk = vec![0x80, 2, b')', b'q', 0, b'0'];
    for _ in 0..40 {
        pk.extend_from_slice(&[b'h', 0, b'h', 0, 0x86, b'q', 0, b'0']);
    }
    pk.extend_from_slice(&[b'h', 0, b'.']);
    let start = std::time::Instant::now();
    let e = load_err(&archive(dir.path(), &pk, &[]));
    assert!(e.contains("holds no tensors"), "{e}");
    assert!(start.elapsed().as_secs() < 5);

    let mut pk = vec![0x80, 2, b')'];
    pk.extend(std::iter::repeat_n(0x85u8, 2_000_000));
    pk.push(b'.');
    let e = load_err(&archive(dir.path(), &pk, &[]));
    assert!(e.contains("holds no tensors"), "{e}");

    // A storage key that climbs out of the archive's data folder.
    let mut pk = state_dict_pickle("w", 4, 0, 3, 6);
    let at = pk.windows(6).position(|w| w == unicode("0")).unwrap();
    pk.splice(at..at + 6, unicode("../x"));
    let e = load_err(&archive(dir.path(), &pk, &[("0", &data)]));
    assert!(e.contains("names no file"), "{e}");
}
