//! A shared library that is not a plugin: no `adt_plugin_header` export, and a constructor
//! that, when the library is loaded, creates the file named by `ADT_TEST_CONSTRUCTOR_MARK`.
//! The host must refuse it from its bytes, so the mark is never made by a check.

/// Runs when the dynamic loader maps the library.
#[cfg(target_os = "linux")]
extern "C" fn mark() {
    if let Some(p) = std::env::var_os("ADT_TEST_CONSTRUCTOR_MARK") {
        let _ = std::fs::write(p, b"constructor ran");
    }
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static MARK: extern "C" fn() = mark;

/// Something to export, so the library is not empty.
#[unsafe(no_mangle)]
pub extern "C" fn adt_test_not_a_plugin() -> u32 {
    7
}
