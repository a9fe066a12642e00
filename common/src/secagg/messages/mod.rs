//! Wire types shared by the client and the server.
//!
//! Control messages are JSON ([`ControlMessage::to_json`] / [`ControlMessage::from_json`]) with an explicit
//! `version`; keys, points, signatures, ciphertexts and shares inside them are standard base64. Masked inputs are
//! binary ([`MaskedInput::encode`], see [`masked_input`]). Messages a participant sends are in [`to_server`] (and
//! refuse unknown fields); what the server publishes is in [`to_clients`]. Signature fields are present exactly in
//! malicious-server rounds.

mod masked_input;
mod to_clients;
mod to_server;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{Result, SecAggError};
use super::shamir::Share;

pub use masked_input::{
    MASKED_INPUT_HEADER_LEN, MASKED_INPUT_MAGIC, MASKED_INPUT_VERSION, MaskedInput,
    MaskedInputHeader,
};
pub use to_clients::{
    Acknowledgement, AdvertisedKeys, Broadcast, ConsistencyCheckRequest, KeyDirectory,
    MaskedInputRequest, RoutedCommitments, RoutedShare, RoutedShares, SignedSurvivors,
    SurvivorSignature, UnmaskingRequest,
};
pub use to_server::{
    AdvertiseKeys, Complaint, ComplaintReason, ConsistencySignature, EncryptedShares,
    RevealedCipherKey, RevealedShare, ShareCommitments, ShareKeys, ShareVerification,
    UnmaskingResponse,
};

/// Version of the JSON control messages (2: scalar shares, signatures and the malicious-server stages).
pub const WIRE_VERSION: u16 = 2;

/// JSON encoding of the control messages, with the version checked on decode.
pub trait ControlMessage: Serialize + DeserializeOwned {
    /// The message's `version` field.
    fn version(&self) -> u16;

    /// Compact JSON.
    fn to_json(&self) -> String {
        // Serialising these plain structs to a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses JSON and rejects unknown versions.
    fn from_json(text: &str) -> Result<Self> {
        let msg: Self =
            serde_json::from_str(text).map_err(|e| SecAggError::Malformed(e.to_string()))?;
        if msg.version() != WIRE_VERSION {
            return Err(SecAggError::Malformed(format!(
                "unsupported message version {} (expected {WIRE_VERSION})",
                msg.version()
            )));
        }
        Ok(msg)
    }
}

pub(crate) fn wire_version() -> u16 {
    WIRE_VERSION
}

macro_rules! control_message {
    ($($t:ty),*) => {$(
        impl ControlMessage for $t {
            fn version(&self) -> u16 { self.version }
        }
    )*};
}

control_message!(
    AdvertiseKeys,
    KeyDirectory,
    ShareKeys,
    RoutedShares,
    ShareVerification,
    MaskedInputRequest,
    ConsistencyCheckRequest,
    ConsistencySignature,
    SignedSurvivors,
    UnmaskingRequest,
    UnmaskingResponse
);

pub mod b64_array {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&STANDARD.encode(v))
        } else {
            s.serialize_bytes(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let bytes: Vec<u8> = if d.is_human_readable() {
            let text = String::deserialize(d)?;
            STANDARD.decode(text.as_bytes()).map_err(D::Error::custom)?
        } else {
            serde_bytes_vec(d)?
        };
        bytes
            .try_into()
            .map_err(|_| D::Error::custom("expected 32 bytes"))
    }

    pub(crate) fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Serde helper: `Vec<u8>` as standard base64 (raw bytes in binary formats).
pub mod b64_vec {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&STANDARD.encode(v))
        } else {
            s.serialize_bytes(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            STANDARD.decode(text.as_bytes()).map_err(D::Error::custom)
        } else {
            super::b64_array::serde_bytes_vec(d)
        }
    }
}

/// Serde helper: a Shamir share as base64 of its 48-byte encoding, validated on decode.
pub mod b64_share {
    use super::Share;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use zeroize::Zeroizing;

    pub fn serialize<S: Serializer>(v: &Share, s: S) -> Result<S::Ok, S::Error> {
        let bytes = Zeroizing::new(v.to_bytes());
        if s.is_human_readable() {
            s.serialize_str(&STANDARD.encode(&bytes[..]))
        } else {
            s.serialize_bytes(&bytes[..])
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Share, D::Error> {
        let bytes = Zeroizing::new(if d.is_human_readable() {
            let text = Zeroizing::new(String::deserialize(d)?);
            STANDARD.decode(text.as_bytes()).map_err(D::Error::custom)?
        } else {
            super::b64_array::serde_bytes_vec(d)?
        });
        Share::from_bytes(&bytes).map_err(D::Error::custom)
    }
}

/// Serde helper: a list of 32-byte points as one base64 string of their concatenation (raw bytes in binary formats).
pub mod b64_points {
    use serde::{Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        let flat: Vec<u8> = v.iter().flatten().copied().collect();
        super::b64_vec::serialize(&flat, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        let flat = super::b64_vec::deserialize(d)?;
        if flat.len() % 32 != 0 {
            return Err(D::Error::custom("point list is not a multiple of 32 bytes"));
        }
        Ok(flat
            .chunks_exact(32)
            .map(|c| {
                let mut p = [0u8; 32];
                p.copy_from_slice(c);
                p
            })
            .collect())
    }
}
