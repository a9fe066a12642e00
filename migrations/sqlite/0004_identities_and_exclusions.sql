-- Malicious-model secure aggregation: each participant registers a long-term Ed25519 identity public key at
-- enrolment (32 bytes; unique within a study so that one identity holds one roster index); the operator can
-- disable a participant (it is no longer selected; its ledger stays).
ALTER TABLE participants ADD COLUMN identity_key BLOB;
ALTER TABLE participants ADD COLUMN disabled_at BIGINT;
CREATE UNIQUE INDEX participants_identity_key ON participants (study_id, identity_key);

-- Participants a round left out because of what they did in it (e.g. a dealer proved to have dealt bad shares),
-- shown with the selection exclusions and declines in the round status.
CREATE TABLE round_exclusions (
    round_id       BIGINT NOT NULL REFERENCES rounds(id),
    participant_id BIGINT NOT NULL REFERENCES participants(id),
    reason         TEXT NOT NULL,
    PRIMARY KEY (round_id, participant_id)
);
