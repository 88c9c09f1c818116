//! A plugin from the future: ABI major 99. Its header keeps the fixed prefix (magic, major,
//! minor, size) but everything after it is garbage, so a host that read past the major version
//! check would crash; the host must refuse it having read only the prefix.

use adt_plugin_api::abi::{MAGIC, PluginHeader};

#[repr(C)]
pub struct FutureHeader {
    magic: [u8; 8],
    abi_major: u16,
    abi_minor: u16,
    header_size: u32,
    garbage: [usize; 4],
}

static HEADER: FutureHeader = FutureHeader {
    magic: MAGIC,
    abi_major: 99,
    abi_minor: 0,
    header_size: 48,
    garbage: [0xdead_beef; 4],
};

/// The entry point.
#[unsafe(no_mangle)]
pub extern "C" fn adt_plugin_header() -> *const PluginHeader {
    &HEADER as *const FutureHeader as *const PluginHeader
}
