//! The plugin boundary as users meet it: plugins built as `cdylib`s with cargo and loaded
//! dynamically through the same loader `adt-bench` uses.

use adt_integration_tests::{build_plugins, lib_name};
use adt_plugin_api::HostTensor;
use adt_plugin_host::{Denoise, Error, Kind, Model, Registry, check_library};

#[test]
fn tiny_loads_dynamically_and_matches_the_static_build() {
    let dir = build_plugins();
    let path = dir.join(lib_name("adt-plugin-tiny-dylib"));
    let info = check_library(&path).unwrap();
    assert_eq!(
        (info.name.as_str(), info.kind, info.abi.as_str()),
        (
            "tiny",
            Kind::Model,
            format!(
                "{}.{}",
                adt_plugin_api::abi::ABI_MAJOR,
                adt_plugin_api::abi::ABI_MINOR
            )
            .as_str()
        )
    );
    assert_eq!(
        info.source,
        adt_plugin_host::PluginSource::Library(path.clone())
    );

    let cfg = serde_json::json!({"weights": "random", "seed": 7});
    let mut dynamic = Model::create(&info, &cfg).unwrap();
    let builtin = Registry::with_builtins(&[adt_plugin_tiny::header]).unwrap();
    let mut stat = Model::create(builtin.find(Kind::Model, "tiny").unwrap(), &cfg).unwrap();
    assert_eq!(dynamic.describe().unwrap(), stat.describe().unwrap());

    let x = HostTensor {
        shape: vec![2, 3, 32, 32],
        data: (0..2 * 3 * 32 * 32)
            .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
            .collect(),
    };
    let mut outs = Vec::new();
    for m in [&mut dynamic, &mut stat] {
        let c = m
            .encode_prompts(&["a red circle".into(), "a blue square".into()])
            .unwrap();
        let u = m.encode_prompts(&[String::new()]).unwrap();
        let d = Denoise {
            x: &x,
            t: &[500.0, 900.0],
            cond: c,
            uncond: Some(u),
            guidance: 3.0,
            detach_uncond: false,
        };
        outs.push(m.denoise(&d).unwrap());
    }
    assert_eq!(outs[0].shape, vec![2, 3, 32, 32]);
    assert_eq!(
        outs[0], outs[1],
        "the dynamic and static builds must compute the same thing"
    );
    // A user error inside the plugin comes back as an error, not a crash.
    let bad = HostTensor::zeros(&[1, 3, 8, 8]);
    let c = dynamic.encode_prompts(&["x".into()]).unwrap();
    let err = dynamic.denoise(&Denoise {
        x: &bad,
        t: &[1.0],
        cond: c,
        uncond: None,
        guidance: 1.0,
        detach_uncond: false,
    });
    assert!(
        matches!(&err, Err(Error::Call { call: "denoise", message, .. }) if message.contains("[B, 3, 32, 32]")),
        "{err:?}"
    );
}

#[test]
fn another_abi_major_is_refused_before_anything_else_is_read() {
    let dir = build_plugins();
    let path = dir.join(lib_name("adt-test-plugin-bad-abi"));
    let err = check_library(&path).unwrap_err();
    match &err {
        Error::IncompatibleAbi {
            found_major: 99,
            host_major: 1,
            ..
        } => {}
        other => panic!("expected an ABI refusal, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("plugin ABI 99.0 is incompatible") && msg.contains("rebuild the plugin"),
        "{msg}"
    );
}

/// A plugin built against the SDK as released with ABI 1.0 (a verbatim copy of that SDK) loads
/// into this host: its description, lacking every field later minors added, reads with their
/// defaults, and the host drives it through a whole sampling command.
#[test]
fn a_plugin_built_against_abi_1_0_still_loads_and_runs() {
    let dir = build_plugins();
    let lib = dir.join(lib_name("adt-test-plugin-abi-1-0"));
    let info = check_library(&lib).unwrap();
    assert_eq!((info.name.as_str(), info.abi.as_str()), ("abi-1-0", "1.0"));
    let mut m = Model::create(&info, &serde_json::json!({})).unwrap();
    let d = m.describe().unwrap();
    assert!(d.trains && !d.sampler_default_spacing, "{d:?}");
    let x = HostTensor {
        shape: vec![1, 3, 4, 4],
        data: (0..48).map(|i| i as f32).collect(),
    };
    let c = m.encode_prompts(&["p".into()]).unwrap();
    let y = m
        .denoise(&Denoise {
            x: &x,
            t: &[10.0],
            cond: c,
            uncond: None,
            guidance: 1.0,
            detach_uncond: false,
        })
        .unwrap();
    assert_eq!(y.data[7], 3.5);
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        &lib,
        plugins.path().join(lib_name("adt-plugin-test-abi-1-0")),
    )
    .unwrap();
    let o = std::process::Command::new(adt_integration_tests::adt_bench())
        .arg("--plugin-path")
        .arg(plugins.path())
        .args([
            "sample",
            "--model",
            "abi-1-0",
            "--sampler",
            "ddim:3",
            "-n",
            "2",
        ])
        .arg("--out")
        .arg(plugins.path().join("out"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(plugins.path().join("out/000001.png").is_file());
}

#[test]
fn files_that_are_not_plugins_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join(lib_name("adt-plugin-fake"));
    std::fs::write(&fake, b"this is not a shared library").unwrap();
    let err = check_library(&fake).unwrap_err();
    assert!(matches!(err, Error::NotAPlugin { .. }), "{err:?}");
    assert!(err.to_string().contains("not a shared library"), "{err}");

    // A real shared library without the entry point (the test plugins' build has one: the
    // panicky plugin's dependency-free sibling is not available, so use the system's libm).
    for libm in [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
    ] {
        let p = std::path::Path::new(libm);
        if p.exists() {
            let err = check_library(p).unwrap_err();
            assert!(
                err.to_string().contains("exports no `adt_plugin_header`"),
                "{err}"
            );
            break;
        }
    }
    let missing = check_library(&tmp.path().join("nope.so")).unwrap_err();
    assert!(missing.to_string().contains("no such file"), "{missing}");
}

/// A shared library without the entry point is refused from its bytes: its constructor never
/// runs (it does when the dynamic loader maps the library, shown with `LD_PRELOAD`).
#[cfg(target_os = "linux")]
#[test]
fn a_library_that_is_not_a_plugin_is_refused_without_loading_it() {
    let dir = build_plugins();
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join(lib_name("adt-plugin-not-a-plugin"));
    std::fs::copy(dir.join(lib_name("adt-test-plugin-not-a-plugin")), &lib).unwrap();
    let mark = tmp.path().join("constructor-ran");
    let o = std::process::Command::new(adt_integration_tests::adt_bench())
        .args(["plugins", "check"])
        .arg(&lib)
        .env("ADT_TEST_CONSTRUCTOR_MARK", &mark)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("exports no `adt_plugin_header`"), "{err}");
    assert!(!mark.exists(), "checking the library ran its constructor");
    // The mark works: loading the library for real runs the constructor.
    let o = std::process::Command::new("/bin/sh")
        .args(["-c", "true"])
        .env("LD_PRELOAD", &lib)
        .env("ADT_TEST_CONSTRUCTOR_MARK", &mark)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        mark.exists(),
        "the constructor did not run when the library was loaded"
    );
}

#[test]
fn panics_inside_a_plugin_come_back_as_errors() {
    let dir = build_plugins();
    let info = check_library(&dir.join(lib_name("adt-test-plugin-panicky"))).unwrap();
    let err = Model::create(&info, &serde_json::json!({"panic_in_create": true})).unwrap_err();
    assert!(
        matches!(&err, Error::Panicked { call: "create", message, .. } if message.contains("panic in create")),
        "{err:?}"
    );

    let mut m = Model::create(&info, &serde_json::json!({})).unwrap();
    let x = HostTensor::zeros(&[1, 1, 2, 2]);
    let c = m.encode_prompts(&["p".into()]).unwrap();
    let err = m.denoise(&Denoise {
        x: &x,
        t: &[1.0],
        cond: c,
        uncond: None,
        guidance: 1.0,
        detach_uncond: false,
    });
    assert!(
        matches!(&err, Err(Error::Panicked { call: "denoise", message, .. }) if message.contains("index out of bounds")),
        "{err:?}"
    );
    // The process and the instance survive: the next call works.
    assert_eq!(m.describe().unwrap().name, "panicky");
    let err = m
        .step(&adt_plugin_api::OptimConfig::adamw(1e-3))
        .unwrap_err();
    assert!(matches!(&err, Error::Call { call: "step", .. }), "{err:?}");
    // Its training calls are the SDK's defaults: an ordinary error that names the call, and
    // the description says the plugin does not train.
    assert!(err.to_string().contains("`step` is not supported"), "{err}");
    assert!(!m.describe().unwrap().trains);
}

/// Finding a plugin opens only what it needs: a model by name opens the library named after
/// it, a broken library beside it stays unopened (its initialisers never run) until a listing
/// asks for every plugin.
#[test]
fn a_lookup_opens_only_the_library_it_needs() {
    let dir = build_plugins();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.join(lib_name("adt-test-plugin-panicky")),
        tmp.path().join(lib_name("adt-plugin-panicky")),
    )
    .unwrap();
    std::fs::copy(
        dir.join(lib_name("adt-test-plugin-bad-abi")),
        tmp.path().join(lib_name("adt-plugin-aaa-bad-abi")),
    )
    .unwrap();
    // Not a library at all, first in the folder's order.
    std::fs::write(tmp.path().join(lib_name("adt-plugin-aaa-junk")), b"not ELF").unwrap();
    let mut reg = Registry::with_builtins(&[adt_plugin_tiny::header]).unwrap();
    reg.scan(&[tmp.path().to_path_buf()]);
    assert!(reg.find(Kind::Model, "tiny").is_ok());
    assert_eq!(reg.loaded().len(), 1, "a built-in needed no library");
    let p = reg.find(Kind::Model, "panicky").unwrap();
    assert_eq!(p.name, "panicky");
    let loaded: Vec<&str> = reg.loaded().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(loaded, vec!["tiny", "panicky"]);
    assert!(
        reg.rejected().is_empty(),
        "libraries were opened for a lookup by name: {:?}",
        reg.rejected()
    );
    assert!(reg.of_kind(Kind::Sampler).next().is_none());
    assert_eq!(reg.rejected().len(), 2, "a kind lookup opens the rest");
    let all: Vec<&str> = reg.plugins().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(all, vec!["tiny", "panicky"]);
}

#[test]
fn scanning_a_folder_registers_plugins_and_records_refusals() {
    let dir = build_plugins();
    let tmp = tempfile::tempdir().unwrap();
    for k in [
        "adt-plugin-tiny-dylib",
        "adt-test-plugin-bad-abi",
        "adt-test-plugin-panicky",
    ] {
        // Copy under the `libadt_plugin_*` names the scanner looks for.
        let dst = tmp
            .path()
            .join(lib_name(&k.replace("adt-test-plugin-", "adt-plugin-test-")));
        std::fs::copy(dir.join(lib_name(k)), dst).unwrap();
    }
    let mut reg = Registry::default();
    reg.scan(&[tmp.path().to_path_buf()]);
    let names: Vec<&str> = reg.plugins().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["panicky", "tiny"]);
    let rejected = reg.rejected();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].1.contains("ABI 99.0"));
    let err = reg.find(Kind::Model, "sd15").unwrap_err();
    assert!(
        err.to_string().contains("available: panicky, tiny"),
        "{err}"
    );
}
