-- Outbound relay tables, schema version 2 (MySQL 8 / MariaDB 10.6+: the claim uses
-- SELECT ... FOR UPDATE SKIP LOCKED). Times are TIMESTAMP(3): stored in UTC whatever
-- the session time zone, so applications may insert with their own. See
-- schema/README.md ("Outbound").

-- outbound_queue: one row per recipient to deliver. Applications INSERT here (or run
-- `outbound enqueue`); the relay owns every column after that.
CREATE TABLE IF NOT EXISTS outbound_queue (
  id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  created_at      TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  sender          VARCHAR(320)    NOT NULL,            -- envelope sender; '' = null sender <>
  recipient       VARCHAR(320)    NOT NULL,            -- envelope recipient
  body            LONGBLOB        NULL,                -- whole RFC 5322 message, or NULL with template_id
  template_id     BIGINT UNSIGNED NULL,
  params          TEXT            NULL,                -- JSON object for the template's [Tags]
  priority        INT             NOT NULL DEFAULT 0,  -- higher is sent first
  tag             VARCHAR(255)    NULL,                -- campaign / category
  state           VARCHAR(16)     NOT NULL DEFAULT 'queued',
                  -- queued | sending | deferred | delivered | failed | suppressed
  attempts        INT UNSIGNED    NOT NULL DEFAULT 0,
  next_attempt_at TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  lease_node      VARCHAR(64)     NULL,
  lease_until     TIMESTAMP(3)    NULL,
  last_code       SMALLINT        NULL,
  last_status     VARCHAR(16)     NULL,
  last_text       TEXT            NULL,
  last_mx         VARCHAR(320)    NULL,
  updated_at      TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  finished_at     TIMESTAMP(3)    NULL,
  delay_notified  TINYINT         NOT NULL DEFAULT 0,  -- 1 once a "delayed" DSN went out
  KEY outbound_queue_due (state, next_attempt_at),
  KEY outbound_queue_lease (state, lease_until),
  KEY outbound_queue_recipient (recipient)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- outbound_templates: bodies filled per recipient from outbound_queue.params.
CREATE TABLE IF NOT EXISTS outbound_templates (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name          VARCHAR(255)    NOT NULL,
  from_header   VARCHAR(998)    NOT NULL,
  subject       VARCHAR(998)    NOT NULL,
  text_body     MEDIUMTEXT      NULL,
  html_body     MEDIUMTEXT      NULL,
  text_encoding VARCHAR(32)     NULL,   -- NULL = automatic, or 7bit | quoted-printable | base64
  html_encoding VARCHAR(32)     NULL,
  created_at    TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  UNIQUE KEY outbound_templates_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- outbound_log: every delivery attempt of every recipient, appended, never updated.
CREATE TABLE IF NOT EXISTS outbound_log (
  id        BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  at        TIMESTAMP(3)    NOT NULL,
  queue_id  BIGINT UNSIGNED NOT NULL,
  node_id   VARCHAR(64)     NOT NULL,
  recipient VARCHAR(320)    NOT NULL,
  mx        VARCHAR(320)    NULL,
  code      SMALLINT        NULL,
  status    VARCHAR(16)     NULL,
  text      TEXT            NOT NULL,
  outcome   VARCHAR(16)     NOT NULL,   -- delivered | deferred | failed | suppressed
  KEY outbound_log_queue (queue_id),
  KEY outbound_log_at (at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- outbound_nodes: one row per relay node, its heartbeat refreshed while it runs.
CREATE TABLE IF NOT EXISTS outbound_nodes (
  node_id      VARCHAR(64)  NOT NULL PRIMARY KEY,
  hostname     VARCHAR(255) NOT NULL,
  pid          INT UNSIGNED NOT NULL,
  threads      INT UNSIGNED NOT NULL,
  heartbeat_secs INT UNSIGNED NOT NULL,  -- the node counts as dead after 3 missed heartbeats
  started_at   TIMESTAMP(3) NOT NULL,
  heartbeat_at TIMESTAMP(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- suppression: addresses the relay never sends to (lowercased).
CREATE TABLE IF NOT EXISTS suppression (
  address    VARCHAR(320) NOT NULL PRIMARY KEY,
  reason     TEXT         NOT NULL,
  source     VARCHAR(16)  NOT NULL,   -- bounce | unsubscribe | manual
  created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- outbound_bounces: every verified bounce that came back (through smtpd, to a VERP
-- address), classified.
CREATE TABLE IF NOT EXISTS outbound_bounces (
  id        BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  at        TIMESTAMP(3)    NOT NULL,
  queue_id  BIGINT UNSIGNED NOT NULL,
  address   VARCHAR(320)    NOT NULL,
  class     VARCHAR(16)     NOT NULL,   -- hard | soft | policy
  status    VARCHAR(16)     NULL,
  text      TEXT            NOT NULL,
  mail_id   BIGINT UNSIGNED NOT NULL,   -- new_mail.mail_id of the bounce message
  KEY outbound_bounces_address (address, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- outbound_intake: how far the relay has read new_mail for bounces and unsubscribes.
CREATE TABLE IF NOT EXISTS outbound_intake (
  name         VARCHAR(64)     NOT NULL PRIMARY KEY,
  last_mail_id BIGINT UNSIGNED NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
