//! Wire types shared by the client and the server.
//!
//! Control messages are JSON ([`ControlMessage::to_json`] / [`ControlMessage::from_json`]) with an explicit
//! `version`; keys, ciphertexts and shares inside them are standard base64. Masked inputs are binary
//! ([`MaskedInput::encode`]): a 22-byte header — magic `CFMI`, format version (u16), round id (u64), sender (u32),
//! element count (u32), all little-endian — followed by the elements as little-endian u32. [`MaskedInput::decode`]
//! checks the header against the payload before anything is used.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{Result, SecAggError};
use super::shamir::Share;
use super::{ParticipantId, RoundId};

/// Version of the JSON control messages.
pub const WIRE_VERSION: u16 = 1;
/// Magic bytes opening a binary masked input.
pub const MASKED_INPUT_MAGIC: [u8; 4] = *b"CFMI";
/// Version of the binary masked-input format.
pub const MASKED_INPUT_VERSION: u16 = 1;
/// Length of the binary masked-input header.
pub const MASKED_INPUT_HEADER_LEN: usize = 22;

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

fn wire_version() -> u16 {
    WIRE_VERSION
}

macro_rules! control_message {
    ($($t:ty),*) => {$(
        impl ControlMessage for $t {
            fn version(&self) -> u16 { self.version }
        }
    )*};
}

/// A participant's two X25519 public keys (stage AdvertiseKeys, client → server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvertiseKeys {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    pub sender: ParticipantId,
    /// Public key for encrypting shares (c_pk).
    #[serde(with = "b64_array")]
    pub cipher_public_key: [u8; 32],
    /// Public key for agreeing pairwise masks (s_pk).
    #[serde(with = "b64_array")]
    pub mask_public_key: [u8; 32],
}

/// One entry of the key directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertisedKeys {
    pub participant: ParticipantId,
    #[serde(with = "b64_array")]
    pub cipher_public_key: [u8; 32],
    #[serde(with = "b64_array")]
    pub mask_public_key: [u8; 32],
}

/// U1 and everyone's public keys (server → all, after AdvertiseKeys closes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDirectory {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    /// Sorted by participant id.
    pub participants: Vec<AdvertisedKeys>,
}

/// A ciphertext of shares for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptedShares {
    pub recipient: ParticipantId,
    #[serde(with = "b64_vec")]
    pub ciphertext: Vec<u8>,
}

/// A participant's encrypted shares for each neighbour in U1 (stage ShareKeys, client → server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareKeys {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    pub sender: ParticipantId,
    /// SHA-256 commitment to the self-mask seed, checked by the server after rebuilding it.
    #[serde(with = "b64_array")]
    pub self_mask_commitment: [u8; 32],
    /// One ciphertext per neighbour in U1 (excluding the sender), sorted by recipient.
    pub encrypted_shares: Vec<EncryptedShares>,
}

/// A ciphertext addressed to the recipient of a [`RoutedShares`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedShare {
    pub sender: ParticipantId,
    #[serde(with = "b64_vec")]
    pub ciphertext: Vec<u8>,
}

/// The ciphertexts addressed to one participant by its neighbours in U2 (server → that participant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedShares {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    pub recipient: ParticipantId,
    /// Sorted by sender.
    pub shares: Vec<RoutedShare>,
}

/// A participant's masked input y_u (stage MaskedInputCollection, client → server). Binary on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct MaskedInput {
    pub round_id: RoundId,
    pub sender: ParticipantId,
    /// Ring elements (each < 2^bits).
    pub values: Vec<u32>,
}

impl std::fmt::Debug for MaskedInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskedInput")
            .field("round_id", &self.round_id)
            .field("sender", &self.sender)
            .field("len", &self.values.len())
            .finish()
    }
}

/// The checked header of a binary masked input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskedInputHeader {
    pub round_id: RoundId,
    pub sender: ParticipantId,
    pub len: u32,
}

impl MaskedInputHeader {
    /// Parses the header and checks that exactly `len` elements follow it.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < MASKED_INPUT_HEADER_LEN {
            return Err(SecAggError::Malformed(format!(
                "masked input is {} bytes, shorter than its header",
                bytes.len()
            )));
        }
        if bytes[..4] != MASKED_INPUT_MAGIC {
            return Err(SecAggError::Malformed(
                "masked input does not start with CFMI".into(),
            ));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != MASKED_INPUT_VERSION {
            return Err(SecAggError::Malformed(format!(
                "unsupported masked-input version {version}"
            )));
        }
        let mut r = [0u8; 8];
        r.copy_from_slice(&bytes[6..14]);
        let round_id = u64::from_le_bytes(r);
        let sender = u32::from_le_bytes([bytes[14], bytes[15], bytes[16], bytes[17]]);
        let len = u32::from_le_bytes([bytes[18], bytes[19], bytes[20], bytes[21]]);
        let payload = bytes.len() - MASKED_INPUT_HEADER_LEN;
        if payload as u64 != u64::from(len) * 4 {
            return Err(SecAggError::Malformed(format!(
                "masked-input header announces {len} elements but {payload} payload bytes follow"
            )));
        }
        Ok(MaskedInputHeader {
            round_id,
            sender,
            len,
        })
    }
}

impl MaskedInput {
    /// Binary encoding: header, then little-endian u32 elements.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MASKED_INPUT_HEADER_LEN + 4 * self.values.len());
        out.extend_from_slice(&MASKED_INPUT_MAGIC);
        out.extend_from_slice(&MASKED_INPUT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.round_id.to_le_bytes());
        out.extend_from_slice(&self.sender.to_le_bytes());
        out.extend_from_slice(&(self.values.len() as u32).to_le_bytes());
        for v in &self.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Decodes and checks the header against the payload length.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let h = MaskedInputHeader::parse(bytes)?;
        let values = bytes[MASKED_INPUT_HEADER_LEN..]
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        Ok(MaskedInput {
            round_id: h.round_id,
            sender: h.sender,
            values,
        })
    }
}

/// U3: who sent a masked input (server → U3, after MaskedInputCollection closes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskingRequest {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    /// Sorted participant ids.
    pub survivors: Vec<ParticipantId>,
}

/// A revealed Shamir share of `owner`'s secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevealedShare {
    pub owner: ParticipantId,
    #[serde(with = "b64_share")]
    pub share: Share,
}

/// The shares a survivor reveals (stage Unmasking, client → server): self-mask shares of neighbours in U3 and
/// mask-key shares of neighbours in U2 ∖ U3 — never both for one neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmaskingResponse {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    pub sender: ParticipantId,
    pub self_mask_shares: Vec<RevealedShare>,
    pub mask_key_shares: Vec<RevealedShare>,
}

control_message!(
    AdvertiseKeys,
    KeyDirectory,
    ShareKeys,
    RoutedShares,
    UnmaskingRequest,
    UnmaskingResponse
);

/// Serde helper: `[u8; 32]` as standard base64.
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

    pub(super) fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_input_round_trips_and_checks_its_header() {
        let m = MaskedInput {
            round_id: 9,
            sender: 4,
            values: vec![1, 2, u32::MAX],
        };
        let bytes = m.encode();
        assert_eq!(bytes.len(), MASKED_INPUT_HEADER_LEN + 12);
        assert_eq!(MaskedInput::decode(&bytes).unwrap(), m);
        assert!(MaskedInput::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(MaskedInput::decode(&bytes[..10]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(MaskedInput::decode(&bad).is_err());
        let mut bad = bytes.clone();
        bad[18] = 4; // announces 4 elements, 3 follow
        assert!(MaskedInput::decode(&bad).is_err());
    }

    #[test]
    fn json_messages_use_base64_and_check_the_version() {
        let m = AdvertiseKeys {
            version: 1,
            round_id: 3,
            sender: 1,
            cipher_public_key: [1; 32],
            mask_public_key: [2; 32],
        };
        let json = m.to_json();
        assert!(json.contains("\"cipher_public_key\":\"AQEB"), "{json}");
        assert_eq!(AdvertiseKeys::from_json(&json).unwrap(), m);
        let v2 = json.replace("\"version\":1", "\"version\":2");
        assert!(matches!(
            AdvertiseKeys::from_json(&v2),
            Err(SecAggError::Malformed(_))
        ));
        assert!(AdvertiseKeys::from_json("{").is_err());
        // What a participant sends is checked field by field: an unknown field is refused, not ignored.
        let extra = json.replacen('{', "{\"colour\":\"blue\",", 1);
        let err = AdvertiseKeys::from_json(&extra).unwrap_err().to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }
}
