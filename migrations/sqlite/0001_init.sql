-- Confide coordinator schema (SQLite). Times are unix milliseconds; secrets are stored as sha256 hex only.
CREATE TABLE operator_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE studies (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    config_json TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE participants (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id        BIGINT NOT NULL REFERENCES studies(id),
    name            TEXT NOT NULL,
    credential_hash TEXT NOT NULL UNIQUE,
    enrolled_at     BIGINT NOT NULL,
    UNIQUE (study_id, name)
);

CREATE TABLE enrolment_tokens (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id       BIGINT NOT NULL REFERENCES studies(id),
    label          TEXT NOT NULL,
    token_hash     TEXT NOT NULL UNIQUE,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    participant_id BIGINT REFERENCES participants(id)
);

CREATE TABLE rounds (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id         BIGINT NOT NULL REFERENCES studies(id),
    round_number     BIGINT NOT NULL,
    stage            TEXT NOT NULL,
    outcome          TEXT,
    reason           TEXT,
    base_version     BIGINT NOT NULL,
    plan_json        TEXT NOT NULL,
    server_state     BLOB,
    stage_started_at BIGINT NOT NULL,
    stage_deadline   BIGINT NOT NULL,
    started_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    lease_owner      TEXT,
    lease_expires_at BIGINT NOT NULL DEFAULT 0,
    UNIQUE (study_id, round_number)
);
-- At most one unfinished round per study.
CREATE UNIQUE INDEX rounds_one_active ON rounds (study_id) WHERE outcome IS NULL;

CREATE TABLE round_members (
    round_id       BIGINT NOT NULL REFERENCES rounds(id),
    participant_id BIGINT NOT NULL REFERENCES participants(id),
    stage          TEXT NOT NULL,
    joined_at      BIGINT NOT NULL,
    PRIMARY KEY (round_id, stage, participant_id)
);

-- Protocol messages accepted for a round, kept until the round ends so a restarted coordinator can rebuild the
-- secure-aggregation server by replaying them stage by stage. Masked inputs arrive here as binary.
CREATE TABLE round_messages (
    round_id       BIGINT NOT NULL REFERENCES rounds(id),
    stage          TEXT NOT NULL,
    participant_id BIGINT NOT NULL REFERENCES participants(id),
    body           BLOB NOT NULL,
    received_at    BIGINT NOT NULL,
    PRIMARY KEY (round_id, stage, participant_id)
);

-- What the server tells participants at the start of a stage (recipient 0 = everyone).
CREATE TABLE round_broadcasts (
    round_id       BIGINT NOT NULL REFERENCES rounds(id),
    stage          TEXT NOT NULL,
    recipient_id   BIGINT NOT NULL,
    body           BLOB NOT NULL,
    PRIMARY KEY (round_id, stage, recipient_id)
);

CREATE TABLE model_versions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id   BIGINT NOT NULL REFERENCES studies(id),
    version    BIGINT NOT NULL,
    round_id   BIGINT REFERENCES rounds(id),
    sha256     TEXT NOT NULL,
    weights    BLOB NOT NULL,
    -- Server optimiser state after this version (FedAdam moments), if any.
    optimizer_state BLOB,
    created_at BIGINT NOT NULL,
    UNIQUE (study_id, version)
);

CREATE TABLE privacy_ledger (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id       BIGINT NOT NULL REFERENCES studies(id),
    participant_id BIGINT NOT NULL REFERENCES participants(id),
    round_id       BIGINT NOT NULL REFERENCES rounds(id),
    events_json    TEXT NOT NULL,
    epsilon_after  DOUBLE PRECISION NOT NULL,
    created_at     BIGINT NOT NULL,
    UNIQUE (participant_id, round_id)
);
