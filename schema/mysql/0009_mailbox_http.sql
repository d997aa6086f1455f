-- Mailboxes over HTTP, schema version 9 (MySQL 8 / MariaDB 10.6+). See
-- schema/README.md ("Mailboxes over HTTP (schema version 9)").
--
-- seen: 1 once the message was opened through `smtpd --http`
-- (GET /api/v1/messages/{id}); 0 for every row smtpd writes. Added last with a
-- constant default, so both servers add it in place (ALGORITHM=INSTANT) without
-- copying new_mail; the committer's INSERTs do not name it.
ALTER TABLE new_mail ADD COLUMN seen TINYINT NOT NULL DEFAULT 0;
