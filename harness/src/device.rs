//! `--device` values: `cpu` or `cuda[:N]`.

/// Open the device a `--device` value names (the parsing plugins use too: `adt_plugin_kit::device`).
/// A CPU-only build says so for `cuda`.
pub fn open(spec: &str) -> anyhow::Result<candle_core::Device> {
    adt_plugin_kit::device(Some(spec)).map_err(|e| anyhow::anyhow!("{e}"))
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
            assert!(e.contains("has no CUDA"), "{e}");
        }
    }
}
