//! The binary masked input y_u (stage MaskedInputCollection, client → server): a 22-byte header — magic `CFMI`,
//! format version (u16), round id (u64), sender (u32), element count (u32), all little-endian — followed by the
//! elements as little-endian u32. [`MaskedInput::decode`] checks the header against the payload before anything is
//! used.

use super::super::error::{Result, SecAggError};
use super::super::{ParticipantId, RoundId};

/// Magic bytes opening a binary masked input.
pub const MASKED_INPUT_MAGIC: [u8; 4] = *b"CFMI";
/// Version of the binary masked-input format.
pub const MASKED_INPUT_VERSION: u16 = 1;
/// Length of the binary masked-input header.
pub const MASKED_INPUT_HEADER_LEN: usize = 22;

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
}
