//! Server state MaskedInputCollection: adds each masked input into one running sum on arrival (no per-client vector
//! is kept).

use std::collections::BTreeSet;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::super::error::{Result, SecAggError};
use super::super::messages::{
    Acknowledgement, MASKED_INPUT_HEADER_LEN, MaskedInput, MaskedInputHeader,
};
use super::super::{ParticipantId, RoundStage};
use super::r4_consistency_check::ConsistencyCheckState;
use super::r5_unmasking::UnmaskingState;
use super::{Next, Round, ServerState};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MaskedInputState {
    pub(crate) received: BTreeSet<ParticipantId>,
    /// Malicious rounds: the holders' acknowledgements, forwarded with the go-ahead.
    pub(crate) acknowledgements: Vec<Acknowledgement>,
}

impl MaskedInputState {
    fn check_header(
        &self,
        round: &Round,
        round_id: u64,
        sender: ParticipantId,
        len: usize,
    ) -> Result<()> {
        round.check(
            RoundStage::MaskedInputCollection,
            round_id,
            sender,
            Some(round.masking_members()),
        )?;
        if self.received.contains(&sender) {
            return Err(SecAggError::Duplicate(sender));
        }
        let expected = round.params().vector_len as usize;
        if len != expected {
            return Err(SecAggError::WrongVectorLength { expected, got: len });
        }
        Ok(())
    }

    /// Adds a decoded masked input into the running sum.
    pub(crate) fn handle(
        &mut self,
        round: &Round,
        sum: &mut [u32],
        msg: &MaskedInput,
    ) -> Result<()> {
        self.check_header(round, msg.round_id, msg.sender, msg.values.len())?;
        let bits = round.params().bits;
        if bits < 32
            && let Some(index) = msg.values.iter().position(|&v| v >> bits != 0)
        {
            return Err(SecAggError::ValueOutOfRange { index, bits });
        }
        sum.par_iter_mut()
            .zip(msg.values.par_iter())
            .for_each(|(s, v)| *s = s.wrapping_add(*v));
        self.received.insert(msg.sender);
        Ok(())
    }

    /// Checks a binary masked input and adds it into the running sum straight from the bytes.
    pub(crate) fn handle_bytes(
        &mut self,
        round: &Round,
        sum: &mut [u32],
        bytes: &[u8],
    ) -> Result<ParticipantId> {
        let h = MaskedInputHeader::parse(bytes)?;
        self.check_header(round, h.round_id, h.sender, h.len as usize)?;
        let payload = &bytes[MASKED_INPUT_HEADER_LEN..];
        let word = |w: &[u8]| u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        let bits = round.params().bits;
        if bits < 32
            && let Some(index) = payload.chunks_exact(4).position(|w| word(w) >> bits != 0)
        {
            return Err(SecAggError::ValueOutOfRange { index, bits });
        }
        const CHUNK: usize = 1 << 16;
        sum.par_chunks_mut(CHUNK)
            .zip(payload.par_chunks(CHUNK * 4))
            .for_each(|(s, p)| {
                for (s, w) in s.iter_mut().zip(p.chunks_exact(4)) {
                    *s = s.wrapping_add(word(w));
                }
            });
        self.received.insert(h.sender);
        Ok(h.sender)
    }

    /// U3 = those whose input is in the sum; every dealer's secrets must stay rebuildable from U3.
    pub(crate) fn close(self, round: &mut Round) -> Next {
        let u3: Vec<ParticipantId> = self.received.into_iter().collect();
        let owners = round.record.u2.clone();
        if let Some(reason) = round.shortfall(RoundStage::MaskedInputCollection, &owners, &u3) {
            return Err(reason);
        }
        round.record.u3 = u3;
        if round.malicious() {
            return Ok(ServerState::ConsistencyCheck(
                ConsistencyCheckState::default(),
            ));
        }
        // Semi-honest: the ciphertexts have been delivered; keep only the commitments.
        for d in round.record.dealings.values_mut() {
            d.encrypted_shares.clear();
        }
        Ok(ServerState::Unmasking(UnmaskingState::default()))
    }
}
