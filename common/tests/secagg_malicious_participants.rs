//! Malicious participants against the real server and honest clients: bad dealing is caught at share verification
//! (or on arrival) before any masked input exists and the dealer is named; a false complaint drops its accuser and
//! the round goes on; invalid revealed shares are ignored and reconstruction still succeeds; messages that are not
//! signed by their sender's roster identity change nothing.

mod secagg_support;

use confide_common::secagg::group::{self, Scalar};
use confide_common::secagg::identity::survivors_statement;
use confide_common::secagg::messages::{ConsistencySignature, WIRE_VERSION};
use confide_common::secagg::{
    AbortReason, ClientAbort, Complaint, ComplaintReason, DropReason, Dropout, RoundOutcome,
    RoundStage, SecAggError, SecAggServer, UnmaskingResponse, malicious_threshold_bound,
};
use secagg_support::{Corrupt, Dropouts, Game, Tamper, malicious};

/// A malicious round of `n` whose participant `corrupt` is played by the test: everyone advertised and honest
/// clients dealt; the corrupt participant's dealing (tampered as asked) is what the server received last.
fn dealt(
    n: u32,
    nc: u32,
    corrupt: u32,
    tamper: &Tamper,
    seed: u64,
) -> (Game, Corrupt, Result<(), SecAggError>) {
    let t = malicious_threshold_bound(n, nc);
    let s = malicious(n, t, nc, 4, 32, seed);
    let mut g = Game::start(&s, &Dropouts::default(), seed, |u| u != corrupt);
    let c = Corrupt::new(&s, corrupt, seed + 1);
    g.server.handle_advertise_keys(&c.advertise()).unwrap();
    g.close();
    g.answer(&Dropouts::default());
    let dir = g.server.key_directory().unwrap();
    let dealing = c.deal(&dir, tamper, &mut g.rng);
    let before = g.server.encode();
    let accepted = g.server.handle_share_keys(&dealing);
    if accepted.is_err() {
        assert_eq!(
            g.server.encode(),
            before,
            "a refused dealing changes nothing"
        );
    }
    (g, c, accepted)
}

#[test]
fn inconsistent_dealing_is_caught_before_any_masked_input_and_names_the_dealer() {
    for (tamper, reason, complainers) in [
        (
            Tamper::WrongShareFor(vec![0, 2]),
            ComplaintReason::NotOnCommitment,
            vec![0, 2],
        ),
        (
            Tamper::GarbleFor(vec![0, 2]),
            ComplaintReason::Undecryptable,
            vec![0, 2],
        ),
        // The combined commitments pass the degree test; holder 2's three-way check does not.
        (
            Tamper::SplitCommitmentFor(2),
            ComplaintReason::NotOnCommitment,
            vec![2],
        ),
    ] {
        let (mut g, _, accepted) = dealt(6, 1, 5, &tamper, 31);
        accepted.unwrap(); // consistent commitments: only the holders can tell
        g.close();
        assert_eq!(g.server.stage(), RoundStage::ShareVerification);
        // The holders check their shares: the complainers complain about 5 (and leave), the others acknowledge.
        let routed = |g: &Game, u| g.server.routed_shares(u).unwrap();
        for u in 0..5 {
            let r = routed(&g, u);
            let c = g.clients[u as usize].as_mut().unwrap();
            let v = c.verify_routed_shares(&r, &mut g.rng).unwrap();
            if complainers.contains(&u) {
                assert_eq!(
                    v.complaints,
                    vec![Complaint { dealer: 5, reason }],
                    "{tamper:?}"
                );
                assert!(v.revealed_cipher_key.is_some());
                assert_eq!(
                    c.abort_cause(),
                    Some(&ClientAbort::Complained { dealers: vec![5] })
                );
            } else {
                assert!(v.complaints.is_empty() && v.revealed_cipher_key.is_none());
                assert_eq!(c.stage(), RoundStage::ShareVerification);
            }
            g.server.handle_share_verification(&v).unwrap();
        }
        g.close();
        assert_eq!(
            g.server.outcome(),
            Some(RoundOutcome::Aborted {
                reason: AbortReason::BadDealing { dealers: vec![5] }
            })
        );
        let status = |u| g.server.status(u).unwrap().dropped;
        let at = |reason| {
            Some(Dropout {
                stage: RoundStage::ShareVerification,
                reason,
            })
        };
        assert_eq!(status(5), at(DropReason::BadDealing));
        for u in 0..5 {
            let expected = complainers.contains(&u).then_some(DropReason::Complained);
            assert_eq!(status(u), expected.and_then(at), "{tamper:?}, holder {u}");
        }
        // No masked input was ever asked for or taken: nobody charged anything for this round.
        assert!(g.server.masked_input_request().is_none());
        assert_eq!(g.server.aggregate(), None);
        assert!(g.server.u3().is_empty());
        for u in (0..5).filter(|u| !complainers.contains(u)) {
            assert_eq!(
                g.clients[u as usize].as_ref().unwrap().stage(),
                RoundStage::ShareVerification
            );
        }
    }
}

#[test]
fn commitments_off_the_polynomial_are_dropped_when_share_keys_closes_and_the_round_goes_on() {
    let (mut g, _, accepted) = dealt(6, 1, 5, &Tamper::CommitmentOffPolynomial, 32);
    // Accepted on arrival (its points are valid); the batched degree test at close finds it.
    assert_eq!(accepted, Ok(()));
    g.close();
    assert_eq!(g.server.u2(), &[0, 1, 2, 3, 4]);
    assert_eq!(
        g.server.status(5).unwrap().dropped,
        Some(Dropout {
            stage: RoundStage::ShareKeys,
            reason: DropReason::BadCommitments
        })
    );
    // None of its ciphertexts is routed: the holders never see the dealing.
    for u in 0..5 {
        let routed = g.server.routed_shares(u).unwrap();
        assert!(
            routed.shares.iter().all(|r| r.sender != 5),
            "holder {u} got a ciphertext of the refused dealer"
        );
    }
    g.answer(&Dropouts::default());
    g.finish(&Dropouts::default());
    assert_eq!(
        g.server.outcome(),
        Some(RoundOutcome::Completed(g.expected_sum()))
    );
}

#[test]
fn a_holder_colluding_with_its_dealer_cannot_spoil_reconstruction_with_a_share_off_the_polynomial()
{
    // Dealer 5 commits holder 0's mask-key share off the polynomial and deals it the matching (wrong) share; the
    // combined commitments stay on theirs, so the degree test passes. Holder 0 colludes: it acknowledges (its
    // client is shown a combined commitment that fits the share) and later reveals that share. Dealer 5 drops after
    // ShareKeys, so the server must rebuild its mask key — and holder 0's share, which matches its commitment,
    // would spoil that. The server's relation check W = V^β + γ·V^σ on revealed shares refuses it.
    let (mut g, _, accepted) = dealt(6, 1, 5, &Tamper::SplitCommitmentFor(0), 37);
    accepted.unwrap();
    g.close();
    assert_eq!(g.server.stage(), RoundStage::ShareVerification);
    assert_eq!(g.server.u2(), &[0, 1, 2, 3, 4, 5]);
    let (digest, round) = (g.server.params().digest(), g.server.params().round_id);
    for u in 0..5 {
        let mut routed = g.server.routed_shares(u).unwrap();
        if u == 0 {
            for r in routed.shares.iter_mut().filter(|r| r.sender == 5) {
                let c = r.commitments.as_mut().unwrap();
                let gamma = group::combination_challenge(&digest, round, 5, &c.dealing_digest);
                let w = group::decode_point(&c.combined).unwrap() + group::basepoint() * gamma;
                c.combined = w.compress().to_bytes();
            }
        }
        let c = g.clients[u as usize].as_mut().unwrap();
        let v = c.verify_routed_shares(&routed, &mut g.rng).unwrap();
        assert!(
            v.complaints.is_empty(),
            "holder {u} complained: {:?}",
            v.complaints
        );
        g.server.handle_share_verification(&v).unwrap();
    }
    // Dealer 5 says nothing more; the others mask, sign U3 and reveal.
    g.finish(&Dropouts::default());
    assert_eq!(
        g.server.outcome(),
        Some(RoundOutcome::Completed(g.expected_sum()))
    );
    assert_eq!(
        g.server.status(0).unwrap().dropped,
        Some(Dropout {
            stage: RoundStage::Unmasking,
            reason: DropReason::InvalidRevealedShare
        })
    );
    for u in 1..5 {
        assert_eq!(g.server.status(u).unwrap().dropped, None, "participant {u}");
    }
}

#[test]
fn a_commitment_that_is_not_a_point_is_refused_on_arrival() {
    let (g, _, accepted) = dealt(6, 1, 5, &Tamper::CommitmentNotAPoint, 33);
    assert!(
        matches!(accepted, Err(SecAggError::BadDealing { dealer: 5, .. })),
        "{accepted:?}"
    );
    drop(g);
}

#[test]
fn a_false_complaint_drops_the_accuser_and_the_round_goes_on() {
    // Participant 6 complains (with its real cipher key) about honest dealer 0; participant 5 complains with a
    // key that is not its own. Both are dropped; the five honest participants complete the round.
    let (n, nc) = (7, 2);
    let t = malicious_threshold_bound(n, nc);
    let s = malicious(n, t, nc, 4, 32, 33);
    let mut g = Game::start(&s, &Dropouts::default(), 33, |u| u < 5);
    let liars: Vec<Corrupt> = (5..7)
        .map(|u| Corrupt::new(&s, u, 40 + u64::from(u)))
        .collect();
    for c in &liars {
        g.server.handle_advertise_keys(&c.advertise()).unwrap();
    }
    g.close();
    g.answer(&Dropouts::default());
    let dir = g.server.key_directory().unwrap();
    for c in &liars {
        let d = c.deal(&dir, &Tamper::Honest, &mut g.rng);
        g.server.handle_share_keys(&d).unwrap();
    }
    g.close();
    g.answer(&Dropouts::default());
    let about_0 = vec![Complaint {
        dealer: 0,
        reason: ComplaintReason::NotOnCommitment,
    }];
    let real_key = liars[1].cipher.secret_bytes();
    let mut other_key = *real_key.as_bytes();
    other_key[0] ^= 1;
    g.server
        .handle_share_verification(&liars[0].complain(about_0.clone(), other_key))
        .unwrap();
    g.server
        .handle_share_verification(&liars[1].complain(about_0, *real_key.as_bytes()))
        .unwrap();
    g.finish(&Dropouts::default());
    for u in [5, 6] {
        assert_eq!(
            g.server.status(u).unwrap().dropped,
            Some(Dropout {
                stage: RoundStage::ShareVerification,
                reason: DropReason::FalseComplaint
            })
        );
    }
    assert_eq!(g.server.verified(), &[0, 1, 2, 3, 4]);
    assert_eq!(
        g.server.outcome(),
        Some(RoundOutcome::Completed(g.expected_sum()))
    );
    assert_eq!(g.server.u3(), &[0, 1, 2, 3, 4]);
}

/// Drives an honest malicious-mode round of 7 (t = 4) to Unmasking and returns the game and the responses.
fn until_unmasking(seed: u64) -> (Game, Vec<UnmaskingResponse>) {
    let s = malicious(7, 4, 0, 4, 32, seed);
    let mut g = Game::start(&s, &Dropouts::default(), seed, |_| true);
    for _ in 0..4 {
        g.close();
        g.answer(&Dropouts::default());
    }
    g.close();
    assert_eq!(g.server.stage(), RoundStage::Unmasking);
    let msg = g.server.signed_survivors().unwrap();
    let responses = g
        .clients
        .iter_mut()
        .map(|c| c.as_mut().unwrap().handle_signed_survivors(&msg).unwrap())
        .collect();
    (g, responses)
}

#[test]
fn invalid_revealed_shares_are_ignored_and_reconstruction_still_succeeds() {
    // |U4| − t = 3 revealers lie about participant 6's self-mask share (and one also about 2's).
    let (mut g, mut responses) = until_unmasking(34);
    for r in &mut responses[..3] {
        r.self_mask_shares[6].share.y += Scalar::ONE;
    }
    responses[0].self_mask_shares[2].share.y = Scalar::ZERO;
    for r in &responses {
        g.server.handle_unmasking_response(r).unwrap();
    }
    g.close();
    assert_eq!(
        g.server.outcome(),
        Some(RoundOutcome::Completed(g.expected_sum()))
    );
    for u in 0..7 {
        let status = g.server.status(u).unwrap();
        assert_eq!(status.reached, Some(RoundStage::Unmasking));
        let lied = (u < 3).then_some(Dropout {
            stage: RoundStage::Unmasking,
            reason: DropReason::InvalidRevealedShare,
        });
        assert_eq!(status.dropped, lied, "participant {u}");
    }
    // One liar too many for participant 6: fewer than t valid shares, the round aborts with the reason.
    let (mut g, mut responses) = until_unmasking(35);
    for r in &mut responses[..4] {
        r.self_mask_shares[6].share.y += Scalar::ONE;
    }
    for r in &responses {
        g.server.handle_unmasking_response(r).unwrap();
    }
    g.close();
    assert_eq!(
        g.server.outcome(),
        Some(RoundOutcome::Aborted {
            reason: AbortReason::TooFewValidShares {
                participant: 6,
                valid: 3,
                threshold: 4
            }
        })
    );
}

#[test]
fn a_lying_share_that_is_not_needed_is_not_looked_at_and_changes_nothing() {
    // t = 4 of 7 revealers: the first four shares (by evaluation point) rebuild every secret; the last revealer's
    // lie about participant 6 is never used, so the fast path needs no per-share check and nobody is dropped.
    let (mut g, mut responses) = until_unmasking(36);
    responses[6].self_mask_shares[5].share.y += Scalar::ONE;
    for r in &responses {
        g.server.handle_unmasking_response(r).unwrap();
    }
    g.close();
    assert_eq!(
        g.server.outcome(),
        Some(RoundOutcome::Completed(g.expected_sum()))
    );
    for u in 0..7 {
        assert_eq!(g.server.status(u).unwrap().dropped, None, "participant {u}");
    }
}

#[test]
fn messages_not_signed_by_their_senders_roster_identity_change_nothing() {
    let (n, t) = (5, 4);
    let s = malicious(n, t, 1, 4, 32, 36);
    let mut g = Game::start(&s, &Dropouts::default(), 36, |u| u != 4);
    let rejects = |server: &mut SecAggServer,
                   f: &dyn Fn(&mut SecAggServer) -> Result<(), SecAggError>| {
        let before = server.encode();
        let err = f(server).unwrap_err();
        assert_eq!(server.encode(), before, "state changed after {err:?}");
        err
    };
    let c = Corrupt::new(&s, 4, 37);
    let mut impostor = c.advertise();
    impostor.signature = Some(s.identities[0].sign(&impostor.statement(&s.params.digest())));
    assert_eq!(
        rejects(&mut g.server, &|sv| sv.handle_advertise_keys(&impostor)),
        SecAggError::BadSignature { signer: 4 }
    );
    g.server.handle_advertise_keys(&c.advertise()).unwrap();
    g.close();
    g.answer(&Dropouts::default());
    let dir = g.server.key_directory().unwrap();
    let mut dealing = c.deal(&dir, &Tamper::Honest, &mut g.rng);
    dealing.encrypted_shares[1].ciphertext[0] ^= 1; // after signing
    assert_eq!(
        rejects(&mut g.server, &|sv| sv.handle_share_keys(&dealing)),
        SecAggError::BadSignature { signer: 4 }
    );
    let mut unsigned = c.deal(&dir, &Tamper::Honest, &mut g.rng);
    unsigned.signature = None;
    assert_eq!(
        rejects(&mut g.server, &|sv| sv.handle_share_keys(&unsigned)),
        SecAggError::MissingSignature { participant: 4 }
    );
    let honest_dealing = c.deal(&dir, &Tamper::Honest, &mut g.rng);
    g.server.handle_share_keys(&honest_dealing).unwrap();
    g.close();
    // A complaint in 4's name signed by 0.
    let mut forged = c.complain(
        vec![Complaint {
            dealer: 1,
            reason: ComplaintReason::Undecryptable,
        }],
        *c.cipher.secret_bytes().as_bytes(),
    );
    forged.signature = s.identities[0].sign(&forged.statement(&s.params.digest()));
    assert_eq!(
        rejects(&mut g.server, &|sv| sv.handle_share_verification(&forged)),
        SecAggError::BadSignature { signer: 4 }
    );
    g.answer(&Dropouts::default());
    g.close();
    g.answer(&Dropouts::default());
    g.close();
    assert_eq!(g.server.stage(), RoundStage::ConsistencyCheck);
    // A consistency signature by 0 over a U3 other than the round's.
    let st = survivors_statement(&s.params.digest(), s.params.round_id, &[0, 1, 2]);
    let other_set = ConsistencySignature {
        version: WIRE_VERSION,
        round_id: s.params.round_id,
        sender: 0,
        signature: s.identities[0].sign(&st),
    };
    assert_eq!(
        rejects(&mut g.server, &|sv| sv
            .handle_consistency_signature(&other_set)),
        SecAggError::BadSignature { signer: 0 }
    );
}
