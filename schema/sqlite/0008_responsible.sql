-- Responsible sending: double opt-in confirmations and their throttles, account
-- limits and auto-pause, schema version 8 (embedded SQLite). See schema/README.md
-- ("Responsible sending (schema version 8)").

-- When a double opt-in member confirmed (POST /c/<token> of `outbound web`).
ALTER TABLE list_members ADD COLUMN confirmed_at TEXT;
-- The From address of a list's confirmation messages; NULL: `confirmations.sender`.
ALTER TABLE lists ADD COLUMN sender TEXT;

-- confirm_throttle: confirmation messages queued per fixed window, counted in the
-- database so that every `outbound web` process shares one count.
-- scope: 'address' (subject = lowercased address), 'ip' (client address),
-- 'domain' (recipient domain); window_start: Unix seconds, a multiple of the
-- scope's window length.
CREATE TABLE IF NOT EXISTS confirm_throttle (
  scope        TEXT    NOT NULL,
  subject      TEXT    NOT NULL,
  window_start INTEGER NOT NULL,
  hits         INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (scope, subject, window_start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS confirm_throttle_window ON confirm_throttle (window_start);

-- Per-account sending limits (NULL: none), the campaign runner's bookkeeping of
-- them, and the auto-pause.
ALTER TABLE accounts ADD COLUMN send_rate REAL;           -- messages per second, all campaigns together
ALTER TABLE accounts ADD COLUMN daily_quota INTEGER;      -- campaign messages queued per UTC day
ALTER TABLE accounts ADD COLUMN quota_day TEXT;           -- 'YYYY-MM-DD' that quota_used counts
ALTER TABLE accounts ADD COLUMN quota_used INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN next_send_at TEXT;        -- the account's rate: the next row's due time
ALTER TABLE accounts ADD COLUMN paused_reason TEXT;       -- set by the auto-pause; NULL: not paused
ALTER TABLE accounts ADD COLUMN paused_at TEXT;
ALTER TABLE accounts ADD COLUMN resumed_at TEXT;         -- an admin's resume: the auto-pause counts from here
-- Why a campaign was paused by the system (NULL: by hand, or not paused).
ALTER TABLE campaigns ADD COLUMN paused_reason TEXT;
