//! Owned byte buffers crossing the boundary, freed by the side that allocated them.

use std::ffi::c_void;

use crate::abi::{AdtBuf, AdtStr};

unsafe extern "C" fn release_vec(ptr: *mut u8, len: usize, private: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    let cap = private as usize;
    // SAFETY: `ptr`, `len` and `cap` came from `vec_into_buf`, which leaked exactly this Vec.
    drop(unsafe { Vec::from_raw_parts(ptr, len, cap) });
}

/// Leak a `Vec<u8>` into an [`AdtBuf`] whose `release` rebuilds and drops it.
pub fn vec_into_buf(v: Vec<u8>) -> AdtBuf {
    let mut v = std::mem::ManuallyDrop::new(v);
    AdtBuf {
        ptr: v.as_mut_ptr(),
        len: v.len(),
        release: Some(release_vec),
        private: v.capacity() as *mut c_void,
    }
}

/// A string into an [`AdtBuf`].
pub fn string_into_buf(s: String) -> AdtBuf {
    vec_into_buf(s.into_bytes())
}

/// Copy an [`AdtBuf`] out as a `String` (lossy UTF-8) and release it.
///
/// # Safety
/// `b` must be a buffer filled by the other side (valid pointer/length and release).
pub unsafe fn take_string(b: AdtBuf) -> String {
    let s = if b.ptr.is_null() || b.len == 0 {
        String::new()
    } else {
        // SAFETY: guaranteed by the caller.
        String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(b.ptr, b.len) }).into_owned()
    };
    // SAFETY: as above.
    unsafe { release(b) };
    s
}

/// Release a buffer (no-op for an empty one).
///
/// # Safety
/// `b` must be a buffer filled by the other side, not yet released.
pub unsafe fn release(b: AdtBuf) {
    if let Some(f) = b.release {
        // SAFETY: calling the allocator's own release with its own arguments.
        unsafe { f(b.ptr, b.len, b.private) };
    }
}

/// Borrow a `&str` as an [`AdtStr`] valid while `s` lives.
pub fn str_as_abi(s: &str) -> AdtStr {
    AdtStr {
        ptr: s.as_ptr(),
        len: s.len(),
    }
}

/// Read an [`AdtStr`].
///
/// # Safety
/// `s` must point to `len` readable bytes for the duration of the call.
pub unsafe fn str_from_abi<'a>(s: AdtStr) -> Result<&'a str, std::str::Utf8Error> {
    if s.len == 0 {
        return Ok("");
    }
    // SAFETY: guaranteed by the caller.
    std::str::from_utf8(unsafe { std::slice::from_raw_parts(s.ptr, s.len) })
}
