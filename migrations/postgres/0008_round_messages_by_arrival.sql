-- The round driver and the task polls list a stage's senders in arrival order. Without this index SQLite reads
-- `received_at` from each row, which is stored after the body: for masked inputs of a large model that walks
-- megabytes of overflow pages per row and per query (36 s of coordinator CPU for one round of 100 × 4 MB).
-- With it the list is answered from the index alone.
CREATE INDEX round_messages_by_arrival ON round_messages (round_id, stage, received_at, participant_id);
