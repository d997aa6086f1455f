-- Responsible sending: double opt-in confirmations and their throttles, account
-- limits and auto-pause, schema version 8 (MySQL/MariaDB). See schema/README.md
-- ("Responsible sending (schema version 8)").

-- When a double opt-in member confirmed (POST /c/<token> of `outbound web`).
ALTER TABLE list_members ADD COLUMN confirmed_at TIMESTAMP(3) NULL;
-- The From address of a list's confirmation messages; NULL: `confirmations.sender`.
ALTER TABLE lists ADD COLUMN sender VARCHAR(320) NULL;

-- confirm_throttle: confirmation messages queued per fixed window, counted in the
-- database so that every `outbound web` process shares one count.
-- scope: 'address' (subject = lowercased address), 'ip' (client address),
-- 'domain' (recipient domain); window_start: Unix seconds, a multiple of the
-- scope's window length.
CREATE TABLE IF NOT EXISTS confirm_throttle (
  scope        VARCHAR(16)     NOT NULL,
  subject      VARCHAR(320)    NOT NULL,
  window_start BIGINT          NOT NULL,
  hits         INT UNSIGNED    NOT NULL DEFAULT 0,
  PRIMARY KEY (scope, subject, window_start),
  KEY confirm_throttle_window (window_start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Per-account sending limits (NULL: none), the campaign runner's bookkeeping of
-- them, and the auto-pause.
ALTER TABLE accounts
  ADD COLUMN send_rate     DOUBLE       NULL,              -- messages per second, all campaigns together
  ADD COLUMN daily_quota   BIGINT       NULL,              -- campaign messages queued per UTC day
  ADD COLUMN quota_day     CHAR(10)     NULL,              -- 'YYYY-MM-DD' that quota_used counts
  ADD COLUMN quota_used    BIGINT       NOT NULL DEFAULT 0,
  ADD COLUMN next_send_at  TIMESTAMP(3) NULL,              -- the account's rate: the next row's due time
  ADD COLUMN paused_reason VARCHAR(255) NULL,              -- set by the auto-pause; NULL: not paused
  ADD COLUMN paused_at     TIMESTAMP(3) NULL,
  ADD COLUMN resumed_at    TIMESTAMP(3) NULL;             -- an admin's resume: the auto-pause counts from here
-- Why a campaign was paused by the system (NULL: by hand, or not paused).
ALTER TABLE campaigns ADD COLUMN paused_reason VARCHAR(255) NULL;
