//! The persisted form of a server: magic `CFSS`, version (u16 LE), length (u32 LE) of the postcard-encoded record
//! and stage state, those bytes, then the running sum as a u32 LE count and little-endian u32 elements.

use serde::{Deserialize, Serialize};

use super::super::RoundStage;
use super::super::error::{Result, SecAggError};
use super::record::Record;
use super::{Round, SecAggServer, ServerState};

/// Magic bytes of a persisted server state.
pub const STATE_MAGIC: [u8; 4] = *b"CFSS";
/// Version of the persisted server-state format (2: stage states, threat model, commitments, statuses; 3: combined
/// commitments and each dealing's digest).
pub const STATE_VERSION: u16 = 3;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    record: Record,
    state: ServerState,
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    record: &'a Record,
    state: &'a ServerState,
}

impl SecAggServer {
    /// Versioned binary snapshot of everything (to persist at every stage boundary).
    pub fn encode(&self) -> Vec<u8> {
        let snapshot = SnapshotRef {
            record: &self.round.record,
            state: &self.state,
        };
        // postcard serialisation of these plain types into a Vec cannot fail.
        let state = postcard::to_stdvec(&snapshot).unwrap_or_default();
        let mut out = Vec::with_capacity(14 + state.len() + 4 * self.sum.len());
        out.extend_from_slice(&STATE_MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_le_bytes());
        out.extend_from_slice(&(state.len() as u32).to_le_bytes());
        out.extend_from_slice(&state);
        out.extend_from_slice(&(self.sum.len() as u32).to_le_bytes());
        for v in &self.sum {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Restores a snapshot made by [`SecAggServer::encode`], checking its structure and the parameters.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let err = |m: &str| SecAggError::Decode(m.into());
        if bytes.len() < 10 || bytes[..4] != STATE_MAGIC {
            return Err(err("not a Confide secure-aggregation state"));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != STATE_VERSION {
            return Err(SecAggError::Decode(format!(
                "unsupported state version {version} (expected {STATE_VERSION})"
            )));
        }
        let state_len = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
        let rest = &bytes[10..];
        if rest.len() < state_len.saturating_add(4) {
            return Err(err("truncated state"));
        }
        let snapshot: Snapshot = postcard::from_bytes(&rest[..state_len])
            .map_err(|e| SecAggError::Decode(e.to_string()))?;
        let rest = &rest[state_len..];
        let sum_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let payload = &rest[4..];
        if payload.len() != sum_len.saturating_mul(4) {
            return Err(err("running sum length does not match its header"));
        }
        let params = &snapshot.record.params;
        params
            .validate()
            .map_err(|e| SecAggError::Decode(e.to_string()))?;
        let expected_len = match snapshot.state.stage() {
            RoundStage::MaskedInputCollection
            | RoundStage::ConsistencyCheck
            | RoundStage::Unmasking
            | RoundStage::Completed => params.vector_len as usize,
            _ => 0,
        };
        if sum_len != expected_len {
            return Err(err("running sum has the wrong length for the stage"));
        }
        let sum = payload
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        Ok(SecAggServer {
            round: Round {
                graph: params.neighbour_graph()?,
                digest: params.digest(),
                record: snapshot.record,
            },
            state: snapshot.state,
            sum,
        })
    }
}
