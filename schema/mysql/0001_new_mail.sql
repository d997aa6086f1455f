-- smtpd MySQL/MariaDB store, schema version 1: the same model as
-- schema/sqlite/0001_new_mail.sql (see schema/README.md for every column).
-- Applied by `smtpd --migrate`, or by hand: mysql DB < schema/mysql/0001_new_mail.sql
-- followed by: INSERT INTO schema_migrations (version, name) VALUES (1, '0001_new_mail');
CREATE TABLE IF NOT EXISTS new_mail (
  mail_id      BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  date         DATETIME        NOT NULL,            -- UTC, end of DATA
  `from`       VARCHAR(256)    NOT NULL,            -- envelope sender, '' for <>
  `to`         VARCHAR(256)    NOT NULL,            -- To: address, else the recipient
  subject      VARCHAR(255)    NOT NULL,
  body         VARCHAR(16)     NOT NULL DEFAULT '', -- '' = message in `mail`; 'redis' = in Redis only
  charset      VARCHAR(255)    NOT NULL,
  mail         LONGBLOB        NOT NULL,            -- Received: + message as received ('' in Guerrilla mode)
  spam_score   FLOAT           NOT NULL DEFAULT 0,
  hash         CHAR(32)        NOT NULL,            -- queue id from "250 ... queued as"
  content_type VARCHAR(255)    NOT NULL,
  recipient    VARCHAR(256)    NOT NULL,            -- envelope recipient of this row
  has_attach   INT             NOT NULL DEFAULT 0,
  ip_addr      VARCHAR(45)     NOT NULL,
  return_path  VARCHAR(256)    NOT NULL,
  is_tls       TINYINT(1)      NOT NULL DEFAULT 0,
  message_id   VARCHAR(255)    NOT NULL,
  reply_to     VARCHAR(256)    NOT NULL,
  sender       VARCHAR(256)    NOT NULL,
  helo         VARCHAR(255)    NOT NULL,
  size         INT UNSIGNED    NOT NULL,
  PRIMARY KEY (mail_id),
  UNIQUE KEY new_mail_hash_recipient (hash, recipient),
  KEY new_mail_recipient_date (recipient, date),
  KEY new_mail_date (date)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
