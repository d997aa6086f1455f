-- Scale-out, schema version 10 (MySQL/MariaDB). See schema/README.md
-- ("Scaling out (schema version 10)").

-- outbound_queue_claim: the relay's claim of queued rows reads this index in claim
-- order (priority DESC, id) and stops after the batch, locking only the rows it
-- takes. Without it the claim sorted every due row (a filesort) and locked what it
-- scanned, so one busy node made the other wait. SQLite has had it since 0004.
CREATE INDEX outbound_queue_claim ON outbound_queue (state, priority DESC, id);
