-- A selected participant may decline a round before advertising keys (e.g. its local privacy budget would be
-- exceeded). The decline counts as its answer to AdvertiseKeys, so the stage need not wait for its deadline, and
-- the reason is shown in the round status.
CREATE TABLE round_declines (
    round_id       BIGINT NOT NULL REFERENCES rounds(id),
    participant_id BIGINT NOT NULL REFERENCES participants(id),
    reason         TEXT NOT NULL,
    declined_at    BIGINT NOT NULL,
    PRIMARY KEY (round_id, participant_id)
);
