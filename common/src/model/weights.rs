//! Model weights as safetensors files: one little-endian F32 tensor per entry of the spec's parameter layout, the
//! spec JSON in the metadata — how the coordinator stores and serves model versions.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::{ModelError, ModelSpec, ParameterInfo};

/// Metadata key under which [`encode_safetensors`] stores the spec JSON.
pub const SPEC_METADATA_KEY: &str = "confide.model_spec";

/// Encodes a flat parameter vector as safetensors: one little-endian F32 tensor per entry of the
/// layout, plus the spec JSON in the metadata.
pub fn encode_safetensors(spec: &ModelSpec, params: &[f32]) -> Result<Vec<u8>, ModelError> {
    let layout = spec.parameter_layout();
    let expected: usize = layout.iter().map(ParameterInfo::len).sum();
    if params.len() != expected {
        return Err(ModelError::WrongLength {
            expected,
            actual: params.len(),
        });
    }
    let bytes: Vec<Vec<u8>> = layout
        .iter()
        .map(|p| {
            params[p.offset..p.offset + p.len()]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect()
        })
        .collect();
    let mut views = Vec::with_capacity(layout.len());
    for (p, b) in layout.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, p.shape.clone(), b)
            .map_err(|e| ModelError::Safetensors(e.to_string()))?;
        views.push((p.name.clone(), view));
    }
    let metadata = HashMap::from([(SPEC_METADATA_KEY.to_string(), spec.to_json())]);
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| ModelError::Safetensors(e.to_string()))
}

/// Decodes safetensors into the flat vector of `spec`, checking that the file has exactly the
/// layout's tensors with the right shapes, dtype F32 and finite values.
pub fn decode_safetensors(spec: &ModelSpec, bytes: &[u8]) -> Result<Vec<f32>, ModelError> {
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| ModelError::Safetensors(e.to_string()))?;
    let layout = spec.parameter_layout();
    for name in file.names() {
        if !layout.iter().any(|p| p.name == name) {
            return Err(ModelError::UnexpectedTensor(name.to_string()));
        }
    }
    let mut out = Vec::with_capacity(layout.iter().map(ParameterInfo::len).sum());
    for p in &layout {
        let view = file
            .tensor(&p.name)
            .map_err(|_| ModelError::MissingTensor(p.name.clone()))?;
        if view.dtype() != Dtype::F32 {
            return Err(ModelError::WrongDtype {
                name: p.name.clone(),
                actual: format!("{:?}", view.dtype()),
            });
        }
        if view.shape() != p.shape.as_slice() {
            return Err(ModelError::WrongShape {
                name: p.name.clone(),
                expected: p.shape.clone(),
                actual: view.shape().to_vec(),
            });
        }
        let start = out.len();
        out.extend(
            view.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        if out[start..].iter().any(|x| !x.is_finite()) {
            return Err(ModelError::NonFinite(p.name.clone()));
        }
    }
    Ok(out)
}

/// Reads the spec JSON stored by [`encode_safetensors`], if any (without validating the tensors).
pub fn spec_from_safetensors(bytes: &[u8]) -> Result<Option<ModelSpec>, ModelError> {
    let (_, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| ModelError::Safetensors(e.to_string()))?;
    match metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(SPEC_METADATA_KEY))
    {
        Some(json) => ModelSpec::from_json(json).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Activation;
    use super::super::tests::{digits_cnn, mlp};
    use super::*;

    #[test]
    fn safetensors_round_trip_and_checks() {
        let spec = digits_cnn();
        let params = spec.initial_parameters(7);
        let bytes = encode_safetensors(&spec, &params).unwrap();
        assert_eq!(decode_safetensors(&spec, &bytes).unwrap(), params);
        assert_eq!(spec_from_safetensors(&bytes).unwrap(), Some(spec.clone()));

        assert_eq!(
            encode_safetensors(&spec, &params[1..]).unwrap_err(),
            ModelError::WrongLength {
                expected: params.len(),
                actual: params.len() - 1
            }
        );
        // A file for another model is rejected by name or shape.
        let other = mlp();
        let other_bytes = encode_safetensors(&other, &other.initial_parameters(0)).unwrap();
        let err = decode_safetensors(&spec, &other_bytes).unwrap_err();
        assert!(
            matches!(
                err,
                ModelError::WrongShape { .. }
                    | ModelError::MissingTensor(_)
                    | ModelError::UnexpectedTensor(_)
            ),
            "{err}"
        );
        // Same names, other shapes.
        let wider = ModelSpec::Mlp {
            input_dim: 5,
            hidden: vec![3],
            activation: Activation::Relu,
            num_classes: 2,
        };
        let wider_bytes = encode_safetensors(&wider, &wider.initial_parameters(0)).unwrap();
        assert_eq!(
            decode_safetensors(&other, &wider_bytes).unwrap_err(),
            ModelError::WrongShape {
                name: "0.weight".into(),
                expected: vec![3, 4],
                actual: vec![3, 5]
            }
        );
        // Wrong dtype.
        let data = [0u8; 2 * 4 * 3];
        let view = TensorView::new(Dtype::F16, vec![3, 4], &data[..24]).unwrap();
        let f16 = safetensors::serialize([("0.weight", view)], None).unwrap();
        assert!(matches!(
            decode_safetensors(&other, &f16).unwrap_err(),
            ModelError::WrongDtype { .. }
        ));
        // Extra tensor.
        let view = TensorView::new(Dtype::F32, vec![1], &data[..4]).unwrap();
        let extra = safetensors::serialize([("9.weight", view)], None).unwrap();
        assert_eq!(
            decode_safetensors(&other, &extra).unwrap_err(),
            ModelError::UnexpectedTensor("9.weight".into())
        );
        // Garbage and NaN.
        assert!(matches!(
            decode_safetensors(&spec, b"not a file").unwrap_err(),
            ModelError::Safetensors(_)
        ));
        let mut nan = other.initial_parameters(0);
        nan[3] = f32::NAN;
        let bytes = encode_safetensors(&other, &nan).unwrap();
        assert_eq!(
            decode_safetensors(&other, &bytes).unwrap_err(),
            ModelError::NonFinite("0.weight".into())
        );
    }
}
