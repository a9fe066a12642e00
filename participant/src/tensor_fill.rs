//! Writing a torch tensor's values from Rust without a copy: the one place the library turns a tensor's storage
//! into a Rust slice.
//!
//! The DP-SGD noise vector (1.3 M values for the MLP benchmark) is drawn straight into the tensor that then
//! collects the clipped gradients; drawing into a `Vec` and copying it in would cost a pass over the parameters
//! every step.

use tch::{Device, Kind, Tensor};
use thiserror::Error;

/// The tensor is not one whose storage is a plain array of f32 values in this process's memory.
#[derive(Debug, Error)]
#[error("expected a defined, contiguous f32 CPU tensor, got {0}")]
pub struct NotAnF32Array(String);

/// Calls `fill` with the values of `tensor` as a mutable slice (row-major, every element once).
///
/// The tensor must be defined, contiguous, f32 and on the CPU; it should be freshly made by the caller (e.g.
/// `Tensor::zeros`) so that no other tensor shares its storage while `fill` runs.
pub fn fill_f32(tensor: &mut Tensor, fill: impl FnOnce(&mut [f32])) -> Result<(), NotAnF32Array> {
    if !tensor.defined()
        || tensor.kind() != Kind::Float
        || tensor.device() != Device::Cpu
        || !tensor.is_contiguous()
    {
        return Err(NotAnF32Array(format!("{tensor:?}")));
    }
    let len = tensor.numel();
    if len == 0 {
        fill(&mut []);
        return Ok(());
    }
    // SAFETY: the tensor is defined, contiguous, f32 and on the CPU (checked above), so `data_ptr` points to `len`
    // initialised, properly aligned f32 values owned by its storage (the caller made it with initialised values,
    // e.g. `Tensor::zeros`). The `&mut Tensor` borrow keeps this handle from being used or dropped while the slice
    // lives, and the caller made the tensor itself, so no other handle reads or writes the storage meanwhile.
    let values = unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr().cast::<f32>(), len) };
    fill(values);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_in_the_tensor_and_other_tensors_are_refused() {
        let mut t = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        fill_f32(&mut t, |v| {
            assert_eq!(v, [0.0; 6]);
            for (i, x) in v.iter_mut().enumerate() {
                *x = i as f32;
            }
        })
        .unwrap();
        assert_eq!(
            Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(),
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
        let mut empty = Tensor::zeros([0], (Kind::Float, Device::Cpu));
        fill_f32(&mut empty, |v| assert!(v.is_empty())).unwrap();
        let mut doubles = Tensor::zeros([3], (Kind::Double, Device::Cpu));
        assert!(fill_f32(&mut doubles, |_| {}).is_err());
        let mut strided = Tensor::zeros([3, 3], (Kind::Float, Device::Cpu)).tr();
        assert!(fill_f32(&mut strided, |_| {}).is_err());
    }
}
