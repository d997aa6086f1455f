-- Scale-out, schema version 10 (SQLite). See schema/README.md
-- ("Scaling out (schema version 10)").

-- Nothing to add: outbound_queue_claim (state, priority DESC, id), the index the
-- MySQL migration 0010 creates, is in SQLite's 0004. The version is recorded so both
-- stores carry the same version list.
SELECT 1;
