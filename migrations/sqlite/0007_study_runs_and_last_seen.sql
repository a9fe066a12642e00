-- Studies that run themselves (`POST /v1/studies/{id}/run`): the automatic schedule (JSON `StudySchedule`) and the
-- state of the study's run, kept here so that a restarted coordinator, or any of several sharing the database,
-- carries it on. The run's rounds are those numbered after `run_after_round` (its retries count only those).
ALTER TABLE studies ADD COLUMN schedule_json TEXT;
ALTER TABLE studies ADD COLUMN run_state TEXT;
ALTER TABLE studies ADD COLUMN run_started_at BIGINT;
ALTER TABLE studies ADD COLUMN run_ended_at BIGINT;
ALTER TABLE studies ADD COLUMN run_reason TEXT;
ALTER TABLE studies ADD COLUMN run_after_round BIGINT;

-- When a participant last made an authenticated request (written at most once per interval per participant).
ALTER TABLE participants ADD COLUMN last_seen_at BIGINT;
