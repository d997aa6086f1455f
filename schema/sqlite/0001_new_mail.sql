-- smtpd embedded store, schema version 1.
--
-- new_mail: one row per accepted recipient of every committed message. Column names
-- follow Guerrilla SMTPd's `new_mail` so existing consumers keep working; see
-- schema/README.md for what each column holds and the queries consumers run.
CREATE TABLE IF NOT EXISTS new_mail (
  mail_id      INTEGER PRIMARY KEY AUTOINCREMENT,
  date         TEXT    NOT NULL,            -- UTC 'YYYY-MM-DD HH:MM:SS', end of DATA
  "from"       TEXT    NOT NULL,            -- envelope sender (MAIL FROM), '' for <>
  "to"         TEXT    NOT NULL,            -- address in the To: header, else the recipient
  subject      TEXT    NOT NULL,            -- Subject:, RFC 2047 decoded, max 255 chars
  body         TEXT    NOT NULL,            -- storage marker: '' = raw message in `mail`
  charset      TEXT    NOT NULL,            -- charset parameter of the top Content-Type
  mail         BLOB    NOT NULL,            -- Received: line + message exactly as received
  spam_score   REAL    NOT NULL DEFAULT 0,
  hash         TEXT    NOT NULL,            -- queue id (32 hex), as in "250 ... queued as"
  content_type TEXT    NOT NULL,            -- top-level Content-Type value, max 255
  recipient    TEXT    NOT NULL,            -- the envelope recipient (RCPT TO) of this row
  has_attach   INTEGER NOT NULL DEFAULT 0,  -- number of attachments
  ip_addr      TEXT    NOT NULL,            -- client IP address, textual
  return_path  TEXT    NOT NULL,            -- envelope sender again (Guerrilla compatibility)
  is_tls       INTEGER NOT NULL DEFAULT 0,  -- 1 when received over TLS
  message_id   TEXT    NOT NULL,            -- Message-ID: header, else <hash>.<local>@<hostname>
  reply_to     TEXT    NOT NULL,            -- address in Reply-To:, else ''
  sender       TEXT    NOT NULL,            -- address in Sender:, else ''
  helo         TEXT    NOT NULL,            -- EHLO/HELO argument
  size         INTEGER NOT NULL             -- octets of the message as received (no Received:)
);

-- A message is stored once per recipient; a retried batch cannot store it twice.
CREATE UNIQUE INDEX IF NOT EXISTS new_mail_hash_recipient ON new_mail (hash, recipient);
-- "Newest mail for an address": WHERE recipient = ? ORDER BY date DESC.
CREATE INDEX IF NOT EXISTS new_mail_recipient_date ON new_mail (recipient, date);
-- Retention: DELETE ... WHERE date < ?.
CREATE INDEX IF NOT EXISTS new_mail_date ON new_mail (date);
