-- Outbound relay tables, schema version 2 (embedded SQLite).
--
-- Times are UTC text 'YYYY-MM-DD HH:MM:SS.SSS' (what strftime('%Y-%m-%d %H:%M:%f')
-- gives), so they compare correctly as strings. See schema/README.md ("Outbound").

-- outbound_queue: one row per recipient to deliver. Applications INSERT here (or run
-- `outbound enqueue`); the relay owns every column after that.
CREATE TABLE IF NOT EXISTS outbound_queue (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  sender          TEXT    NOT NULL,           -- envelope sender (MAIL FROM); '' = null sender <>
  recipient       TEXT    NOT NULL,           -- envelope recipient (RCPT TO)
  body            BLOB,                       -- the whole RFC 5322 message, or NULL with template_id
  template_id     INTEGER REFERENCES outbound_templates(id),
  params          TEXT,                       -- JSON object {"UserName": "Ann", ...} for the template's [Tags]
  priority        INTEGER NOT NULL DEFAULT 0, -- higher is sent first
  tag             TEXT,                       -- campaign / category, free text
  state           TEXT    NOT NULL DEFAULT 'queued',
                  -- queued | sending | deferred | delivered | failed | suppressed
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  lease_node      TEXT,                       -- node id holding the row while state = 'sending'
  lease_until     TEXT,                       -- the lease ends here unless renewed
  last_code       INTEGER,                    -- last SMTP reply code (NULL: no reply, e.g. DNS or connect failure)
  last_status     TEXT,                       -- last enhanced status code, e.g. '4.2.1'
  last_text       TEXT,                       -- last reply text or local error
  last_mx         TEXT,                       -- last host tried, 'name[ip]:port'
  updated_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  finished_at     TEXT,                       -- set when delivered / failed / suppressed
  delay_notified  INTEGER NOT NULL DEFAULT 0, -- 1 once a "delayed" DSN went to the sender
  CHECK (body IS NOT NULL OR template_id IS NOT NULL)
);
-- The claim: ready rows by state and due time; expired leases by state and lease end.
CREATE INDEX IF NOT EXISTS outbound_queue_due ON outbound_queue (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbound_queue_lease ON outbound_queue (state, lease_until);
CREATE INDEX IF NOT EXISTS outbound_queue_recipient ON outbound_queue (recipient);

-- outbound_templates: bodies filled per recipient from outbound_queue.params.
CREATE TABLE IF NOT EXISTS outbound_templates (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  name          TEXT    NOT NULL UNIQUE,
  from_header   TEXT    NOT NULL,             -- From: value, e.g. 'News <news@example.com>'; may hold [Tags]
  subject       TEXT    NOT NULL,             -- may hold [Tags]
  text_body     TEXT,                         -- text/plain part (NULL: none)
  html_body     TEXT,                         -- text/html part (NULL: none); both → multipart/alternative
  text_encoding TEXT,                         -- NULL = automatic, or 7bit | quoted-printable | base64
  html_encoding TEXT,
  created_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  CHECK (text_body IS NOT NULL OR html_body IS NOT NULL)
);

-- outbound_log: every delivery attempt of every recipient, appended, never updated.
CREATE TABLE IF NOT EXISTS outbound_log (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  at        TEXT    NOT NULL,                 -- when the attempt ended
  queue_id  INTEGER NOT NULL,                 -- outbound_queue.id
  node_id   TEXT    NOT NULL,
  recipient TEXT    NOT NULL,
  mx        TEXT,                             -- 'name[ip]:port' of the host that answered (or was tried last)
  code      INTEGER,                          -- SMTP reply code, NULL if none
  status    TEXT,                             -- enhanced status code, e.g. '5.1.1'
  text      TEXT    NOT NULL,                 -- reply text or local error
  outcome   TEXT    NOT NULL                  -- delivered | deferred | failed | suppressed
);
CREATE INDEX IF NOT EXISTS outbound_log_queue ON outbound_log (queue_id);
CREATE INDEX IF NOT EXISTS outbound_log_at ON outbound_log (at);

-- outbound_nodes: one row per relay node, its heartbeat refreshed while it runs.
CREATE TABLE IF NOT EXISTS outbound_nodes (
  node_id      TEXT PRIMARY KEY,
  hostname     TEXT    NOT NULL,
  pid          INTEGER NOT NULL,
  threads      INTEGER NOT NULL,
  heartbeat_secs INTEGER NOT NULL,           -- the node counts as dead after 3 missed heartbeats
  started_at   TEXT    NOT NULL,
  heartbeat_at TEXT    NOT NULL
);

-- suppression: addresses the relay never sends to (lowercased).
CREATE TABLE IF NOT EXISTS suppression (
  address    TEXT PRIMARY KEY,
  reason     TEXT NOT NULL,
  source     TEXT NOT NULL,                   -- bounce | unsubscribe | manual
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);

-- outbound_bounces: every verified bounce that came back (through smtpd, to a VERP
-- address), classified.
CREATE TABLE IF NOT EXISTS outbound_bounces (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  at        TEXT    NOT NULL,
  queue_id  INTEGER NOT NULL,                 -- the outbound_queue row it is about
  address   TEXT    NOT NULL,                 -- that row's recipient, lowercased
  class     TEXT    NOT NULL,                 -- hard | soft | policy
  status    TEXT,                             -- enhanced status code found, e.g. '5.1.1'
  text      TEXT    NOT NULL,                 -- diagnostic text
  mail_id   INTEGER NOT NULL                  -- new_mail.mail_id of the bounce message
);
CREATE INDEX IF NOT EXISTS outbound_bounces_address ON outbound_bounces (address, at);

-- outbound_intake: how far the relay has read new_mail for bounces and unsubscribes.
CREATE TABLE IF NOT EXISTS outbound_intake (
  name         TEXT PRIMARY KEY,
  last_mail_id INTEGER NOT NULL
);
