-- Optional index (not a migration; apply by hand when consumers look mail up by
-- the To: header): sqlite3 data/smtpd.sqlite < schema/sqlite/optional/new_mail_to.sql
--
-- Guerrilla SMTPd's schema indexed `to`; smtpd's default schema indexes the
-- envelope `recipient` instead (what a temporary-mailbox lookup needs), so a query
-- WHERE "to" = ? scans the whole table. This index makes it a lookup, at a measured
-- ingest cost (schema/README.md, "Optional index on `to`"). Safe to apply while
-- smtpd runs (it waits for the write lock) and idempotent; DROP INDEX new_mail_to
-- removes it.
CREATE INDEX IF NOT EXISTS new_mail_to ON new_mail ("to", date);
