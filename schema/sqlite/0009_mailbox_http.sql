-- Mailboxes over HTTP, schema version 9 (embedded SQLite). See schema/README.md
-- ("Mailboxes over HTTP (schema version 9)").
--
-- seen: 1 once the message was opened through `smtpd --http`
-- (GET /api/v1/messages/{id}); 0 for every row smtpd writes. A column with a
-- constant default: SQLite adds it without rewriting the table, and the INSERTs of
-- the committer do not name it.
ALTER TABLE new_mail ADD COLUMN seen INTEGER NOT NULL DEFAULT 0;
