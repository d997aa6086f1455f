-- Complaints, schema version 7 (embedded SQLite). See schema/README.md
-- ("Complaints (schema version 7)").

-- outbound_complaints: every verified feedback-loop report (ARF, RFC 5965) that came
-- back through smtpd to bounces.complaint_address, about one queue row.
CREATE TABLE IF NOT EXISTS outbound_complaints (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  at            TEXT    NOT NULL,
  queue_id      INTEGER NOT NULL,             -- the outbound_queue row it is about
  address       TEXT    NOT NULL,             -- that row's recipient, lowercased
  feedback_type TEXT    NOT NULL,             -- Feedback-Type: abuse | fraud | other | ...
  mail_id       INTEGER NOT NULL              -- new_mail.mail_id of the report
);
CREATE INDEX IF NOT EXISTS outbound_complaints_queue ON outbound_complaints (queue_id);
