-- Complaints, schema version 7 (MySQL/MariaDB). See schema/README.md
-- ("Complaints (schema version 7)").

-- outbound_complaints: every verified feedback-loop report (ARF, RFC 5965) that came
-- back through smtpd to bounces.complaint_address, about one queue row.
CREATE TABLE IF NOT EXISTS outbound_complaints (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  at            TIMESTAMP(3)    NOT NULL,
  queue_id      BIGINT UNSIGNED NOT NULL,   -- the outbound_queue row it is about
  address       VARCHAR(320)    NOT NULL,   -- that row's recipient, lowercased
  feedback_type VARCHAR(64)     NOT NULL,   -- Feedback-Type: abuse | fraud | other | ...
  mail_id       BIGINT UNSIGNED NOT NULL,   -- new_mail.mail_id of the report
  KEY outbound_complaints_queue (queue_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
