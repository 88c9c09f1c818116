//! Host-memory tensors on either side of the boundary: [`HostTensor`] owns `f32` data,
//! [`TensorRef`] borrows it. Conversions to and from the C descriptors live here.

use crate::abi::{AdtBuf, AdtTensor, AdtTensorView, DType, MAX_RANK};
use crate::buf::vec_into_buf;

/// An owned, C-contiguous `f32` tensor in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major data; `data.len()` equals the product of `shape`.
    pub data: Vec<f32>,
}

/// A borrowed `f32` tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorRef<'a> {
    /// Dimensions.
    pub shape: &'a [usize],
    /// Row-major data.
    pub data: &'a [f32],
}

/// A malformed tensor descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad tensor: {0}")]
pub struct TensorError(pub String);

impl HostTensor {
    /// A tensor from a shape and data.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, TensorError> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(TensorError(format!(
                "shape {shape:?} needs {n} elements, got {}",
                data.len()
            )));
        }
        if shape.len() > MAX_RANK {
            return Err(TensorError(format!(
                "rank {} exceeds {MAX_RANK}",
                shape.len()
            )));
        }
        Ok(HostTensor { shape, data })
    }

    /// All zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        HostTensor {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// Borrow.
    pub fn view(&self) -> TensorRef<'_> {
        TensorRef {
            shape: &self.shape,
            data: &self.data,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor holds no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Move into an owned C descriptor (released by [`crate::buf`]'s callback).
    pub fn into_abi(self) -> AdtTensor {
        let mut shape = [0u64; MAX_RANK];
        for (s, d) in shape.iter_mut().zip(&self.shape) {
            *s = *d as u64;
        }
        let rank = self.shape.len() as u32;
        let bytes: Vec<u8> = self.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        AdtTensor {
            dtype: DType::F32 as u32,
            rank,
            shape,
            data: vec_into_buf(bytes),
        }
    }

    /// Take an owned C descriptor: copy its data and release it.
    ///
    /// # Safety
    /// `t` must have been filled by a successful plugin call (valid pointer and release).
    pub unsafe fn from_abi(t: AdtTensor) -> Result<Self, TensorError> {
        if t.rank as usize > MAX_RANK {
            // SAFETY: as below; a descriptor that cannot be read is still released.
            unsafe { crate::buf::release(t.data) };
            return Err(TensorError(format!("rank {} exceeds {MAX_RANK}", t.rank)));
        }
        let shape: Vec<usize> = t.shape[..t.rank as usize]
            .iter()
            .map(|&d| d as usize)
            .collect();
        let res = {
            // SAFETY: the caller guarantees `t.data` describes a live buffer of `len` bytes.
            let bytes: &[u8] = if t.data.len == 0 {
                &[]
            } else {
                unsafe { std::slice::from_raw_parts(t.data.ptr, t.data.len) }
            };
            decode_f32(t.dtype, &shape, bytes)
        };
        // SAFETY: the buffer came from the plugin together with its release callback.
        unsafe { crate::buf::release(t.data) };
        res.map(|data| HostTensor { shape, data })
    }
}

impl TensorRef<'_> {
    /// Copy into an owned tensor.
    pub fn to_owned(&self) -> HostTensor {
        HostTensor {
            shape: self.shape.to_vec(),
            data: self.data.to_vec(),
        }
    }

    /// A borrowed C descriptor valid while `self` lives.
    pub fn as_abi(&self) -> AdtTensorView {
        let mut shape = [0u64; MAX_RANK];
        for (s, d) in shape.iter_mut().zip(self.shape) {
            *s = *d as u64;
        }
        AdtTensorView {
            dtype: DType::F32 as u32,
            // The true rank: a receiver refuses one above MAX_RANK rather than reading a
            // truncated shape.
            rank: self.shape.len() as u32,
            shape,
            data: self.data.as_ptr() as *const u8,
            nbytes: std::mem::size_of_val(self.data),
        }
    }
}

/// Read a borrowed C descriptor as `f32` data (copying; converting f16/bf16/f64).
///
/// # Safety
/// `v.data` must point to `v.nbytes` readable bytes for the duration of the call.
pub unsafe fn view_from_abi(v: &AdtTensorView) -> Result<HostTensor, TensorError> {
    if v.rank as usize > MAX_RANK {
        return Err(TensorError(format!("rank {} exceeds {MAX_RANK}", v.rank)));
    }
    let shape: Vec<usize> = v.shape[..v.rank as usize]
        .iter()
        .map(|&d| d as usize)
        .collect();
    let bytes: &[u8] = if v.nbytes == 0 {
        &[]
    } else if v.data.is_null() {
        return Err(TensorError("null data pointer".into()));
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(v.data, v.nbytes) }
    };
    let data = decode_f32(v.dtype, &shape, bytes)?;
    Ok(HostTensor { shape, data })
}

fn decode_f32(dtype: u32, shape: &[usize], bytes: &[u8]) -> Result<Vec<f32>, TensorError> {
    let elem: usize = match dtype {
        x if x == DType::F32 as u32 => 4,
        x if x == DType::F16 as u32 || x == DType::BF16 as u32 => 2,
        x if x == DType::F64 as u32 => 8,
        other => return Err(TensorError(format!("unknown dtype code {other}"))),
    };
    let need = shape
        .iter()
        .try_fold(elem, |a, &d| a.checked_mul(d))
        .ok_or_else(|| TensorError(format!("shape {shape:?} is larger than memory")))?;
    if bytes.len() != need {
        return Err(TensorError(format!(
            "shape {shape:?} needs {need} bytes, got {}",
            bytes.len()
        )));
    }
    Ok(match elem {
        4 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        8 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        _ if dtype == DType::BF16 as u32 => bytes
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        _ => bytes
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
    })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (31, 0) => sign | 0x7f80_0000,
        (31, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Keep `AdtBuf` in scope for the doc link.
#[allow(dead_code)]
fn _assert_types(_: AdtBuf) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_the_abi() {
        let t = HostTensor::new(vec![2, 3], vec![1.0, -2.0, 3.5, 0.0, f32::MAX, -0.25]).unwrap();
        let v = t.view().as_abi();
        // SAFETY: `t` outlives the view.
        let back = unsafe { view_from_abi(&v) }.unwrap();
        assert_eq!(back, t);
        let owned = t.clone().into_abi();
        // SAFETY: made by `into_abi` just above.
        let back = unsafe { HostTensor::from_abi(owned) }.unwrap();
        assert_eq!(back, t);
        assert!(HostTensor::new(vec![2, 2], vec![0.0; 3]).is_err());
    }

    /// A descriptor of rank above MAX_RANK is refused both ways, never read with a truncated
    /// shape; a shape whose size overflows is an error, not a panic.
    #[test]
    fn ranks_above_the_limit_and_overflowing_shapes_are_refused() {
        let t = HostTensor {
            shape: vec![1; MAX_RANK + 1],
            data: vec![2.0],
        };
        // SAFETY: `t` outlives the view.
        let e = unsafe { view_from_abi(&t.view().as_abi()) }.unwrap_err();
        assert!(e.0.contains("rank 9 exceeds 8"), "{e:?}");
        // SAFETY: made by `into_abi` just above.
        let e = unsafe { HostTensor::from_abi(t.into_abi()) }.unwrap_err();
        assert!(e.0.contains("rank 9 exceeds 8"), "{e:?}");
        let e = decode_f32(DType::F32 as u32, &[usize::MAX, 3], &[0; 4]).unwrap_err();
        assert!(e.0.contains("larger than memory"), "{e:?}");
    }

    #[test]
    fn half_precision_decodes() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
        let bf = decode_f32(DType::BF16 as u32, &[1], &0x3f80u16.to_le_bytes()).unwrap();
        assert_eq!(bf, vec![1.0]);
    }
}
