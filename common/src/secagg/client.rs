//! The participant's side of a round, as a state machine.
//!
//! ```text
//! new()                      -> AdvertiseKeys          (stage AdvertiseKeys)
//! handle_key_directory()     -> ShareKeys              (stage ShareKeys)
//! handle_routed_shares()     -> MaskedInput            (stage MaskedInputCollection)
//! handle_unmasking_request() -> UnmaskingResponse      (stage Completed)
//! ```
//! Each handler accepts only the broadcast that opens the next stage; a rejected broadcast leaves the client as it
//! was. The reveal rule is enforced here, not trusted to the server: for each neighbour the client reveals the
//! self-mask share if the neighbour is in U3 and the mask-key share otherwise — never both, only once (the client
//! leaves the Unmasking stage after answering), and nothing at all when fewer than t survive.

use std::collections::{BTreeMap, BTreeSet};

use rand::CryptoRng;
use rayon::prelude::*;

use super::crypto::{self, KeyPair, Secret32, TAG_LEN};
use super::error::{Result, SecAggError};
use super::messages::{
    AdvertiseKeys, AdvertisedKeys, EncryptedShares, KeyDirectory, MaskedInput, RevealedShare,
    RoutedShares, ShareKeys, UnmaskingRequest, UnmaskingResponse, WIRE_VERSION,
};
use super::shamir::{self, SHARE_LEN, Share};
use super::{NeighbourGraph, ParticipantId, RoundStage, SecAggParams};

/// Plaintext of one share ciphertext: owner (u32), holder (u32), self-mask share, mask-key share.
pub const SHARE_PLAINTEXT_LEN: usize = 8 + 2 * SHARE_LEN;
/// Length of one share ciphertext on the wire.
pub const SHARE_CIPHERTEXT_LEN: usize = SHARE_PLAINTEXT_LEN + TAG_LEN;

/// The two shares a holder keeps of one owner's secrets.
#[derive(Clone)]
struct HeldShares {
    self_mask: Share,
    mask_key: Share,
}

fn encode_share_plaintext(
    owner: ParticipantId,
    holder: ParticipantId,
    s: &HeldShares,
) -> zeroize::Zeroizing<Vec<u8>> {
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(SHARE_PLAINTEXT_LEN));
    out.extend_from_slice(&owner.to_le_bytes());
    out.extend_from_slice(&holder.to_le_bytes());
    out.extend_from_slice(&zeroize::Zeroizing::new(s.self_mask.to_bytes())[..]);
    out.extend_from_slice(&zeroize::Zeroizing::new(s.mask_key.to_bytes())[..]);
    out
}

fn decode_share_plaintext(
    bytes: &[u8],
    owner: ParticipantId,
    holder: ParticipantId,
) -> Result<HeldShares> {
    let bad = |reason: &str| SecAggError::BadShare {
        sender: owner,
        owner,
        reason: reason.into(),
    };
    if bytes.len() != SHARE_PLAINTEXT_LEN {
        return Err(bad("share plaintext has the wrong length"));
    }
    let o = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let h = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if o != owner || h != holder {
        return Err(bad("share plaintext names another owner or holder"));
    }
    let self_mask = Share::from_bytes(&bytes[8..8 + SHARE_LEN]).map_err(|e| bad(&e.to_string()))?;
    let mask_key = Share::from_bytes(&bytes[8 + SHARE_LEN..]).map_err(|e| bad(&e.to_string()))?;
    if self_mask.x != u64::from(holder) + 1 || mask_key.x != u64::from(holder) + 1 {
        return Err(bad("share evaluation point is not the holder's"));
    }
    Ok(HeldShares {
        self_mask,
        mask_key,
    })
}

/// A participant in one secure-aggregation round. Secrets (key pairs, self-mask seed, held shares) are zeroised
/// when the client is dropped; `Debug` prints none of them.
pub struct SecAggClient {
    params: SecAggParams,
    graph: NeighbourGraph,
    id: ParticipantId,
    stage: RoundStage,
    cipher_keys: KeyPair,
    mask_keys: KeyPair,
    self_mask_seed: Secret32,
    /// Neighbours in U1 (self excluded) and their public keys.
    directory: BTreeMap<ParticipantId, AdvertisedKeys>,
    /// Shares of the client's own secrets that it holds itself.
    own_shares: Option<HeldShares>,
    /// Shares held for neighbours in U2 (self excluded), by owner.
    held: BTreeMap<ParticipantId, HeldShares>,
}

impl std::fmt::Debug for SecAggClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecAggClient")
            .field("round_id", &self.params.round_id)
            .field("id", &self.id)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl SecAggClient {
    /// Starts a round: validates the parameters, draws both key pairs and the self-mask seed, and returns the
    /// AdvertiseKeys message to send.
    pub fn new<R: CryptoRng + ?Sized>(
        params: SecAggParams,
        id: ParticipantId,
        rng: &mut R,
    ) -> Result<(Self, AdvertiseKeys)> {
        params.validate()?;
        if id >= params.participants {
            return Err(SecAggError::InvalidParams(format!(
                "participant id {id} is not below {}",
                params.participants
            )));
        }
        let graph = params.neighbour_graph()?;
        let cipher_keys = KeyPair::generate(rng);
        let mask_keys = KeyPair::generate(rng);
        let self_mask_seed = Secret32::random(rng);
        let msg = AdvertiseKeys {
            version: WIRE_VERSION,
            round_id: params.round_id,
            sender: id,
            cipher_public_key: cipher_keys.public_bytes(),
            mask_public_key: mask_keys.public_bytes(),
        };
        let client = SecAggClient {
            params,
            graph,
            id,
            stage: RoundStage::AdvertiseKeys,
            cipher_keys,
            mask_keys,
            self_mask_seed,
            directory: BTreeMap::new(),
            own_shares: None,
            held: BTreeMap::new(),
        };
        Ok((client, msg))
    }

    /// This participant's id.
    pub fn id(&self) -> ParticipantId {
        self.id
    }

    /// The stage of the last message this client produced (Completed/Aborted once it is done).
    pub fn stage(&self) -> RoundStage {
        self.stage
    }

    /// The round parameters.
    pub fn params(&self) -> &SecAggParams {
        &self.params
    }

    /// Abandons the round and forgets every secret it holds.
    pub fn abort(&mut self) {
        self.stage = RoundStage::Aborted;
        self.held.clear();
        self.own_shares = None;
    }

    fn expect_stage(&self, current: RoundStage, got: RoundStage) -> Result<()> {
        if matches!(self.stage, RoundStage::Completed | RoundStage::Aborted) {
            return Err(SecAggError::RoundEnded);
        }
        if self.stage != current {
            return Err(SecAggError::WrongStage {
                current: self.stage,
                got,
            });
        }
        Ok(())
    }

    fn expect_round(&self, round: u64) -> Result<()> {
        if round != self.params.round_id {
            return Err(SecAggError::WrongRound {
                expected: self.params.round_id,
                got: round,
            });
        }
        Ok(())
    }

    /// ShareKeys: checks the key directory (U1), Shamir-shares the self-mask seed and the mask private key among
    /// the neighbours in U1 (and itself) and encrypts each neighbour's pair of shares for it.
    pub fn handle_key_directory<R: CryptoRng + ?Sized>(
        &mut self,
        dir: &KeyDirectory,
        rng: &mut R,
    ) -> Result<ShareKeys> {
        self.expect_stage(RoundStage::AdvertiseKeys, RoundStage::ShareKeys)?;
        self.expect_round(dir.round_id)?;
        let n = self.params.participants;
        let t = self.params.threshold as usize;
        let mut seen_keys = BTreeSet::new();
        let mut prev: Option<ParticipantId> = None;
        let mut found_self = false;
        for k in &dir.participants {
            if k.participant >= n || prev.is_some_and(|p| p >= k.participant) {
                return Err(SecAggError::Malformed(
                    "key directory ids must be valid and strictly increasing".into(),
                ));
            }
            prev = Some(k.participant);
            if !seen_keys.insert(k.cipher_public_key) || !seen_keys.insert(k.mask_public_key) {
                return Err(SecAggError::Malformed(
                    "key directory repeats a public key".into(),
                ));
            }
            if k.participant == self.id {
                if k.cipher_public_key != self.cipher_keys.public_bytes()
                    || k.mask_public_key != self.mask_keys.public_bytes()
                {
                    return Err(SecAggError::Malformed(
                        "key directory lists other keys for this participant".into(),
                    ));
                }
                found_self = true;
            }
        }
        if !found_self {
            return Err(SecAggError::Malformed(
                "key directory does not list this participant".into(),
            ));
        }
        if dir.participants.len() < t {
            return Err(SecAggError::TooFewSurvivors {
                survivors: dir.participants.len(),
                threshold: t,
            });
        }
        let directory: BTreeMap<ParticipantId, AdvertisedKeys> = dir
            .participants
            .iter()
            .filter(|k| self.graph.are_neighbours(self.id, k.participant))
            .map(|k| (k.participant, k.clone()))
            .collect();
        if directory.len() + 1 < t {
            return Err(SecAggError::TooFewSurvivors {
                survivors: directory.len() + 1,
                threshold: t,
            });
        }
        // Holders: the neighbours in U1 and this participant; evaluation point = id + 1.
        let holders: Vec<ParticipantId> = directory
            .keys()
            .copied()
            .chain(std::iter::once(self.id))
            .collect();
        let xs: Vec<u64> = holders.iter().map(|&h| u64::from(h) + 1).collect();
        let self_mask_shares = shamir::split(&self.self_mask_seed, t, &xs, rng)?;
        let mask_key_shares = shamir::split(&self.mask_keys.secret_bytes(), t, &xs, rng)?;
        let round = self.params.round_id;
        let mut to_send = Vec::with_capacity(directory.len());
        let mut own_shares = None;
        for ((&holder, sm), mk) in holders.iter().zip(self_mask_shares).zip(mask_key_shares) {
            let held = HeldShares {
                self_mask: sm,
                mask_key: mk,
            };
            if holder == self.id {
                own_shares = Some(held);
            } else {
                to_send.push((holder, held));
            }
        }
        // One key agreement per neighbour: spread over all cores.
        let (id, cipher_keys) = (self.id, &self.cipher_keys);
        let encrypted_shares = to_send
            .par_iter()
            .map(|(holder, held)| {
                let peer = &directory[holder];
                let key = crypto::share_encryption_key(
                    cipher_keys,
                    &peer.cipher_public_key,
                    round,
                    id,
                    *holder,
                    *holder,
                )?;
                let plaintext = encode_share_plaintext(id, *holder, held);
                let ciphertext = crypto::encrypt_shares(&key, round, id, *holder, &plaintext);
                Ok(EncryptedShares {
                    recipient: *holder,
                    ciphertext,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let msg = ShareKeys {
            version: WIRE_VERSION,
            round_id: round,
            sender: self.id,
            self_mask_commitment: crypto::self_mask_commitment(
                &self.self_mask_seed,
                round,
                self.id,
            ),
            encrypted_shares,
        };
        self.directory = directory;
        self.own_shares = own_shares;
        self.stage = RoundStage::ShareKeys;
        Ok(msg)
    }

    /// MaskedInputCollection: decrypts the shares routed from neighbours in U2, then masks `input` (ring elements,
    /// length `vector_len`, each < 2^bits) with the self mask and the pairwise masks of those neighbours.
    pub fn handle_routed_shares(
        &mut self,
        routed: &RoutedShares,
        input: &[u32],
    ) -> Result<MaskedInput> {
        self.expect_stage(RoundStage::ShareKeys, RoundStage::MaskedInputCollection)?;
        self.expect_round(routed.round_id)?;
        if routed.recipient != self.id {
            return Err(SecAggError::Malformed(format!(
                "shares addressed to participant {}",
                routed.recipient
            )));
        }
        let t = self.params.threshold as usize;
        let expected_len = self.params.vector_len as usize;
        if input.len() != expected_len {
            return Err(SecAggError::WrongVectorLength {
                expected: expected_len,
                got: input.len(),
            });
        }
        let bits = self.params.bits;
        if bits < 32
            && let Some(index) = input.iter().position(|&v| v >> bits != 0)
        {
            return Err(SecAggError::ValueOutOfRange { index, bits });
        }
        let round = self.params.round_id;
        if routed.shares.windows(2).any(|w| w[0].sender >= w[1].sender) {
            return Err(SecAggError::Malformed(
                "routed shares must be sorted by sender without repeats".into(),
            ));
        }
        if let Some(r) = routed
            .shares
            .iter()
            .find(|r| !self.directory.contains_key(&r.sender))
        {
            return Err(SecAggError::NotMember {
                participant: r.sender,
                stage: RoundStage::ShareKeys,
            });
        }
        if routed.shares.len() + 1 < t {
            return Err(SecAggError::TooFewSurvivors {
                survivors: routed.shares.len() + 1,
                threshold: t,
            });
        }
        // Per neighbour: decrypt its shares and agree the pairwise mask seed (two key agreements), on all cores.
        let (id, directory, cipher_keys, mask_keys) =
            (self.id, &self.directory, &self.cipher_keys, &self.mask_keys);
        let opened = routed
            .shares
            .par_iter()
            .map(|r| {
                let peer = &directory[&r.sender];
                let key = crypto::share_encryption_key(
                    cipher_keys,
                    &peer.cipher_public_key,
                    round,
                    r.sender,
                    id,
                    r.sender,
                )?;
                let plaintext = crypto::decrypt_shares(&key, round, r.sender, id, &r.ciphertext)?;
                let shares = decode_share_plaintext(&plaintext, r.sender, id)?;
                let seed = crypto::pairwise_mask_seed(
                    mask_keys,
                    id,
                    &peer.mask_public_key,
                    r.sender,
                    round,
                )?;
                Ok((r.sender, shares, seed))
            })
            .collect::<Result<Vec<_>>>()?;
        // y = x + PRG(b_u) + Σ_{v>u} PRG(s_uv) − Σ_{v<u} PRG(s_uv)   (mod 2^bits)
        let mut add = vec![self.self_mask_seed.clone()];
        let mut sub = Vec::new();
        let mut held = BTreeMap::new();
        for (v, shares, seed) in opened {
            held.insert(v, shares);
            if v > id {
                add.push(seed)
            } else {
                sub.push(seed)
            }
        }
        let mut values = input.to_vec();
        crypto::apply_masks(&mut values, &add, &sub);
        crypto::reduce_to_ring(&mut values, bits);
        self.held = held;
        self.stage = RoundStage::MaskedInputCollection;
        Ok(MaskedInput {
            round_id: round,
            sender: self.id,
            values,
        })
    }

    /// Unmasking: given U3, reveals for each neighbour in U2 (and itself) exactly one share — of the self-mask seed
    /// if it is in U3, of the mask key otherwise. Refuses (and aborts, forgetting its secrets) if fewer than t
    /// survive; refuses an inconsistent U3 (a neighbour that never sent it shares, or one that excludes itself).
    pub fn handle_unmasking_request(
        &mut self,
        req: &UnmaskingRequest,
    ) -> Result<UnmaskingResponse> {
        self.expect_stage(RoundStage::MaskedInputCollection, RoundStage::Unmasking)?;
        self.expect_round(req.round_id)?;
        let t = self.params.threshold as usize;
        if req.survivors.windows(2).any(|w| w[0] >= w[1])
            || req.survivors.iter().any(|&u| u >= self.params.participants)
        {
            return Err(SecAggError::Malformed(
                "survivor list must be valid ids, strictly increasing".into(),
            ));
        }
        let survivors: BTreeSet<ParticipantId> = req.survivors.iter().copied().collect();
        if !survivors.contains(&self.id) {
            return Err(SecAggError::Malformed(
                "survivor list omits this participant".into(),
            ));
        }
        for &v in &survivors {
            if v != self.id && self.graph.are_neighbours(self.id, v) && !self.held.contains_key(&v)
            {
                return Err(SecAggError::Malformed(format!(
                    "participant {v} is listed as a survivor but sent no shares"
                )));
            }
        }
        let surviving_neighbourhood =
            1 + self.held.keys().filter(|v| survivors.contains(v)).count();
        if survivors.len() < t || surviving_neighbourhood < t {
            let survivors = survivors.len().min(surviving_neighbourhood);
            self.abort();
            return Err(SecAggError::TooFewSurvivors {
                survivors,
                threshold: t,
            });
        }
        let Some(own) = self.own_shares.as_ref() else {
            return Err(SecAggError::Malformed("no own shares kept".into()));
        };
        let mut self_mask_shares = vec![RevealedShare {
            owner: self.id,
            share: own.self_mask.clone(),
        }];
        let mut mask_key_shares = Vec::new();
        for (&owner, h) in &self.held {
            if survivors.contains(&owner) {
                self_mask_shares.push(RevealedShare {
                    owner,
                    share: h.self_mask.clone(),
                });
            } else {
                mask_key_shares.push(RevealedShare {
                    owner,
                    share: h.mask_key.clone(),
                });
            }
        }
        self_mask_shares.sort_by_key(|s| s.owner);
        let msg = UnmaskingResponse {
            version: WIRE_VERSION,
            round_id: self.params.round_id,
            sender: self.id,
            self_mask_shares,
            mask_key_shares,
        };
        self.held.clear();
        self.own_shares = None;
        self.stage = RoundStage::Completed;
        Ok(msg)
    }
}
