//! Server state AdvertiseKeys: collects every participant's two public keys (signed, in malicious rounds).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::super::error::{Result, SecAggError};
use super::super::group;
use super::super::messages::{AdvertiseKeys, AdvertisedKeys};
use super::super::{ParticipantId, RoundStage};
use super::r1_share_keys::ShareKeysState;
use super::{Next, Round, ServerState};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AdvertiseKeysState {
    pub(crate) advertised: BTreeMap<ParticipantId, AdvertisedKeys>,
}

impl AdvertiseKeysState {
    /// Records a participant's keys: distinct from everyone else's, a valid mask key and (malicious) a signature
    /// by the roster's identity for the sender.
    pub(crate) fn handle(&mut self, round: &Round, msg: &AdvertiseKeys) -> Result<()> {
        round.check(RoundStage::AdvertiseKeys, msg.round_id, msg.sender, None)?;
        if self.advertised.contains_key(&msg.sender) {
            return Err(SecAggError::Duplicate(msg.sender));
        }
        if msg.cipher_public_key == msg.mask_public_key
            || self.advertised.values().any(|k| {
                [k.cipher_public_key, k.mask_public_key]
                    .iter()
                    .any(|p| *p == msg.cipher_public_key || *p == msg.mask_public_key)
            })
        {
            return Err(SecAggError::Malformed(
                "public key already in use in this round".into(),
            ));
        }
        group::decode_public_key(&msg.mask_public_key, msg.sender)?;
        round.check_signature(msg.sender, msg.signature.as_ref(), || {
            msg.statement(&round.digest)
        })?;
        self.advertised.insert(
            msg.sender,
            AdvertisedKeys {
                participant: msg.sender,
                cipher_public_key: msg.cipher_public_key,
                mask_public_key: msg.mask_public_key,
                signature: msg.signature,
            },
        );
        Ok(())
    }

    /// U1 = those who advertised; the key directory is fixed.
    pub(crate) fn close(self, round: &mut Round) -> Next {
        let u1: Vec<ParticipantId> = self.advertised.keys().copied().collect();
        if let Some(reason) = round.shortfall(RoundStage::AdvertiseKeys, &u1, &u1) {
            return Err(reason);
        }
        round.record.u1 = u1;
        round.record.directory = self.advertised;
        Ok(ServerState::ShareKeys(ShareKeysState::default()))
    }
}
