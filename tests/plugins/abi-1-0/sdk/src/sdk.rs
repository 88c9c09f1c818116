//! The plugin author's SDK: implement [`ModelPlugin`] (or [`SamplerPlugin`]) in safe Rust and
//! call [`crate::export_model_plugin!`] (or [`crate::export_sampler_plugin!`]) once; the macros
//! and the generic shims below write every `extern "C"` function, catch panics, convert errors
//! to status + message and move buffers across with release callbacks.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use crate::abi::{
    AdtBuf, AdtDenoiseArgs, AdtStr, AdtTensor, AdtTensorView, Instance, ModelApiV1, SamplerApiV1,
    Status,
};
use crate::buf::{str_from_abi, string_into_buf};
use crate::tensor::{HostTensor, TensorRef, view_from_abi};
use crate::types::{ModelDescription, OptimConfig, Plan, PlanRequest, SamplerInfo, StepStats};

/// An error a plugin reports to the host: a message. Any `std::error::Error` converts with `?`.
pub struct PluginError(pub String);

impl PluginError {
    /// An error from a message.
    pub fn msg(m: impl Into<String>) -> Self {
        PluginError(m.into())
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PluginError({:?})", self.0)
    }
}

impl<E: std::error::Error> From<E> for PluginError {
    fn from(e: E) -> Self {
        // Keep the whole source chain: "outer: inner: innermost".
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        PluginError(msg)
    }
}

/// Result type of plugin methods.
pub type PluginResult<T> = Result<T, PluginError>;

/// Arguments of one denoiser evaluation, as a plugin sees them.
#[derive(Debug, Clone, Copy)]
pub struct DenoiseArgs<'a> {
    /// Noisy latents `[B, C, H, W]`.
    pub x: TensorRef<'a>,
    /// Model time per example (`B` values).
    pub t: &'a [f32],
    /// Conditioning handle (B prompts, or 1 to broadcast).
    pub cond: u64,
    /// Unconditional handle for classifier-free guidance.
    pub uncond: Option<u64>,
    /// Guidance scale: out = u + g·(c − u).
    pub guidance: f32,
    /// The unconditional branch carries no gradient in `denoise_vjp`.
    pub detach_uncond: bool,
}

/// A diffusion model behind the plugin boundary. One instance is used from one thread at a
/// time; methods take `&mut self` so implementations need no locking.
pub trait ModelPlugin: Sized + 'static {
    /// Build an instance from its JSON config (`weights`, `device`, `seed`, plugin-specific keys).
    fn create(config: &serde_json::Value) -> PluginResult<Self>;
    /// Describe the instance.
    fn describe(&self) -> PluginResult<ModelDescription>;
    /// Encode prompts into a conditioning handle owned by the plugin.
    fn encode_prompts(&mut self, prompts: &[String]) -> PluginResult<u64>;
    /// Free a handle.
    fn release_cond(&mut self, handle: u64) -> PluginResult<()>;
    /// Images in [-1, 1] → latents (identity for pixel models).
    fn encode_images(&mut self, images: TensorRef<'_>) -> PluginResult<HostTensor>;
    /// Latents → images in [-1, 1].
    fn decode(&mut self, latents: TensorRef<'_>) -> PluginResult<HostTensor>;
    /// Latent cotangent of `decode` at `latents`.
    fn decode_vjp(
        &mut self,
        latents: TensorRef<'_>,
        cotangent: TensorRef<'_>,
    ) -> PluginResult<HostTensor>;
    /// One evaluation without gradient.
    fn denoise(&mut self, args: &DenoiseArgs<'_>) -> PluginResult<HostTensor>;
    /// Recompute one evaluation with gradient; accumulate J_θᵀ·cotangent into the parameter
    /// gradients; return J_xᵀ·cotangent when `want_input_cotangent`.
    fn denoise_vjp(
        &mut self,
        args: &DenoiseArgs<'_>,
        cotangent: TensorRef<'_>,
        want_input_cotangent: bool,
    ) -> PluginResult<Option<HostTensor>>;
    /// Pre-training loss on fresh noise drawn from `seed`; accumulates gradients of `weight·loss`.
    fn diffusion_loss(
        &mut self,
        x0: TensorRef<'_>,
        cond: u64,
        seed: u64,
        weight: f64,
    ) -> PluginResult<f64>;
    /// Clear accumulated gradients.
    fn zero_grad(&mut self) -> PluginResult<()>;
    /// Apply AdamW to the accumulated gradients.
    fn step(&mut self, config: &OptimConfig) -> PluginResult<StepStats>;
    /// Save weights and optimizer state under `dir`.
    fn save_state(&self, dir: &Path) -> PluginResult<()>;
    /// Load what `save_state` wrote.
    fn load_state(&mut self, dir: &Path) -> PluginResult<()>;
}

/// A family of samplers behind the plugin boundary (stateless).
pub trait SamplerPlugin: 'static {
    /// The samplers offered.
    fn list() -> Vec<SamplerInfo>;
    /// Build the linear plan of one sampler for one schedule.
    fn plan(request: &PlanRequest) -> PluginResult<Plan>;
}

fn write_err(err: *mut AdtBuf, msg: String) {
    if !err.is_null() {
        // SAFETY: the host passes a valid, writable out-pointer.
        unsafe { err.write(string_into_buf(msg)) };
    }
}

/// Run `f`, catching panics; map to a status code and fill `err` on failure.
pub fn guard(err: *mut AdtBuf, f: impl FnOnce() -> PluginResult<()>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Status::Ok as i32,
        Ok(Err(e)) => {
            write_err(err, e.0);
            Status::Error as i32
        }
        Err(payload) => {
            let msg = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "panic with a non-string payload".to_string()
            };
            write_err(err, format!("plugin panicked: {msg}"));
            Status::Panic as i32
        }
    }
}

fn json_in<T: serde::de::DeserializeOwned>(s: AdtStr, what: &str) -> PluginResult<T> {
    // SAFETY: the host passes a valid borrowed string for the duration of the call.
    let text =
        unsafe { str_from_abi(s) }.map_err(|e| PluginError(format!("{what} is not UTF-8: {e}")))?;
    serde_json::from_str(text).map_err(|e| PluginError(format!("invalid {what} JSON: {e}")))
}

fn json_out<T: serde::Serialize>(out: *mut AdtBuf, v: &T) -> PluginResult<()> {
    let s = serde_json::to_string(v)?;
    if out.is_null() {
        return Err(PluginError::msg("null output pointer"));
    }
    // SAFETY: checked non-null; the host passes a writable out-pointer.
    unsafe { out.write(string_into_buf(s)) };
    Ok(())
}

fn tensor_out(out: *mut AdtTensor, t: HostTensor) -> PluginResult<()> {
    if out.is_null() {
        return Err(PluginError::msg("null output pointer"));
    }
    // SAFETY: checked non-null; the host passes a writable out-pointer.
    unsafe { out.write(t.into_abi()) };
    Ok(())
}

fn tensor_in(v: &AdtTensorView, what: &str) -> PluginResult<HostTensor> {
    // SAFETY: the host passes a valid borrowed tensor for the duration of the call.
    unsafe { view_from_abi(v) }.map_err(|e| PluginError(format!("{what}: {e}")))
}

fn instance<'a, T>(inst: Instance) -> PluginResult<&'a mut T> {
    if inst.is_null() {
        return Err(PluginError::msg("null model instance"));
    }
    // SAFETY: `inst` was produced by `model_create::<T>` (Box<T>::into_raw) and the host
    // never uses one instance from two threads at once.
    Ok(unsafe { &mut *(inst as *mut T) })
}

struct OwnedArgs {
    x: HostTensor,
    t: HostTensor,
    cond: u64,
    uncond: u64,
    guidance: f32,
    detach_uncond: bool,
}

fn args_in(args: *const AdtDenoiseArgs) -> PluginResult<OwnedArgs> {
    if args.is_null() {
        return Err(PluginError::msg("null denoise arguments"));
    }
    // SAFETY: checked non-null; valid for the call.
    let a = unsafe { &*args };
    Ok(OwnedArgs {
        x: tensor_in(&a.x, "x")?,
        t: tensor_in(&a.t, "t")?,
        cond: a.cond,
        uncond: a.uncond,
        guidance: a.guidance,
        detach_uncond: a.detach_uncond != 0,
    })
}

impl OwnedArgs {
    fn view(&self) -> DenoiseArgs<'_> {
        DenoiseArgs {
            x: self.x.view(),
            t: &self.t.data,
            cond: self.cond,
            uncond: (self.uncond != 0).then_some(self.uncond),
            guidance: self.guidance,
            detach_uncond: self.detach_uncond,
        }
    }
}

mod shims {
    use super::*;

    pub(super) unsafe extern "C" fn create<T: ModelPlugin>(
        config: AdtStr,
        out: *mut Instance,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || {
            let cfg: serde_json::Value = json_in(config, "model config")?;
            let m = T::create(&cfg)?;
            if out.is_null() {
                return Err(PluginError::msg("null output pointer"));
            }
            // SAFETY: checked non-null.
            unsafe { out.write(Box::into_raw(Box::new(m)) as Instance) };
            Ok(())
        })
    }

    pub(super) unsafe extern "C" fn destroy<T: ModelPlugin>(inst: Instance) {
        if inst.is_null() {
            return;
        }
        // A panic in Drop must not unwind into the host.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: made by `create::<T>`; the host destroys each instance once.
            drop(unsafe { Box::from_raw(inst as *mut T) });
        }));
    }

    pub(super) unsafe extern "C" fn describe<T: ModelPlugin>(
        inst: Instance,
        out: *mut AdtBuf,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || json_out(out, &instance::<T>(inst)?.describe()?))
    }

    pub(super) unsafe extern "C" fn encode_prompts<T: ModelPlugin>(
        inst: Instance,
        prompts: AdtStr,
        out: *mut u64,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || {
            let p: Vec<String> = json_in(prompts, "prompts")?;
            let h = instance::<T>(inst)?.encode_prompts(&p)?;
            if out.is_null() {
                return Err(PluginError::msg("null output pointer"));
            }
            // SAFETY: checked non-null.
            unsafe { out.write(h) };
            Ok(())
        })
    }

    pub(super) unsafe extern "C" fn release_cond<T: ModelPlugin>(
        inst: Instance,
        handle: u64,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || instance::<T>(inst)?.release_cond(handle))
    }

    pub(super) unsafe extern "C" fn encode_images<T: ModelPlugin>(
        inst: Instance,
        images: AdtTensorView,
        out: *mut AdtTensor,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || {
            let x = tensor_in(&images, "images")?;
            tensor_out(out, instance::<T>(inst)?.encode_images(x.view())?)
        })
    }

    pub(super) unsafe extern "C" fn decode<T: ModelPlugin>(
        inst: Instance,
        latents: AdtTensorView,
        out: *mut AdtTensor,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || {
            let x = tensor_in(&latents, "latents")?;
            tensor_out(out, instance::<T>(inst)?.decode(x.view())?)
        })
    }

    pub(super) unsafe extern "C" fn decode_vjp<T: ModelPlugin>(
        inst: Instance,
        latents: AdtTensorView,
        cotangent: AdtTensorView,
        out: *mut AdtTensor,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || {
            let x = tensor_in(&latents, "latents")?;
            let c = tensor_in(&cotangent, "cotangent")?;
            tensor_out(out, instance::<T>(inst)?.decode_vjp(x.view(), c.view())?)
        })
    }

    pub(super) unsafe extern "C" fn denoise<T: ModelPlugin>(
        inst: Instance,
        args: *const AdtDenoiseArgs,
        out: *mut AdtTensor,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || {
            let a = args_in(args)?;
            tensor_out(out, instance::<T>(inst)?.denoise(&a.view())?)
        })
    }

    pub(super) unsafe extern "C" fn denoise_vjp<T: ModelPlugin>(
        inst: Instance,
        args: *const AdtDenoiseArgs,
        cotangent: AdtTensorView,
        want_input_cotangent: u32,
        out: *mut AdtTensor,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || {
            let a = args_in(args)?;
            let c = tensor_in(&cotangent, "cotangent")?;
            let res =
                instance::<T>(inst)?.denoise_vjp(&a.view(), c.view(), want_input_cotangent != 0)?;
            match res {
                Some(t) => tensor_out(out, t),
                None => {
                    if !out.is_null() {
                        // SAFETY: checked non-null.
                        unsafe { out.write(AdtTensor::EMPTY) };
                    }
                    Ok(())
                }
            }
        })
    }

    pub(super) unsafe extern "C" fn diffusion_loss<T: ModelPlugin>(
        inst: Instance,
        x0: AdtTensorView,
        cond: u64,
        seed: u64,
        weight: f64,
        out_loss: *mut f64,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || {
            let x = tensor_in(&x0, "x0")?;
            let l = instance::<T>(inst)?.diffusion_loss(x.view(), cond, seed, weight)?;
            if out_loss.is_null() {
                return Err(PluginError::msg("null output pointer"));
            }
            // SAFETY: checked non-null.
            unsafe { out_loss.write(l) };
            Ok(())
        })
    }

    pub(super) unsafe extern "C" fn zero_grad<T: ModelPlugin>(
        inst: Instance,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || instance::<T>(inst)?.zero_grad())
    }

    pub(super) unsafe extern "C" fn step<T: ModelPlugin>(
        inst: Instance,
        config: AdtStr,
        out: *mut AdtBuf,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || {
            let cfg: OptimConfig = json_in(config, "optimizer config")?;
            json_out(out, &instance::<T>(inst)?.step(&cfg)?)
        })
    }

    pub(super) unsafe extern "C" fn save_state<T: ModelPlugin>(
        inst: Instance,
        dir: AdtStr,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || {
            // SAFETY: valid borrowed string for the call.
            let d = unsafe { str_from_abi(dir) }?;
            instance::<T>(inst)?.save_state(Path::new(d))
        })
    }

    pub(super) unsafe extern "C" fn load_state<T: ModelPlugin>(
        inst: Instance,
        dir: AdtStr,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || {
            // SAFETY: valid borrowed string for the call.
            let d = unsafe { str_from_abi(dir) }?;
            instance::<T>(inst)?.load_state(Path::new(d))
        })
    }

    pub(super) unsafe extern "C" fn sampler_list<T: SamplerPlugin>(
        out: *mut AdtBuf,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || json_out(out, &T::list()))
    }

    pub(super) unsafe extern "C" fn sampler_plan<T: SamplerPlugin>(
        request: AdtStr,
        out: *mut AdtBuf,
        err: *mut AdtBuf,
    ) -> i32 {
        guard(err, || {
            let req: PlanRequest = json_in(request, "plan request")?;
            json_out(out, &T::plan(&req)?)
        })
    }
}

/// The function table for a model type (used by the export macros in a `static`).
pub const fn model_api<T: ModelPlugin>() -> ModelApiV1 {
    ModelApiV1 {
        size: std::mem::size_of::<ModelApiV1>(),
        create: shims::create::<T>,
        destroy: shims::destroy::<T>,
        describe: shims::describe::<T>,
        encode_prompts: shims::encode_prompts::<T>,
        release_cond: shims::release_cond::<T>,
        encode_images: shims::encode_images::<T>,
        decode: shims::decode::<T>,
        decode_vjp: shims::decode_vjp::<T>,
        denoise: shims::denoise::<T>,
        denoise_vjp: shims::denoise_vjp::<T>,
        diffusion_loss: shims::diffusion_loss::<T>,
        zero_grad: shims::zero_grad::<T>,
        step: shims::step::<T>,
        save_state: shims::save_state::<T>,
        load_state: shims::load_state::<T>,
    }
}

/// The function table for a sampler type.
pub const fn sampler_api<T: SamplerPlugin>() -> SamplerApiV1 {
    SamplerApiV1 {
        size: std::mem::size_of::<SamplerApiV1>(),
        list: shims::sampler_list::<T>,
        plan: shims::sampler_plan::<T>,
    }
}

/// Declare a model plugin: generates `fn $header() -> &'static PluginHeader` for a type
/// implementing [`ModelPlugin`]. Built-in plugins stop here (they are linked statically and
/// registered by that function); dynamic plugins add [`crate::export_plugin!`], or use
/// [`crate::export_model_plugin!`] which does both.
#[macro_export]
macro_rules! declare_model_plugin {
    ($vis:vis fn $header:ident, $ty:ty, name = $name:literal, version = $version:expr $(, features = $features:literal)? $(,)?) => {
        $crate::__declare_plugin!($vis fn $header, Model, ModelApiV1, $crate::sdk::model_api::<$ty>(), $name, $version, $crate::__features!($($features)?));
    };
}

/// Declare a sampler plugin (see [`declare_model_plugin!`]).
#[macro_export]
macro_rules! declare_sampler_plugin {
    ($vis:vis fn $header:ident, $ty:ty, name = $name:literal, version = $version:expr $(, features = $features:literal)? $(,)?) => {
        $crate::__declare_plugin!($vis fn $header, Sampler, SamplerApiV1, $crate::sdk::sampler_api::<$ty>(), $name, $version, $crate::__features!($($features)?));
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __declare_plugin {
    ($vis:vis fn $header:ident, $kind:ident, $table:ident, $api:expr, $name:literal, $version:expr, $features:expr) => {
        $vis fn $header() -> &'static $crate::abi::PluginHeader {
            static API: $crate::abi::$table = $api;
            static HEADER: $crate::abi::PluginHeader = $crate::abi::PluginHeader {
                magic: $crate::abi::MAGIC,
                abi_major: $crate::abi::ABI_MAJOR,
                abi_minor: $crate::abi::ABI_MINOR,
                header_size: ::std::mem::size_of::<$crate::abi::PluginHeader>() as u32,
                kind: $crate::abi::PluginKind::$kind as u32,
                name: concat!($name, "\0").as_ptr() as *const ::std::ffi::c_char,
                version: concat!($version, "\0").as_ptr() as *const ::std::ffi::c_char,
                features: $features,
                api: &API as *const $crate::abi::$table as *const ::std::ffi::c_void,
            };
            &HEADER
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __features {
    () => {
        "[\"cpu\"]\0".as_ptr() as *const ::std::ffi::c_char
    };
    ($f:literal) => {
        concat!($f, "\0").as_ptr() as *const ::std::ffi::c_char
    };
}

/// Export a declared plugin from a `cdylib` as the `adt_plugin_header` symbol. Use once per
/// library.
#[macro_export]
macro_rules! export_plugin {
    ($header:path) => {
        /// The plugin's entry point, read by the adt-bench host before anything else.
        #[unsafe(no_mangle)]
        pub extern "C" fn adt_plugin_header() -> *const $crate::abi::PluginHeader {
            $header() as *const $crate::abi::PluginHeader
        }
    };
}

/// Declare and export a model plugin from a `cdylib` in one line:
/// `adt_plugin_api::export_model_plugin!(MyModel, name = "mine", version = env!("CARGO_PKG_VERSION"));`
#[macro_export]
macro_rules! export_model_plugin {
    ($ty:ty, name = $name:literal, version = $version:expr $(, features = $features:literal)? $(,)?) => {
        $crate::declare_model_plugin!(fn __adt_plugin_header, $ty, name = $name, version = $version $(, features = $features)?);
        $crate::export_plugin!(__adt_plugin_header);
    };
}

/// Declare and export a sampler plugin from a `cdylib` in one line.
#[macro_export]
macro_rules! export_sampler_plugin {
    ($ty:ty, name = $name:literal, version = $version:expr $(, features = $features:literal)? $(,)?) => {
        $crate::declare_sampler_plugin!(fn __adt_plugin_header, $ty, name = $name, version = $version $(, features = $features)?);
        $crate::export_plugin!(__adt_plugin_header);
    };
}
