-- Responsible sending, schema version 6 (MySQL/MariaDB). See schema/README.md
-- ("Sending (schema version 6)").

-- The sending pool ([pools.NAME] of the relay's config) a row is sent from; NULL:
-- no binding, the host's default source address.
ALTER TABLE outbound_queue ADD COLUMN pool VARCHAR(64) NULL;
-- Past this time the row fails with 4.4.7 ("message expired") instead of another
-- attempt, and no DSN is sent. NULL: never expires (the retry schedule's limit only).
ALTER TABLE outbound_queue ADD COLUMN expires_at TIMESTAMP(3) NULL;
-- The pool a campaign's rows are queued with.
ALTER TABLE campaigns ADD COLUMN pool VARCHAR(64) NULL;
