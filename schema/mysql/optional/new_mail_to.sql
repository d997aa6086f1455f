-- Optional index (not a migration; apply by hand when consumers look mail up by
-- the To: header): mysql DB < schema/mysql/optional/new_mail_to.sql
--
-- Guerrilla SMTPd's schema indexed `to`; smtpd's default schema indexes the
-- envelope `recipient` instead, so WHERE `to` = ? scans the table. InnoDB builds
-- the index online (ALGORITHM=INPLACE, LOCK=NONE: ingestion goes on while it
-- builds). Cost: schema/README.md, "Optional index on `to`". Remove with
-- ALTER TABLE new_mail DROP INDEX new_mail_to.
ALTER TABLE new_mail ADD INDEX new_mail_to (`to`, date), ALGORITHM=INPLACE, LOCK=NONE;
