-- Tracking and the web console, schema version 5 (embedded SQLite). See
-- schema/README.md ("Tracking and the console").

-- Console logins: an account with a password may sign in at / of `outbound web`.
-- argon2id PHC string; NULL: no console login (API tokens only).
ALTER TABLE accounts ADD COLUMN password_hash TEXT;

-- console_sessions: one per signed-in browser. Only the SHA-256 of the cookie
-- value is stored; the CSRF token is per session.
CREATE TABLE IF NOT EXISTS console_sessions (
  id_sha256  TEXT    PRIMARY KEY,
  account_id INTEGER NOT NULL REFERENCES accounts(id),
  csrf_token TEXT    NOT NULL,
  created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  expires_at TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_expires ON console_sessions (expires_at);

-- tracking_domains: host names an account owns for its links (`/l/`, `/o/`, `/u/`
-- of `outbound web`), lowercased.
CREATE TABLE IF NOT EXISTS tracking_domains (
  domain     TEXT    PRIMARY KEY,
  account_id INTEGER NOT NULL REFERENCES accounts(id),
  created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
CREATE INDEX IF NOT EXISTS tracking_domains_account ON tracking_domains (account_id);

-- A campaign's tracking domains (JSON array of host names of its account, one
-- chosen per recipient) and whether it has an open pixel (off by default).
ALTER TABLE campaigns ADD COLUMN tracking_domains TEXT NOT NULL DEFAULT '[]';
ALTER TABLE campaigns ADD COLUMN track_opens INTEGER NOT NULL DEFAULT 0;

-- campaign_links: each distinct http(s) link of a campaign's message, numbered.
CREATE TABLE IF NOT EXISTS campaign_links (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
  url         TEXT    NOT NULL,
  url_sha256  TEXT    NOT NULL,               -- hex; the unique key, as in MySQL
  UNIQUE (campaign_id, url_sha256)
);

-- clicks: every click on a masked link that verified.
CREATE TABLE IF NOT EXISTS clicks (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  at            TEXT    NOT NULL,
  campaign_id   INTEGER NOT NULL,
  link_id       INTEGER NOT NULL,
  subscriber_id INTEGER NOT NULL,
  ip            TEXT,
  user_agent    TEXT
);
CREATE INDEX IF NOT EXISTS clicks_campaign_link ON clicks (campaign_id, link_id, subscriber_id);
CREATE INDEX IF NOT EXISTS clicks_campaign_at ON clicks (campaign_id, at);

-- opens: every fetch of an open pixel that verified (campaigns with track_opens).
CREATE TABLE IF NOT EXISTS opens (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  at            TEXT    NOT NULL,
  campaign_id   INTEGER NOT NULL,
  subscriber_id INTEGER NOT NULL,
  ip            TEXT,
  user_agent    TEXT
);
CREATE INDEX IF NOT EXISTS opens_campaign ON opens (campaign_id, subscriber_id);
