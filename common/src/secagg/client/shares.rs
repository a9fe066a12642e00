//! The plaintext a dealer encrypts for each holder: its pair of shares, bound to owner and holder.

use zeroize::Zeroizing;

use super::super::ParticipantId;
use super::super::crypto::TAG_LEN;
use super::super::error::{Result, SecAggError};
use super::super::shamir::{SHARE_LEN, Share};

/// Plaintext of one share ciphertext: owner (u32 LE), holder (u32 LE), self-mask share, mask-key share.
pub const SHARE_PLAINTEXT_LEN: usize = 8 + 2 * SHARE_LEN;
/// Length of one share ciphertext on the wire.
pub const SHARE_CIPHERTEXT_LEN: usize = SHARE_PLAINTEXT_LEN + TAG_LEN;

/// The two shares a holder keeps of one owner's secrets (zeroised on drop with the shares).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldShares {
    /// Share of the owner's self-mask secret β.
    pub self_mask: Share,
    /// Share of the owner's mask key σ.
    pub mask_key: Share,
}

/// Encodes the shares `owner` deals to `holder`; the buffer is zeroised when dropped.
pub fn encode_share_plaintext(
    owner: ParticipantId,
    holder: ParticipantId,
    s: &HeldShares,
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(SHARE_PLAINTEXT_LEN));
    out.extend_from_slice(&owner.to_le_bytes());
    out.extend_from_slice(&holder.to_le_bytes());
    out.extend_from_slice(&Zeroizing::new(s.self_mask.to_bytes())[..]);
    out.extend_from_slice(&Zeroizing::new(s.mask_key.to_bytes())[..]);
    out
}

/// Decodes and checks a share plaintext: right length, names `owner` and `holder`, canonical shares at the holder's
/// evaluation point (holder + 1).
pub fn decode_share_plaintext(
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
    if u64::from(self_mask.x) != u64::from(holder) + 1 || mask_key.x != self_mask.x {
        return Err(bad("share evaluation point is not the holder's"));
    }
    Ok(HeldShares {
        self_mask,
        mask_key,
    })
}
