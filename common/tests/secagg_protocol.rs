//! End-to-end tests of the secure-aggregation state machines: correctness under dropouts at every stage, aborts,
//! the honest client's reveal rule, typed errors that leave the server unchanged, and statistical uniformity.

use confide_common::secagg::messages::ControlMessage;
use confide_common::secagg::{
    AbortReason, GraphKind, KeyDirectory, MaskedInput, QuantizationParams, RoundOutcome,
    RoundStage, RoutedShares, SecAggClient, SecAggError, SecAggParams, SecAggServer,
    UnmaskingRequest, UnmaskingResponse,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn params(n: u32, t: u32, graph: GraphKind, len: u32, bits: u32) -> SecAggParams {
    let p = SecAggParams {
        round_id: 42,
        participants: n,
        threshold: t,
        graph,
        graph_seed: [3; 32],
        vector_len: len,
        bits,
    };
    p.validate().unwrap();
    p
}

/// Who stops answering at which stage.
#[derive(Default, Clone, Debug)]
struct Dropouts {
    advertise: Vec<u32>,
    share: Vec<u32>,
    masked: Vec<u32>,
    unmask: Vec<u32>,
}

struct Round {
    server: SecAggServer,
    clients: Vec<SecAggClient>,
    inputs: Vec<Vec<u32>>,
    rng: ChaCha20Rng,
}

impl Round {
    fn new(p: &SecAggParams, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let server = SecAggServer::new(p.clone()).unwrap();
        let mut clients = Vec::new();
        let mut inputs = Vec::new();
        for u in 0..p.participants {
            let (c, _) = SecAggClient::new(p.clone(), u, &mut rng).unwrap();
            clients.push(c);
            let mask = if p.bits == 32 {
                u32::MAX
            } else {
                (1 << p.bits) - 1
            };
            inputs.push((0..p.vector_len).map(|_| rng.next_u32() & mask).collect());
        }
        Round {
            server,
            clients,
            inputs,
            rng,
        }
    }

    /// Persists and restores the server, as the coordinator does at every stage boundary.
    fn persist(&mut self) {
        let bytes = self.server.encode();
        self.server = SecAggServer::decode(&bytes).unwrap();
        assert_eq!(self.server.encode(), bytes);
    }
}

/// Runs a whole round; returns the outcome and the expected sum of U3's inputs.
fn run(p: &SecAggParams, drops: &Dropouts, seed: u64) -> (RoundOutcome, Option<Vec<u32>>) {
    let mut r = Round::new(p, seed);
    let n = p.participants;
    // AdvertiseKeys: re-create the clients to capture their messages.
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0xabc);
    for u in 0..n {
        let (c, msg) = SecAggClient::new(p.clone(), u, &mut rng).unwrap();
        r.clients[u as usize] = c;
        if !drops.advertise.contains(&u) {
            let msg = confide_common::secagg::AdvertiseKeys::from_json(&msg.to_json()).unwrap();
            r.server.handle_advertise_keys(&msg).unwrap();
        }
    }
    r.server.close_stage().unwrap();
    r.persist();
    if r.server.stage() == RoundStage::Aborted {
        return (r.server.outcome().unwrap(), None);
    }
    let dir = KeyDirectory::from_json(&r.server.key_directory().unwrap().to_json()).unwrap();
    for &u in &r.server.u1().to_vec() {
        let msg = r.clients[u as usize]
            .handle_key_directory(&dir, &mut r.rng)
            .unwrap();
        if !drops.share.contains(&u) {
            let msg = confide_common::secagg::ShareKeys::from_json(&msg.to_json()).unwrap();
            r.server.handle_share_keys(&msg).unwrap();
        }
    }
    r.server.close_stage().unwrap();
    r.persist();
    if r.server.stage() == RoundStage::Aborted {
        return (r.server.outcome().unwrap(), None);
    }
    for &u in &r.server.u2().to_vec() {
        let routed =
            RoutedShares::from_json(&r.server.routed_shares(u).unwrap().to_json()).unwrap();
        let masked = r.clients[u as usize]
            .handle_routed_shares(&routed, &r.inputs[u as usize])
            .unwrap();
        if !drops.masked.contains(&u) {
            r.server
                .handle_masked_input_bytes(&masked.encode())
                .unwrap();
        }
    }
    r.server.close_stage().unwrap();
    r.persist();
    if r.server.stage() == RoundStage::Aborted {
        return (r.server.outcome().unwrap(), None);
    }
    let u3 = r.server.u3().to_vec();
    let mask = if p.bits == 32 {
        u32::MAX
    } else {
        (1u32 << p.bits) - 1
    };
    let mut expected = vec![0u32; p.vector_len as usize];
    for &u in &u3 {
        for (e, x) in expected.iter_mut().zip(&r.inputs[u as usize]) {
            *e = e.wrapping_add(*x) & mask;
        }
    }
    let req =
        UnmaskingRequest::from_json(&r.server.unmasking_request().unwrap().to_json()).unwrap();
    for &u in &u3 {
        if drops.unmask.contains(&u) {
            continue;
        }
        let resp = r.clients[u as usize]
            .handle_unmasking_request(&req)
            .unwrap();
        let resp = UnmaskingResponse::from_json(&resp.to_json()).unwrap();
        r.server.handle_unmasking_response(&resp).unwrap();
    }
    assert_eq!(
        r.server.ready_to_close(),
        drops.unmask.iter().all(|u| !u3.contains(u))
    );
    r.server.close_stage().unwrap();
    r.persist();
    (r.server.outcome().unwrap(), Some(expected))
}

fn assert_completes(p: &SecAggParams, drops: &Dropouts, seed: u64) {
    let (outcome, expected) = run(p, drops, seed);
    match outcome {
        RoundOutcome::Completed(sum) => assert_eq!(
            Some(sum),
            expected,
            "n = {}, drops = {drops:?}",
            p.participants
        ),
        RoundOutcome::Aborted { reason } => panic!(
            "aborted: {reason} (n = {}, drops = {drops:?})",
            p.participants
        ),
    }
}

/// Spreads `count` dropouts over the four stages, round robin, choosing pseudo-random participants.
fn spread_dropouts(n: u32, count: u32, rng: &mut ChaCha20Rng) -> Dropouts {
    let mut ids: Vec<u32> = (0..n).collect();
    rand::seq::SliceRandom::shuffle(&mut ids[..], rng);
    let mut d = Dropouts::default();
    for (i, &u) in ids.iter().take(count as usize).enumerate() {
        match i % 4 {
            0 => d.advertise.push(u),
            1 => d.share.push(u),
            2 => d.masked.push(u),
            _ => d.unmask.push(u),
        }
    }
    d
}

#[test]
fn complete_graph_sum_is_exact_for_many_n_with_dropouts_up_to_the_threshold() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for n in [2u32, 3, 4, 5, 6, 7, 9, 12, 17, 25, 33, 50, 100] {
        let t = n / 2 + 1;
        let p = params(n, t, GraphKind::Complete, 5, 32);
        if n < 100 {
            assert_completes(&p, &Dropouts::default(), u64::from(n));
        }
        // As many dropouts as the threshold allows, spread over all stages.
        let drops = spread_dropouts(n, n - t, &mut rng);
        assert_completes(&p, &drops, u64::from(n) + 1000);
    }
}

#[test]
fn dropouts_concentrated_in_each_single_stage() {
    let n = 11;
    let t = 6;
    let p = params(n, t, GraphKind::Complete, 7, 20);
    let dropped: Vec<u32> = vec![0, 3, 5, 9, 10];
    for stage in 0..4 {
        let mut d = Dropouts::default();
        match stage {
            0 => d.advertise = dropped.clone(),
            1 => d.share = dropped.clone(),
            2 => d.masked = dropped.clone(),
            _ => d.unmask = dropped.clone(),
        }
        assert_completes(&p, &d, 77 + stage);
    }
}

#[test]
fn sparse_graph_sum_is_exact_with_dropouts() {
    let n = 60;
    let p = params(n, 7, GraphKind::Harary { degree: 10 }, 9, 32);
    assert_completes(&p, &Dropouts::default(), 5);
    let d = Dropouts {
        advertise: vec![1],
        share: vec![20],
        masked: vec![33, 47],
        unmask: vec![59],
    };
    assert_completes(&p, &d, 6);
}

#[test]
fn derived_sparse_parameters_run_a_round() {
    let req = confide_common::secagg::SecurityRequirements {
        participants: 150,
        dropout_rate: 0.1,
        corrupt_fraction: 0.05,
        sparse: true,
    };
    let p = SecAggParams::derive(7, &req, 4, 32, [9; 32]).unwrap();
    assert!(matches!(p.graph, GraphKind::Harary { .. }), "{:?}", p.graph);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let drops = spread_dropouts(150, 15, &mut rng);
    assert_completes(&p, &drops, 8);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn random_rounds_sum_exactly(seed in any::<u64>(), n in 2u32..40, sparse in any::<bool>(), bits in 1u32..=32, len in 1u32..20, drop_frac in 0.0f64..=1.0) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (graph, size) = if sparse && n >= 8 {
            let degree = 2 * (1 + (seed % u64::from((n - 2) / 2).max(1)) as u32).min((n - 2) / 2);
            if degree + 1 < n { (GraphKind::Harary { degree }, degree + 1) } else { (GraphKind::Complete, n) }
        } else {
            (GraphKind::Complete, n)
        };
        let t = size / 2 + 1;
        let p = params(n, t, graph, len, bits);
        // Sparse graphs can only lose dropouts that keep every neighbourhood at t; allow few there.
        let budget = if matches!(graph, GraphKind::Complete) { n - t } else { (size - t).min(1) };
        let drops = spread_dropouts(n, (f64::from(budget) * drop_frac) as u32, &mut rng);
        let (outcome, expected) = run(&p, &drops, seed);
        match outcome {
            RoundOutcome::Completed(sum) => prop_assert_eq!(Some(sum), expected),
            RoundOutcome::Aborted { reason } => prop_assert!(false, "aborted: {}", reason),
        }
    }
}

#[test]
fn round_aborts_cleanly_below_the_threshold_at_every_stage() {
    let n = 9;
    let t = 5;
    let p = params(n, t, GraphKind::Complete, 3, 32);
    let five: Vec<u32> = vec![0, 1, 2, 3, 4];
    for stage in 0..4 {
        let mut d = Dropouts::default();
        match stage {
            0 => d.advertise = five.clone(),
            1 => d.share = five.clone(),
            2 => d.masked = five.clone(),
            _ => d.unmask = five.clone(),
        }
        let (outcome, _) = run(&p, &d, 10 + stage);
        let RoundOutcome::Aborted { reason } = outcome else {
            panic!("stage {stage}: round should abort")
        };
        assert!(
            matches!(
                reason,
                AbortReason::TooFewParticipants {
                    survivors: 4,
                    threshold: 5,
                    ..
                }
            ),
            "{reason:?}"
        );
    }
}

/// Drives a complete-graph round up to the Unmasking broadcast; returns server, clients, inputs.
fn round_until_unmasking(
    n: u32,
    t: u32,
    seed: u64,
) -> (SecAggServer, Vec<SecAggClient>, ChaCha20Rng) {
    let p = params(n, t, GraphKind::Complete, 4, 32);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut server = SecAggServer::new(p.clone()).unwrap();
    let mut clients = Vec::new();
    for u in 0..n {
        let (c, m) = SecAggClient::new(p.clone(), u, &mut rng).unwrap();
        server.handle_advertise_keys(&m).unwrap();
        clients.push(c);
    }
    server.close_stage().unwrap();
    let dir = server.key_directory().unwrap();
    for c in &mut clients {
        let m = c.handle_key_directory(&dir, &mut rng).unwrap();
        server.handle_share_keys(&m).unwrap();
    }
    server.close_stage().unwrap();
    (server, clients, rng)
}

#[test]
fn honest_client_never_reveals_both_shares_of_one_peer() {
    let (server, mut clients, _) = round_until_unmasking(7, 4, 21);
    let input = vec![0u32; 4];
    for c in &mut clients {
        let routed = server.routed_shares(c.id()).unwrap();
        c.handle_routed_shares(&routed, &input).unwrap();
    }
    // A server that claims participants 5 and 6 dropped (so it gets their mask keys) ...
    let req = UnmaskingRequest {
        version: 1,
        round_id: 42,
        survivors: vec![0, 1, 2, 3, 4],
    };
    let resp = clients[0].handle_unmasking_request(&req).unwrap();
    let self_owners: Vec<u32> = resp.self_mask_shares.iter().map(|s| s.owner).collect();
    let key_owners: Vec<u32> = resp.mask_key_shares.iter().map(|s| s.owner).collect();
    assert_eq!(self_owners, vec![0, 1, 2, 3, 4]);
    assert_eq!(key_owners, vec![5, 6]);
    // ... and then asks again claiming they survived, to get their self-mask shares too: refused.
    let req2 = UnmaskingRequest {
        version: 1,
        round_id: 42,
        survivors: (0..7).collect(),
    };
    assert_eq!(
        clients[0].handle_unmasking_request(&req2),
        Err(SecAggError::RoundEnded)
    );
    // Asking a fresh client with fewer than t survivors reveals nothing and ends its participation.
    let few = UnmaskingRequest {
        version: 1,
        round_id: 42,
        survivors: vec![1, 2, 3],
    };
    assert!(matches!(
        clients[1].handle_unmasking_request(&few),
        Err(SecAggError::TooFewSurvivors {
            survivors: 3,
            threshold: 4
        })
    ));
    assert_eq!(clients[1].stage(), RoundStage::Aborted);
    assert_eq!(
        clients[1].handle_unmasking_request(&req2),
        Err(SecAggError::RoundEnded)
    );
    // A survivor list without the client itself, or unsorted, is refused and changes nothing.
    let without_self = UnmaskingRequest {
        version: 1,
        round_id: 42,
        survivors: vec![0, 1, 3, 4, 5],
    };
    assert!(matches!(
        clients[2].handle_unmasking_request(&without_self),
        Err(SecAggError::Malformed(_))
    ));
    let unsorted = UnmaskingRequest {
        version: 1,
        round_id: 42,
        survivors: vec![2, 1, 3, 4, 5],
    };
    assert!(matches!(
        clients[2].handle_unmasking_request(&unsorted),
        Err(SecAggError::Malformed(_))
    ));
    assert_eq!(clients[2].stage(), RoundStage::MaskedInputCollection);
    let ok = clients[2].handle_unmasking_request(&req2).unwrap();
    assert_eq!(ok.self_mask_shares.len(), 7);
    assert!(ok.mask_key_shares.is_empty());
}

#[test]
fn tampered_ciphertext_is_rejected_and_the_client_can_still_proceed() {
    let (server, mut clients, _) = round_until_unmasking(5, 3, 22);
    let routed = server.routed_shares(2).unwrap();
    let mut tampered = routed.clone();
    tampered.shares[1].ciphertext[10] ^= 0x40;
    let sender = tampered.shares[1].sender;
    let input = vec![1u32; 4];
    assert_eq!(
        clients[2].handle_routed_shares(&tampered, &input),
        Err(SecAggError::BadCiphertext { sender })
    );
    // Misrouted: another participant's shares.
    let other = server.routed_shares(3).unwrap();
    assert!(clients[2].handle_routed_shares(&other, &input).is_err());
    let mut swapped = routed.clone();
    swapped.shares.swap(0, 1);
    assert!(matches!(
        clients[2].handle_routed_shares(&swapped, &input),
        Err(SecAggError::Malformed(_))
    ));
    assert_eq!(
        clients[2].handle_routed_shares(&routed, &[1u32; 3]),
        Err(SecAggError::WrongVectorLength {
            expected: 4,
            got: 3
        })
    );
    assert_eq!(clients[2].stage(), RoundStage::ShareKeys);
    let masked = clients[2].handle_routed_shares(&routed, &input).unwrap();
    assert_eq!(masked.values.len(), 4);
}

#[test]
fn rejected_messages_leave_the_server_state_unchanged() {
    let n = 5;
    let p = params(n, 3, GraphKind::Complete, 6, 16);
    let mut rng = ChaCha20Rng::seed_from_u64(30);
    let mut server = SecAggServer::new(p.clone()).unwrap();
    let mut clients = Vec::new();
    let mut adverts = Vec::new();
    for u in 0..n {
        let (c, m) = SecAggClient::new(p.clone(), u, &mut rng).unwrap();
        clients.push(c);
        adverts.push(m);
    }
    let rejects = |server: &mut SecAggServer,
                   f: &dyn Fn(&mut SecAggServer) -> Result<(), SecAggError>| {
        let before = server.encode();
        let err = f(server).unwrap_err();
        assert_eq!(server.encode(), before, "state changed after {err:?}");
        err
    };
    server.handle_advertise_keys(&adverts[0]).unwrap();
    let a0 = adverts[0].clone();
    assert_eq!(
        rejects(&mut server, &|s| s.handle_advertise_keys(&a0)),
        SecAggError::Duplicate(0)
    );
    let mut stranger = adverts[1].clone();
    stranger.sender = 9;
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_advertise_keys(&stranger)),
        SecAggError::NotMember { participant: 9, .. }
    ));
    let mut reused = adverts[1].clone();
    reused.mask_public_key = adverts[0].mask_public_key;
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_advertise_keys(&reused)),
        SecAggError::Malformed(_)
    ));
    let mut other_round = adverts[1].clone();
    other_round.round_id = 1;
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_advertise_keys(&other_round)),
        SecAggError::WrongRound { .. }
    ));
    let early = MaskedInput {
        round_id: 42,
        sender: 1,
        values: vec![0; 6],
    };
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_masked_input(&early)),
        SecAggError::WrongStage { .. }
    ));
    // Participant 4 never advertises: it is not in U1.
    for m in &adverts[1..4] {
        server.handle_advertise_keys(m).unwrap();
    }
    server.close_stage().unwrap();
    assert_eq!(server.u1(), &[0, 1, 2, 3]);
    let dir = server.key_directory().unwrap();
    let mut share_msgs = Vec::new();
    for c in &mut clients[..4] {
        share_msgs.push(c.handle_key_directory(&dir, &mut rng).unwrap());
    }
    let a4 = adverts[4].clone();
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_advertise_keys(&a4)),
        SecAggError::WrongStage { .. }
    ));
    let mut short = share_msgs[0].clone();
    short.encrypted_shares[0].ciphertext.pop();
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_share_keys(&short)),
        SecAggError::Malformed(_)
    ));
    let mut missing = share_msgs[0].clone();
    missing.encrypted_shares.pop();
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_share_keys(&missing)),
        SecAggError::Malformed(_)
    ));
    for m in &share_msgs {
        server.handle_share_keys(m).unwrap();
    }
    let s0 = share_msgs[0].clone();
    assert_eq!(
        rejects(&mut server, &|s| s.handle_share_keys(&s0)),
        SecAggError::Duplicate(0)
    );
    server.close_stage().unwrap();
    let inputs: Vec<Vec<u32>> = (0..4).map(|u| vec![u * 100 + 1; 6]).collect();
    let mut masked = Vec::new();
    for (u, c) in clients[..4].iter_mut().enumerate() {
        let routed = server.routed_shares(u as u32).unwrap();
        masked.push(c.handle_routed_shares(&routed, &inputs[u]).unwrap());
    }
    let wrong_len = MaskedInput {
        round_id: 42,
        sender: 0,
        values: vec![0; 5],
    };
    assert_eq!(
        rejects(&mut server, &|s| s.handle_masked_input(&wrong_len)),
        SecAggError::WrongVectorLength {
            expected: 6,
            got: 5
        }
    );
    let bytes = wrong_len.encode();
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_masked_input_bytes(&bytes)),
        SecAggError::WrongVectorLength { .. }
    ));
    let truncated = masked[0].encode();
    let truncated = truncated[..truncated.len() - 2].to_vec();
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_masked_input_bytes(&truncated)),
        SecAggError::Malformed(_)
    ));
    let out_of_ring = MaskedInput {
        round_id: 42,
        sender: 0,
        values: vec![1 << 16; 6],
    };
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_masked_input(&out_of_ring)),
        SecAggError::ValueOutOfRange { .. }
    ));
    let from_4 = MaskedInput {
        round_id: 42,
        sender: 4,
        values: vec![0; 6],
    };
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_masked_input(&from_4)),
        SecAggError::NotMember { participant: 4, .. }
    ));
    for m in &masked {
        server.handle_masked_input_bytes(&m.encode()).unwrap();
    }
    let m0 = masked[0].encode();
    assert_eq!(
        rejects(&mut server, &|s| s.handle_masked_input_bytes(&m0)),
        SecAggError::Duplicate(0)
    );
    server.close_stage().unwrap();
    let req = server.unmasking_request().unwrap();
    let responses: Vec<UnmaskingResponse> = clients[..4]
        .iter_mut()
        .map(|c| c.handle_unmasking_request(&req).unwrap())
        .collect();
    // Asking for both kinds of share of participant 1: refused as a bad share.
    let mut both = responses[0].clone();
    let mut extra = both.self_mask_shares[1].clone();
    extra.owner = 1;
    both.mask_key_shares.push(extra);
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_unmasking_response(&both)),
        SecAggError::BadShare { .. }
    ));
    let mut missing = responses[0].clone();
    missing.self_mask_shares.pop();
    assert!(matches!(
        rejects(&mut server, &|s| s.handle_unmasking_response(&missing)),
        SecAggError::BadShare { .. }
    ));
    let mut foreign_point = responses[0].clone();
    foreign_point.self_mask_shares[0].share = responses[1].self_mask_shares[0].share.clone();
    assert!(matches!(
        rejects(&mut server, &|s| s
            .handle_unmasking_response(&foreign_point)),
        SecAggError::BadShare { .. }
    ));
    for r in &responses {
        server.handle_unmasking_response(r).unwrap();
    }
    let r0 = responses[0].clone();
    assert_eq!(
        rejects(&mut server, &|s| s.handle_unmasking_response(&r0)),
        SecAggError::Duplicate(0)
    );
    assert!(server.ready_to_close());
    server.close_stage().unwrap();
    let expected: Vec<u32> = vec![1 + 101 + 201 + 301; 6];
    assert_eq!(server.aggregate(), Some(&expected[..]));
    assert_eq!(server.close_stage(), Err(SecAggError::RoundEnded));
}

#[test]
fn wrong_share_is_detected_at_unmasking() {
    let (mut server, mut clients, _) = round_until_unmasking(5, 3, 23);
    for c in &mut clients {
        let routed = server.routed_shares(c.id()).unwrap();
        let m = c.handle_routed_shares(&routed, &[7u32; 4]).unwrap();
        server.handle_masked_input(&m).unwrap();
    }
    server.close_stage().unwrap();
    let req = server.unmasking_request().unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let mut r = c.handle_unmasking_request(&req).unwrap();
        if i < 3 {
            // The first t holders (whose shares the server uses) corrupt participant 4's share.
            r.self_mask_shares[4].share.y[0] =
                (r.self_mask_shares[4].share.y[0] + 1) % ((1 << 61) - 1);
        }
        server.handle_unmasking_response(&r).unwrap();
    }
    server.close_stage().unwrap();
    assert_eq!(
        server.outcome(),
        Some(RoundOutcome::Aborted {
            reason: AbortReason::InconsistentShares { participant: 4 }
        })
    );
}

#[test]
fn masked_inputs_are_uniform() {
    // A constant input (all zeros) masked in an 8-bit ring: χ² over 256 bins, 255 degrees of freedom.
    let len = 64_000u32;
    let (server, mut clients, _) = {
        let p = params(3, 2, GraphKind::Complete, len, 8);
        let mut rng = ChaCha20Rng::seed_from_u64(40);
        let mut server = SecAggServer::new(p.clone()).unwrap();
        let mut clients = Vec::new();
        for u in 0..3 {
            let (c, m) = SecAggClient::new(p.clone(), u, &mut rng).unwrap();
            server.handle_advertise_keys(&m).unwrap();
            clients.push(c);
        }
        server.close_stage().unwrap();
        let dir = server.key_directory().unwrap();
        for c in &mut clients {
            let m = c.handle_key_directory(&dir, &mut rng).unwrap();
            server.handle_share_keys(&m).unwrap();
        }
        server.close_stage().unwrap();
        (server, clients, rng)
    };
    let routed = server.routed_shares(1).unwrap();
    let masked = clients[1]
        .handle_routed_shares(&routed, &vec![0u32; len as usize])
        .unwrap();
    let mut hist = [0u64; 256];
    for &v in &masked.values {
        hist[v as usize] += 1;
    }
    let expected = f64::from(len) / 256.0;
    let chi2: f64 = hist
        .iter()
        .map(|&h| (h as f64 - expected).powi(2) / expected)
        .sum();
    // 99.9th percentile of χ²(255) ≈ 330.5.
    assert!(chi2 < 330.5, "chi-square {chi2}");
}

#[test]
fn quantised_updates_aggregate_to_their_sum() {
    let n = 6;
    let q = QuantizationParams::for_participants(1.0, 32, n, 1000).unwrap();
    let p = params(n, 4, GraphKind::Complete, 4, 32);
    let mut rng = ChaCha20Rng::seed_from_u64(50);
    let updates: Vec<Vec<f32>> = (0..n)
        .map(|u| vec![0.1 * u as f32, -0.3, 0.77, 2.0])
        .collect();
    let mut server = SecAggServer::new(p.clone()).unwrap();
    let mut clients = Vec::new();
    for u in 0..n {
        let (c, m) = SecAggClient::new(p.clone(), u, &mut rng).unwrap();
        server.handle_advertise_keys(&m).unwrap();
        clients.push(c);
    }
    server.close_stage().unwrap();
    let dir = server.key_directory().unwrap();
    for c in &mut clients {
        let m = c.handle_key_directory(&dir, &mut rng).unwrap();
        server.handle_share_keys(&m).unwrap();
    }
    server.close_stage().unwrap();
    for (u, c) in clients.iter_mut().enumerate() {
        let x = q
            .quantize(&updates[u][..3], 10 + u as u32, &mut rng)
            .unwrap();
        let m = c
            .handle_routed_shares(&server.routed_shares(u as u32).unwrap(), &x)
            .unwrap();
        server.handle_masked_input(&m).unwrap();
    }
    server.close_stage().unwrap();
    let req = server.unmasking_request().unwrap();
    for c in &mut clients {
        server
            .handle_unmasking_response(&c.handle_unmasking_request(&req).unwrap())
            .unwrap();
    }
    server.close_stage().unwrap();
    let d = q.dequantize(server.aggregate().unwrap()).unwrap();
    let exact = [1.5f64, -1.8, 4.62];
    for (got, want) in d.values.iter().zip(exact) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
    assert_eq!(d.total_weight, (10..16).sum::<u64>());
}

#[test]
fn corrupted_state_is_refused() {
    let p = params(4, 3, GraphKind::Complete, 2, 32);
    let server = SecAggServer::new(p).unwrap();
    let bytes = server.encode();
    assert!(SecAggServer::decode(&bytes[..bytes.len() - 1]).is_err());
    assert!(SecAggServer::decode(b"nope").is_err());
    let mut v2 = bytes.clone();
    v2[4] = 2;
    assert!(matches!(
        SecAggServer::decode(&v2),
        Err(SecAggError::Decode(_))
    ));
    assert!(SecAggServer::decode(&bytes).is_ok());
}
