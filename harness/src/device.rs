//! `--device` values: `cpu` or `cuda[:N]`.

use anyhow::{Context, bail};

/// Open the device a `--device` value names. A CPU-only build says so for `cuda`.
pub fn open(spec: &str) -> anyhow::Result<candle_core::Device> {
    match spec {
        "cpu" => Ok(candle_core::Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let idx: usize = s
                .strip_prefix("cuda:")
                .unwrap_or("0")
                .parse()
                .with_context(|| format!("bad device `{s}` (cpu or cuda:N)"))?;
            if !cfg!(feature = "cuda") {
                bail!(
                    "this adt-bench was built without CUDA; build with `--features cuda` \
                     (scripts/build-cuda.sh) to use `{s}`"
                );
            }
            candle_core::Device::new_cuda(idx).with_context(|| format!("cannot open {s}"))
        }
        s => bail!("unknown device `{s}` (cpu or cuda:N)"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn device_names_parse_and_bad_ones_are_refused() {
        assert!(super::open("cpu").unwrap().is_cpu());
        assert!(
            super::open("tpu")
                .unwrap_err()
                .to_string()
                .contains("unknown device")
        );
        assert!(super::open("cuda:x").is_err());
        if !cfg!(feature = "cuda") {
            let e = super::open("cuda:0").unwrap_err().to_string();
            assert!(e.contains("built without CUDA"), "{e}");
        }
    }
}
