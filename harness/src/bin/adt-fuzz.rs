//! `adt-fuzz`: a mutational fuzzer, on stable Rust, for every reader of untrusted bytes.
//!
//! Each reader gets a corpus of seeds — valid files made here or committed as test data, and
//! the hostile inputs these readers are known to have to survive (memo-doubling and deeply
//! nested pickles, huge declared sizes and offsets, malformed `.npy` headers, PNG headers of
//! absurd size) — and runs on mutations of them (bit flips, interesting integers, cut, repeated
//! and spliced ranges). A case fails when the reader panics, takes longer than the time limit,
//! or its allocations pass the memory limit (an allocation request past the limit aborts the
//! process: the input being read is always in `FINDINGS/current.bin`, named by reader).
//!
//! ```sh
//! adt-fuzz --seconds 120                      # what CI runs: every reader, a fixed seed
//! adt-fuzz --seconds 3600 --seed 7            # a longer run
//! adt-fuzz --reader pickle --seconds 600      # one reader
//! adt-fuzz --write-corpus fuzz-corpus         # the seeds as files (scripts/make-fuzz-corpus.sh)
//! ```
//!
//! Exit 0 when no case failed, 1 otherwise (each failing input is saved under `--findings`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The allocator of this binary: the system's, counting live bytes and refusing any single
/// request past [`MAX_ALLOC`].
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// The largest single allocation a reader may ask for.
const MAX_ALLOC: usize = 1 << 30;
/// The most a case may have live at once (beyond what was live when it started).
const MAX_LIVE: usize = 1536 << 20;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded to the system allocator with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Debug, Parser)]
#[command(
    name = "adt-fuzz",
    about = "Fuzz the readers of untrusted bytes",
    version
)]
struct Args {
    /// Total running time in seconds (split between the readers).
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Seed of the mutation sequence.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Only this reader (repeatable); `--list` names them.
    #[arg(long)]
    reader: Vec<String>,
    /// List the readers and their seed counts.
    #[arg(long)]
    list: bool,
    /// Time limit of one case, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    case_ms: u64,
    /// Folder for failing inputs (and `current.bin`, the input being read).
    #[arg(long, default_value = "target/fuzz-findings")]
    findings: PathBuf,
    /// Extra seeds: a folder with one subfolder per reader (as --write-corpus writes).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Write the built-in seeds to this folder and exit.
    #[arg(long)]
    write_corpus: Option<PathBuf>,
}

/// One reader: its name, its seeds and how to feed it bytes (`scratch` is a private folder).
struct Reader {
    name: &'static str,
    what: &'static str,
    seeds: fn() -> Vec<Vec<u8>>,
    read: fn(&[u8], &Path) -> Result<(), String>,
}

fn readers() -> Vec<Reader> {
    vec![
        Reader {
            name: "pickle",
            what: "the bounded pickle reader (data.pkl of PyTorch archives)",
            seeds: seeds::pickles,
            read: |b, _| {
                adt_metrics::pickle::parse(b, adt_metrics::pickle::Limits::default())
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        },
        Reader {
            name: "torch-zip",
            what: "`torch.save` and TorchScript archives (.pth/.pt/pytorch_model.bin)",
            seeds: seeds::torch_zips,
            read: |b, dir| read_weights(b, &dir.join("x.pth")),
        },
        Reader {
            name: "safetensors",
            what: "safetensors weights (header and tensors)",
            seeds: seeds::safetensors,
            read: |b, dir| read_weights(b, &dir.join("x.safetensors")),
        },
        Reader {
            name: "npz",
            what: "FID statistics (.npz with .npy members)",
            seeds: seeds::npz,
            read: |b, dir| {
                let p = dir.join("x.npz");
                std::fs::write(&p, b).map_err(|e| e.to_string())?;
                adt_metrics::npz::read_stats(&p)
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        },
        Reader {
            name: "npy",
            what: "one .npy array",
            seeds: seeds::npy,
            read: |b, _| adt_metrics::npz::parse_npy(b).map(drop),
        },
        Reader {
            name: "image",
            what: "image decoding (PNG, JPEG, WebP) with its limits",
            seeds: seeds::images,
            read: |b, _| adt_datasets::decode_image_bounded(b).map(drop),
        },
        Reader {
            name: "folder",
            what: "an image folder's metadata.jsonl",
            seeds: seeds::metadata,
            read: |b, dir| {
                let root = dir.join("folder");
                std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
                std::fs::write(root.join("a.png"), seeds::png(4, 4)).map_err(|e| e.to_string())?;
                std::fs::write(root.join("metadata.jsonl"), b).map_err(|e| e.to_string())?;
                drain(&adt_datasets::DataSpec::Folder { path: root })
            },
        },
        Reader {
            name: "parquet",
            what: "parquet files as Hugging Face datasets exports them",
            seeds: seeds::parquet,
            read: |b, dir| {
                let p = dir.join("x.parquet");
                std::fs::write(&p, b).map_err(|e| e.to_string())?;
                drain(&adt_datasets::DataSpec::Parquet { path: p })
            },
        },
        Reader {
            name: "wds",
            what: "webdataset tar shards",
            seeds: seeds::tars,
            read: |b, dir| {
                let p = dir.join("x.tar");
                std::fs::write(&p, b).map_err(|e| e.to_string())?;
                drain(&adt_datasets::DataSpec::WebDataset { path: p })
            },
        },
        Reader {
            name: "plugin-library",
            what: "plugin libraries' object-file check before they are loaded (ELF, Mach-O, PE)",
            seeds: seeds::libraries,
            read: |b, _| adt_plugin_host::exports_entry_point(b),
        },
        Reader {
            name: "config",
            what: "`run --config` TOML files",
            seeds: seeds::configs,
            read: |b, dir| {
                let p = dir.join("bench.toml");
                std::fs::write(&p, b).map_err(|e| e.to_string())?;
                let app = <adt_bench::cli::App as clap::Parser>::try_parse_from([
                    "adt-bench",
                    "run",
                    "--config",
                    p.to_str().unwrap_or("bench.toml"),
                ])
                .map_err(|e| e.to_string())?;
                let adt_bench::cli::Command::Run(a) = app.cmd else {
                    return Err("not a run".into());
                };
                adt_bench::cmd::run::config::apply(&a)
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        },
    ]
}

fn read_weights(b: &[u8], p: &Path) -> Result<(), String> {
    std::fs::write(p, b).map_err(|e| e.to_string())?;
    let head = &b[..b.len().min(8)];
    adt_metrics::weights::read_tensors(p, head)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Read up to 1000 records of a data source (errors are records too).
fn drain(spec: &adt_datasets::DataSpec) -> Result<(), String> {
    let stream = adt_datasets::open(spec).map_err(|e| e.to_string())?;
    let n = stream.take(1000).count();
    if n >= 1000 {
        return Err("the stream did not end within 1000 records of a one-image input".into());
    }
    Ok(())
}

mod seeds {
    use std::io::Write;

    pub fn png(w: u32, h: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        let img =
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8 * 40, y as u8 * 40, 90]));
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("encode");
        bytes
    }

    /// A PNG whose header declares `w × h` (the data is a few bytes, so decoding must refuse
    /// from the header).
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        v.extend_from_slice(&13u32.to_be_bytes());
        v.extend_from_slice(&ihdr);
        v.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(b"IEND");
        v.extend_from_slice(&crc32(b"IEND").to_be_bytes());
        v
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    pub fn images() -> Vec<Vec<u8>> {
        let img =
            image::RgbImage::from_fn(9, 7, |x, y| image::Rgb([x as u8 * 20, y as u8 * 30, 7]));
        let mut out = vec![
            png(5, 3),
            png_header(60_000, 60_000),
            png_header(1, 300_000),
        ];
        for f in [image::ImageFormat::Jpeg, image::ImageFormat::WebP] {
            let mut b = Vec::new();
            if img.write_to(&mut std::io::Cursor::new(&mut b), f).is_ok() {
                out.push(b);
            }
        }
        out
    }

    fn unicode(s: &str) -> Vec<u8> {
        let mut v = vec![b'X'];
        v.extend_from_slice(&(s.len() as u32).to_le_bytes());
        v.extend_from_slice(s.as_bytes());
        v
    }

    /// `{name: _rebuild_tensor_v2(storage, offset, (n,), (1,), False, OrderedDict())}`.
    fn state_dict(offset: i64, n: u8, args: usize) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'('];
        p.extend(unicode("w"));
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        let mut items: Vec<Vec<u8>> = Vec::new();
        let mut storage = b"(".to_vec();
        storage.extend(unicode("storage"));
        storage.extend_from_slice(b"ctorch\nFloatStorage\n");
        storage.extend(unicode("0"));
        storage.extend(unicode("cpu"));
        storage.extend_from_slice(&[b'K', 4, b't', b'Q']);
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

    pub fn pickles() -> Vec<Vec<u8>> {
        let mut doubling = vec![0x80, 2, b')', b'q', 0, b'0'];
        for _ in 0..64 {
            doubling.extend_from_slice(&[b'h', 0, b'h', 0, 0x86, b'q', 0, b'0']);
        }
        doubling.extend_from_slice(&[b'h', 0, b'.']);
        let mut nested = vec![0x80, 2, b')'];
        nested.extend(std::iter::repeat_n(0x85u8, 100_000));
        nested.push(b'.');
        vec![
            state_dict(1, 3, 6),
            state_dict(0, 3, 2),
            state_dict((1 << 62) - 1, 3, 6),
            doubling,
            nested,
        ]
    }

    fn zip(pickle: &[u8], storage: &[u8]) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut buf);
            let o = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            z.start_file("archive/data.pkl", o).expect("zip");
            z.write_all(pickle).expect("zip");
            z.start_file("archive/data/0", o).expect("zip");
            z.write_all(storage).expect("zip");
            z.finish().expect("zip");
        }
        buf.into_inner()
    }

    pub fn torch_zips() -> Vec<Vec<u8>> {
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut out: Vec<Vec<u8>> = pickles().iter().map(|p| zip(p, &data)).collect();
        out.push(include_bytes!("../../../metrics/tests/data/torch_save_small.pth").to_vec());
        out.push(
            include_bytes!("../../../metrics/tests/data/open-clip-compressed-f16.pt").to_vec(),
        );
        out
    }

    pub fn safetensors() -> Vec<Vec<u8>> {
        let header = br#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"k":"v"}}"#;
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header);
        v.extend_from_slice(&[0u8; 16]);
        let huge = br#"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,16]}}"#;
        let mut h = (huge.len() as u64).to_le_bytes().to_vec();
        h.extend_from_slice(huge);
        h.extend_from_slice(&[0u8; 16]);
        vec![v, h]
    }

    fn npy_bytes(header: &str, body: &[u8]) -> Vec<u8> {
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        v.extend_from_slice(&(h.len() as u16).to_le_bytes());
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(body);
        v
    }

    /// The sampler plugin library `cargo build --release` leaves beside this executable (the
    /// same seed wherever the workspace is built), and object-file fragments: truncated ELF,
    /// PE and Mach-O headers.
    pub fn libraries() -> Vec<Vec<u8>> {
        let mut out = vec![
            b"\x7fELF\x02\x01\x01\x00".to_vec(),
            b"MZ\x90\x00\x03".to_vec(),
            b"\xcf\xfa\xed\xfe\x07\x00\x00\x01".to_vec(),
        ];
        let name = format!(
            "{}adt_plugin_samplers_lib{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        );
        let lib = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join(name)));
        if let Some(p) = lib
            && std::fs::metadata(&p).is_ok_and(|m| m.len() <= 32 << 20)
            && let Ok(b) = std::fs::read(&p)
        {
            out.push(b);
        }
        out
    }

    pub fn npy() -> Vec<Vec<u8>> {
        vec![
            include_bytes!("../../../metrics/tests/data/expected_x.npy").to_vec(),
            npy_bytes(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
                &[0u8; 16],
            ),
            npy_bytes(
                "{'descr': '<f8', 'fortran_order': False, 'shape': ), }",
                &[],
            ),
            npy_bytes(
                "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 9223372036854775808), }",
                &[],
            ),
        ]
    }

    pub fn npz() -> Vec<Vec<u8>> {
        let mut out = vec![
            include_bytes!("../../../metrics/tests/data/clean_fid_style.npz").to_vec(),
            include_bytes!("../../../metrics/tests/data/pytorch_fid_style.npz").to_vec(),
            include_bytes!("../../../metrics/tests/data/fortran_f32.npz").to_vec(),
        ];
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut buf);
            let o = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            for (name, a) in npy().into_iter().skip(1).take(2).enumerate() {
                z.start_file(if name == 0 { "mu.npy" } else { "sigma.npy" }, o)
                    .expect("zip");
                z.write_all(&a).expect("zip");
            }
            z.finish().expect("zip");
        }
        out.push(buf.into_inner());
        out
    }

    pub fn metadata() -> Vec<Vec<u8>> {
        vec![
            b"{\"file_name\": \"a.png\", \"text\": \"a red square\"}\n".to_vec(),
            b"{\"file_name\": \"../../etc/passwd\", \"text\": \"x\"}\n{\"file_name\": \"a.png\"}\n"
                .to_vec(),
        ]
    }

    pub fn parquet() -> Vec<Vec<u8>> {
        vec![include_bytes!("../../../datasets/tests/data/hf_export.parquet").to_vec()]
    }

    fn tar_entry(out: &mut Vec<u8>, name: &str, size_field: &str, body: &[u8]) {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        let s = size_field.as_bytes();
        h[124..124 + s.len()].copy_from_slice(s);
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        let c = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(c.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    pub fn tars() -> Vec<Vec<u8>> {
        let img = png(4, 4);
        let mut ok = Vec::new();
        tar_entry(&mut ok, "0001.png", &format!("{:011o}", img.len()), &img);
        tar_entry(&mut ok, "0001.txt", &format!("{:011o}", 7), b"a caption");
        ok.extend_from_slice(&[0u8; 1024]);
        let mut evil = Vec::new();
        tar_entry(
            &mut evil,
            "../../evil.png",
            &format!("{:011o}", img.len()),
            &img,
        );
        evil.extend_from_slice(&[0u8; 1024]);
        let mut huge = Vec::new();
        tar_entry(&mut huge, "0001.png", "77777777777", &img);
        huge.extend_from_slice(&[0u8; 1024]);
        vec![ok, evil, huge]
    }

    pub fn configs() -> Vec<Vec<u8>> {
        vec![
            b"models = [\"tiny\"]\nseeds = [0, 1]\nnum = 8\n[tune]\niters = 4\n[models.tiny]\nscores = []\n"
                .to_vec(),
            b"eval_samplers = [\"ddim:4\"]\nbatch = 99999999999999999999\n".to_vec(),
        ]
    }
}

/// One mutation of `b` (in place), drawing from `rng`; `other` is another seed to splice from.
fn mutate(b: &mut Vec<u8>, other: &[u8], rng: &mut ChaCha8Rng) {
    const INTERESTING: [u64; 8] = [
        0,
        1,
        0x7f,
        0xff,
        0x7fff_ffff,
        0xffff_ffff,
        1 << 62,
        u64::MAX,
    ];
    if b.is_empty() {
        b.push(rng.random());
        return;
    }
    let n = b.len();
    match rng.random_range(0..8) {
        0 => {
            let i = rng.random_range(0..n);
            b[i] ^= 1 << rng.random_range(0..8);
        }
        1 => {
            let i = rng.random_range(0..n);
            b[i] = rng.random();
        }
        2 => {
            let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
            let w = [1usize, 2, 4, 8][rng.random_range(0..4)].min(n);
            let i = rng.random_range(0..=n - w);
            b[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
        }
        3 => {
            // Cut.
            let i = rng.random_range(0..n);
            b.truncate(i.max(1));
        }
        4 => {
            // Delete a range.
            let i = rng.random_range(0..n);
            let len = rng.random_range(1..=(n - i).min(64));
            b.drain(i..i + len);
        }
        5 => {
            // Repeat a range.
            let i = rng.random_range(0..n);
            let len = rng.random_range(1..=(n - i).min(64));
            let piece = b[i..i + len].to_vec();
            let times = rng.random_range(1..16);
            for _ in 0..times {
                b.splice(i..i, piece.iter().copied());
            }
        }
        6 if !other.is_empty() => {
            // Splice in part of another seed.
            let j = rng.random_range(0..other.len());
            let len = rng.random_range(1..=(other.len() - j).min(256));
            let i = rng.random_range(0..=n);
            b.splice(i..i, other[j..j + len].iter().copied());
        }
        _ => {
            // An ASCII digit run (sizes in text headers: npy, tar, TOML, JSON).
            let i = rng.random_range(0..n);
            let digits = format!("{}", INTERESTING[rng.random_range(0..INTERESTING.len())]);
            let end = (i + digits.len()).min(n);
            b.splice(i..end, digits.bytes());
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let all = readers();
    if args.list {
        for r in &all {
            println!("{:<14} {:>3} seeds  {}", r.name, (r.seeds)().len(), r.what);
        }
        return std::process::ExitCode::SUCCESS;
    }
    if let Some(dir) = &args.write_corpus {
        for r in &all {
            let d = dir.join(r.name);
            if let Err(e) = std::fs::create_dir_all(&d) {
                eprintln!("cannot create {}: {e}", d.display());
                return std::process::ExitCode::FAILURE;
            }
            for (i, s) in (r.seeds)().iter().enumerate() {
                if let Err(e) = std::fs::write(d.join(format!("seed-{i:03}.bin")), s) {
                    eprintln!("cannot write the corpus: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
        println!("seeds written to {}", dir.display());
        return std::process::ExitCode::SUCCESS;
    }
    let chosen: Vec<&Reader> = all
        .iter()
        .filter(|r| args.reader.is_empty() || args.reader.iter().any(|n| n == r.name))
        .collect();
    if chosen.is_empty() {
        eprintln!("no such reader; `adt-fuzz --list` names them");
        return std::process::ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::create_dir_all(&args.findings) {
        eprintln!("cannot create {}: {e}", args.findings.display());
        return std::process::ExitCode::FAILURE;
    }
    let scratch = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("no scratch folder: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Panics are findings, reported below; the default hook's message would only repeat it.
    std::panic::set_hook(Box::new(|_| {}));
    let per_reader = Duration::from_secs(args.seconds) / chosen.len() as u32;
    let case_limit = Duration::from_millis(args.case_ms);
    let mut failures = 0usize;
    println!(
        "{:<12} {:>8} {:>8} {:>10} {:>9}  findings",
        "reader", "cases", "errors", "slowest", "peak MiB"
    );
    for r in chosen {
        let mut corpus = (r.seeds)();
        if let Some(dir) = &args.corpus
            && let Ok(rd) = std::fs::read_dir(dir.join(r.name))
        {
            for e in rd.flatten() {
                if let Ok(b) = std::fs::read(e.path()) {
                    corpus.push(b);
                }
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ fxhash(r.name));
        let start = Instant::now();
        let (mut cases, mut errors, mut slowest, mut peak) = (0u64, 0u64, Duration::ZERO, 0usize);
        let mut found: Vec<String> = Vec::new();
        let current = args.findings.join("current.bin");
        let case_dir = scratch.path().join(r.name);
        while start.elapsed() < per_reader {
            // Seeds as they are first, then mutations (1–4 stacked).
            let input = if (cases as usize) < corpus.len() {
                corpus[cases as usize].clone()
            } else {
                let mut b = corpus[rng.random_range(0..corpus.len())].clone();
                let other = corpus[rng.random_range(0..corpus.len())].clone();
                for _ in 0..rng.random_range(1..=4) {
                    mutate(&mut b, &other, &mut rng);
                }
                b
            };
            if let Ok(mut f) = std::fs::File::create(&current) {
                let _ = writeln!(f, "{}", r.name);
                let _ = f.write_all(&input);
            }
            let _ = std::fs::remove_dir_all(&case_dir);
            let _ = std::fs::create_dir_all(&case_dir);
            let base = LIVE.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let t = Instant::now();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (r.read)(&input, &case_dir)
            }));
            let took = t.elapsed();
            let used = PEAK.load(Ordering::Relaxed).saturating_sub(base);
            cases += 1;
            slowest = slowest.max(took);
            peak = peak.max(used);
            let problem = match result {
                Err(p) => Some(format!(
                    "panic: {}",
                    p.downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| p.downcast_ref::<&str>().copied())
                        .unwrap_or("?")
                )),
                Ok(_) if took > case_limit => Some(format!("slow: {} ms", took.as_millis())),
                Ok(_) if used > MAX_LIVE => Some(format!("memory: {} MiB", used >> 20)),
                Ok(Err(_)) => {
                    errors += 1;
                    None
                }
                Ok(Ok(())) => None,
            };
            if let Some(problem) = problem {
                let name = format!("{}-{}.bin", r.name, found.len());
                let _ = std::fs::write(args.findings.join(&name), &input);
                found.push(format!("{name}: {problem}"));
                if found.len() >= 20 {
                    break;
                }
            }
        }
        let _ = std::fs::remove_file(&current);
        println!(
            "{:<12} {:>8} {:>8} {:>8}ms {:>9}  {}",
            r.name,
            cases,
            errors,
            slowest.as_millis(),
            peak >> 20,
            if found.is_empty() {
                "none".to_string()
            } else {
                found.len().to_string()
            }
        );
        for f in &found {
            println!("    {f}");
        }
        failures += found.len();
    }
    if failures > 0 {
        println!(
            "{failures} failing input(s) saved in {}",
            args.findings.display()
        );
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// A stable hash of a reader's name (its own mutation stream).
fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}
