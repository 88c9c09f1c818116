//! The C ABI itself: `#[repr(C)]` data only. Nothing here may change within an ABI major
//! version except by appending fields at the end of a table (a minor bump); the host checks the
//! table's `size` field before using a field added in a later minor.
//!
//! Ownership: buffers a plugin returns ([`AdtBuf`], [`AdtTensor`]) carry their own `release`
//! callback, which the host calls once it has copied the bytes, so memory is always freed by the
//! allocator that made it. Inputs the host passes ([`AdtTensorView`], [`AdtStr`]) are borrowed
//! for the duration of the call only.

use std::ffi::{c_char, c_void};

/// Magic bytes at the start of every [`PluginHeader`].
pub const MAGIC: [u8; 8] = *b"ADTPLUGN";
/// ABI major version: bumped when symbols, layouts or semantics change incompatibly.
pub const ABI_MAJOR: u16 = 1;
/// ABI minor version: bumped when fields are appended to a table.
pub const ABI_MINOR: u16 = 0;
/// The symbol every dynamically loaded plugin exports (see [`HeaderFn`]).
pub const HEADER_SYMBOL: &str = "adt_plugin_header";
/// The largest tensor rank that crosses the boundary.
pub const MAX_RANK: usize = 8;

/// Signature of the [`HEADER_SYMBOL`] export.
pub type HeaderFn = unsafe extern "C" fn() -> *const PluginHeader;

/// What kind of plugin a header describes.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    /// A diffusion model: the table is a [`ModelApiV1`].
    Model = 1,
    /// A sampler family: the table is a [`SamplerApiV1`].
    Sampler = 2,
}

/// The first thing the host reads from a plugin. The first four fields (`magic`, `abi_major`,
/// `abi_minor`, `header_size`) keep this layout in every ABI version, so any host can refuse
/// any plugin cleanly; the rest is read only once the major version matches.
#[repr(C)]
pub struct PluginHeader {
    /// Must equal [`MAGIC`].
    pub magic: [u8; 8],
    /// The plugin's ABI major version.
    pub abi_major: u16,
    /// The plugin's ABI minor version.
    pub abi_minor: u16,
    /// `size_of::<PluginHeader>()` as the plugin was compiled.
    pub header_size: u32,
    /// A [`PluginKind`] value.
    pub kind: u32,
    /// Plugin name (NUL-terminated UTF-8), e.g. `tiny`.
    pub name: *const c_char,
    /// Plugin version (NUL-terminated), e.g. `0.1.0`.
    pub version: *const c_char,
    /// Build features as a NUL-terminated JSON array, e.g. `["cpu"]` or `["cpu","cuda"]`.
    pub features: *const c_char,
    /// The function table: `*const ModelApiV1` or `*const SamplerApiV1` according to `kind`.
    pub api: *const c_void,
}

impl std::fmt::Debug for PluginHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHeader")
            .field("abi_major", &self.abi_major)
            .field("abi_minor", &self.abi_minor)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

// SAFETY: a header is immutable static data (pointers to static strings and tables).
unsafe impl Sync for PluginHeader {}
// SAFETY: as above.
unsafe impl Send for PluginHeader {}

/// Status of every call.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Success; outputs are filled.
    Ok = 0,
    /// A reported error; the error buffer holds a UTF-8 message.
    Error = 1,
    /// The plugin panicked; the panic was caught and its message is in the error buffer.
    Panic = 2,
}

/// Borrowed UTF-8 bytes passed host → plugin for the duration of a call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AdtStr {
    /// Start of the bytes (may be null when `len` is 0).
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

/// Release callback for an [`AdtBuf`].
pub type ReleaseFn = unsafe extern "C" fn(ptr: *mut u8, len: usize, private: *mut c_void);

/// An owned byte buffer passed plugin → host; the host calls `release` exactly once.
#[repr(C)]
pub struct AdtBuf {
    /// Start of the bytes.
    pub ptr: *mut u8,
    /// Number of bytes.
    pub len: usize,
    /// Frees the buffer (null for an empty buffer that owns nothing).
    pub release: Option<ReleaseFn>,
    /// Opaque data for `release`.
    pub private: *mut c_void,
}

impl AdtBuf {
    /// An empty buffer that owns nothing.
    pub const EMPTY: AdtBuf = AdtBuf {
        ptr: std::ptr::null_mut(),
        len: 0,
        release: None,
        private: std::ptr::null_mut(),
    };
}

/// Element types of tensors crossing the boundary.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float (the only type the v1 SDK produces).
    F32 = 0,
    /// 16-bit float.
    F16 = 1,
    /// bfloat16.
    BF16 = 2,
    /// 64-bit float.
    F64 = 3,
}

/// A borrowed tensor, host → plugin: C-contiguous, row-major, in host memory.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AdtTensorView {
    /// A [`DType`] value.
    pub dtype: u32,
    /// Number of dimensions used in `shape`.
    pub rank: u32,
    /// Dimensions (the first `rank` entries are used).
    pub shape: [u64; MAX_RANK],
    /// Start of the data.
    pub data: *const u8,
    /// Size of the data in bytes (must equal the product of the shape times the element size).
    pub nbytes: usize,
}

/// An owned tensor, plugin → host, with its release callback inside `data`.
#[repr(C)]
pub struct AdtTensor {
    /// A [`DType`] value.
    pub dtype: u32,
    /// Number of dimensions used in `shape`.
    pub rank: u32,
    /// Dimensions.
    pub shape: [u64; MAX_RANK],
    /// The bytes, with their release callback.
    pub data: AdtBuf,
}

impl AdtTensor {
    /// An empty tensor that owns nothing (an unused output).
    pub const EMPTY: AdtTensor = AdtTensor {
        dtype: 0,
        rank: 0,
        shape: [0; MAX_RANK],
        data: AdtBuf::EMPTY,
    };
}

/// Arguments of one denoiser evaluation.
#[repr(C)]
pub struct AdtDenoiseArgs {
    /// The noisy input, `[B, C, H, W]` in the model's latent space.
    pub x: AdtTensorView,
    /// Model time per example, `[B]` f32, in the units of the model's description.
    pub t: AdtTensorView,
    /// Conditioning handle from `encode_prompts` (B prompts, or 1 broadcast).
    pub cond: u64,
    /// Unconditional handle for classifier-free guidance, or 0 for none.
    pub uncond: u64,
    /// Guidance scale (ignored when `uncond` is 0): out = u + g·(c − u).
    pub guidance: f32,
    /// Non-zero: the unconditional branch carries no gradient in `denoise_vjp`.
    pub detach_uncond: u32,
}

/// Opaque model instance.
pub type Instance = *mut c_void;

/// The function table of a model plugin, ABI 1.
///
/// Every function returns a [`Status`] as `i32` and, on failure, fills `err` with a UTF-8
/// message the host must release. Outputs are only valid on success.
#[repr(C)]
pub struct ModelApiV1 {
    /// `size_of::<ModelApiV1>()` as the plugin was compiled.
    pub size: usize,
    /// Create an instance from a JSON config (`{"weights": path?, "device": "cpu", "seed": n, ...}`).
    pub create: unsafe extern "C" fn(config: AdtStr, out: *mut Instance, err: *mut AdtBuf) -> i32,
    /// Destroy an instance.
    pub destroy: unsafe extern "C" fn(inst: Instance),
    /// JSON [`crate::ModelDescription`].
    pub describe: unsafe extern "C" fn(inst: Instance, out: *mut AdtBuf, err: *mut AdtBuf) -> i32,
    /// Encode a JSON array of prompts into a conditioning handle kept inside the plugin.
    pub encode_prompts: unsafe extern "C" fn(
        inst: Instance,
        prompts: AdtStr,
        out: *mut u64,
        err: *mut AdtBuf,
    ) -> i32,
    /// Free a conditioning handle.
    pub release_cond: unsafe extern "C" fn(inst: Instance, handle: u64, err: *mut AdtBuf) -> i32,
    /// Images `[B, 3, H, W]` in [-1, 1] → latents.
    pub encode_images: unsafe extern "C" fn(
        inst: Instance,
        images: AdtTensorView,
        out: *mut AdtTensor,
        err: *mut AdtBuf,
    ) -> i32,
    /// Latents → images `[B, 3, H, W]` in [-1, 1] (unclamped).
    pub decode: unsafe extern "C" fn(
        inst: Instance,
        latents: AdtTensorView,
        out: *mut AdtTensor,
        err: *mut AdtBuf,
    ) -> i32,
    /// Latent cotangent of `decode` at `latents` for an image cotangent.
    pub decode_vjp: unsafe extern "C" fn(
        inst: Instance,
        latents: AdtTensorView,
        cotangent: AdtTensorView,
        out: *mut AdtTensor,
        err: *mut AdtBuf,
    ) -> i32,
    /// One model evaluation without gradient.
    pub denoise: unsafe extern "C" fn(
        inst: Instance,
        args: *const AdtDenoiseArgs,
        out: *mut AdtTensor,
        err: *mut AdtBuf,
    ) -> i32,
    /// Recompute one evaluation with gradient and accumulate J_θᵀ·cotangent into the parameter
    /// gradients; when `want_input_cotangent` is non-zero also return J_xᵀ·cotangent in `out`.
    pub denoise_vjp: unsafe extern "C" fn(
        inst: Instance,
        args: *const AdtDenoiseArgs,
        cotangent: AdtTensorView,
        want_input_cotangent: u32,
        out: *mut AdtTensor,
        err: *mut AdtBuf,
    ) -> i32,
    /// The model's pre-training loss on `x0` (latents) with fresh noise and times drawn from
    /// `seed`; gradients of `weight·loss` are accumulated; the unweighted loss is returned.
    pub diffusion_loss: unsafe extern "C" fn(
        inst: Instance,
        x0: AdtTensorView,
        cond: u64,
        seed: u64,
        weight: f64,
        out_loss: *mut f64,
        err: *mut AdtBuf,
    ) -> i32,
    /// Clear the accumulated gradients.
    pub zero_grad: unsafe extern "C" fn(inst: Instance, err: *mut AdtBuf) -> i32,
    /// Apply the optimizer (JSON [`crate::OptimConfig`]) to the accumulated gradients; JSON
    /// [`crate::StepStats`] out.
    pub step: unsafe extern "C" fn(
        inst: Instance,
        config: AdtStr,
        out: *mut AdtBuf,
        err: *mut AdtBuf,
    ) -> i32,
    /// Write weights and optimizer state under a directory.
    pub save_state: unsafe extern "C" fn(inst: Instance, dir: AdtStr, err: *mut AdtBuf) -> i32,
    /// Read what `save_state` wrote.
    pub load_state: unsafe extern "C" fn(inst: Instance, dir: AdtStr, err: *mut AdtBuf) -> i32,
}

/// The function table of a sampler plugin, ABI 1. Samplers are stateless.
#[repr(C)]
#[derive(Debug)]
pub struct SamplerApiV1 {
    /// `size_of::<SamplerApiV1>()` as the plugin was compiled.
    pub size: usize,
    /// JSON array of [`crate::SamplerInfo`].
    pub list: unsafe extern "C" fn(out: *mut AdtBuf, err: *mut AdtBuf) -> i32,
    /// JSON [`crate::PlanRequest`] in, JSON [`crate::Plan`] out.
    pub plan: unsafe extern "C" fn(request: AdtStr, out: *mut AdtBuf, err: *mut AdtBuf) -> i32,
}
