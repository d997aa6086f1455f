-- Accounts, lists, subscribers, imports and campaigns, schema version 4 (embedded
-- SQLite). See schema/README.md ("Campaigns").
--
-- Every row below belongs to one account (directly or through its list or
-- campaign); the HTTP API and the CLI only ever read an account's own rows.
-- Times are UTC text 'YYYY-MM-DD HH:MM:SS.SSS', as in the queue.

-- accounts: one per user of the system.
CREATE TABLE IF NOT EXISTS accounts (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  name       TEXT    NOT NULL UNIQUE,
  is_admin   INTEGER NOT NULL DEFAULT 0,       -- 1: may manage other accounts
  created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);

-- api_tokens: bearer tokens of the HTTP API. Only the SHA-256 of a token is
-- stored (hex); the token itself is printed once, by `outbound account add`.
CREATE TABLE IF NOT EXISTS api_tokens (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id   INTEGER NOT NULL REFERENCES accounts(id),
  token_sha256 TEXT    NOT NULL UNIQUE,
  created_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  last_used_at TEXT
);
CREATE INDEX IF NOT EXISTS api_tokens_account ON api_tokens (account_id);

-- lists: an account's mailing lists.
CREATE TABLE IF NOT EXISTS lists (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id INTEGER NOT NULL REFERENCES accounts(id),
  name       TEXT    NOT NULL,
  opt_in     TEXT    NOT NULL DEFAULT 'single',  -- single | double
  created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  UNIQUE (account_id, name),
  CHECK (opt_in IN ('single', 'double'))
);

-- subscribers: an account's people, one row per address (unique case-insensitively
-- within the account: email_key is the lowercased address).
CREATE TABLE IF NOT EXISTS subscribers (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id INTEGER NOT NULL REFERENCES accounts(id),
  email      TEXT    NOT NULL,                   -- as given
  email_key  TEXT    NOT NULL,                   -- lower(email)
  name       TEXT    NOT NULL DEFAULT '',
  attributes TEXT    NOT NULL DEFAULT '{}',      -- JSON object
  status     TEXT    NOT NULL DEFAULT 'enabled', -- enabled | blocklisted
  created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  updated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  UNIQUE (account_id, email_key),
  CHECK (status IN ('enabled', 'blocklisted'))
);

-- list_members: who is on which list.
CREATE TABLE IF NOT EXISTS list_members (
  list_id         INTEGER NOT NULL REFERENCES lists(id),
  subscriber_id   INTEGER NOT NULL REFERENCES subscribers(id),
  status          TEXT    NOT NULL,             -- unconfirmed | confirmed | unsubscribed
  created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  updated_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  unsubscribed_by INTEGER,                      -- campaign whose unsubscribe request removed it
  PRIMARY KEY (list_id, subscriber_id),
  CHECK (status IN ('unconfirmed', 'confirmed', 'unsubscribed'))
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS list_members_subscriber ON list_members (subscriber_id);
CREATE INDEX IF NOT EXISTS list_members_unsubscribed_by ON list_members (unsubscribed_by);

-- imports: CSV (or archived CSV) uploads into a list, with their progress.
CREATE TABLE IF NOT EXISTS imports (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id  INTEGER NOT NULL REFERENCES accounts(id),
  list_id     INTEGER NOT NULL REFERENCES lists(id),
  state       TEXT    NOT NULL DEFAULT 'queued',  -- queued | running | finished | failed
  rows_read   INTEGER NOT NULL DEFAULT 0,
  added       INTEGER NOT NULL DEFAULT 0,
  updated     INTEGER NOT NULL DEFAULT 0,
  rejected    INTEGER NOT NULL DEFAULT 0,
  errors      TEXT    NOT NULL DEFAULT '[]',      -- JSON: the first 100 [{"line","email","error"}]
  failure     TEXT,                               -- why the whole import failed (state failed)
  created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  finished_at TEXT
);
CREATE INDEX IF NOT EXISTS imports_account ON imports (account_id);

-- campaigns: one mailing to the members of lists. The message (From, Subject,
-- bodies) is stored once, as an outbound_templates row; queue rows point at it.
CREATE TABLE IF NOT EXISTS campaigns (
  id                  INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id          INTEGER NOT NULL REFERENCES accounts(id),
  name                TEXT    NOT NULL,
  template_id         INTEGER NOT NULL REFERENCES outbound_templates(id),
  sender              TEXT    NOT NULL,           -- envelope sender: the From address
  messages_per_second REAL,                       -- NULL: only the per-domain limits
  send_at             TEXT,                       -- scheduled start (NULL: at start)
  state               TEXT    NOT NULL DEFAULT 'draft',
                      -- draft | scheduled | running | paused | cancelled | finished
  created_at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  updated_at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  started_at          TEXT,
  finished_at         TEXT,
  -- Expansion into outbound_queue, in subscribers.id order, by one node at a time.
  recipients          INTEGER NOT NULL DEFAULT 0, -- queue rows made so far
  expand_cursor       INTEGER NOT NULL DEFAULT 0, -- subscribers.id up to which it is done
  expand_done         INTEGER NOT NULL DEFAULT 0, -- 1: every recipient is queued
  expand_node         TEXT,                       -- the lease: node and process expanding it
  expand_instance     TEXT,
  expand_until        TEXT,
  next_send_at        TEXT,                       -- the campaign's rate: the next row's due time
  CHECK (state IN ('draft', 'scheduled', 'running', 'paused', 'cancelled', 'finished'))
);
CREATE INDEX IF NOT EXISTS campaigns_account ON campaigns (account_id);
CREATE INDEX IF NOT EXISTS campaigns_state ON campaigns (state);

-- campaign_lists: the lists a campaign goes to (include) and those whose members
-- it skips (exclude).
CREATE TABLE IF NOT EXISTS campaign_lists (
  campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
  list_id     INTEGER NOT NULL REFERENCES lists(id),
  kind        TEXT    NOT NULL,                   -- include | exclude
  PRIMARY KEY (campaign_id, list_id),
  CHECK (kind IN ('include', 'exclude'))
) WITHOUT ROWID;

-- Queue rows of a campaign: its id and the subscriber's (NULL for other mail).
-- The unique index makes each subscriber's row once per campaign, whichever node
-- expands it. 'paused' is the state of a paused campaign's rows not yet sent.
ALTER TABLE outbound_queue ADD COLUMN campaign_id INTEGER;
ALTER TABLE outbound_queue ADD COLUMN subscriber_id INTEGER;
CREATE UNIQUE INDEX IF NOT EXISTS outbound_queue_campaign_subscriber
  ON outbound_queue (campaign_id, subscriber_id);
CREATE INDEX IF NOT EXISTS outbound_queue_campaign_state ON outbound_queue (campaign_id, state);
-- The SQLite claim walks queued rows in claim order (priority DESC, id) and stops
-- after a batch, rather than sorting every due row (a campaign's backlog is due at
-- once). MySQL's claim (FOR UPDATE SKIP LOCKED) keeps outbound_queue_due.
CREATE INDEX IF NOT EXISTS outbound_queue_claim ON outbound_queue (state, priority DESC, id);
-- A campaign's bounce count joins bounces to queue rows.
CREATE INDEX IF NOT EXISTS outbound_bounces_queue ON outbound_bounces (queue_id);
-- The delivery log names the campaign too, for its timeline.
ALTER TABLE outbound_log ADD COLUMN campaign_id INTEGER;
CREATE INDEX IF NOT EXISTS outbound_log_campaign ON outbound_log (campaign_id, at);
