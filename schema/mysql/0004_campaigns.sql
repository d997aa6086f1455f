-- Accounts, lists, subscribers, imports and campaigns, schema version 4 (MySQL 8 /
-- MariaDB 10.6+). See schema/README.md ("Campaigns").
--
-- Every row below belongs to one account (directly or through its list or
-- campaign); the HTTP API and the CLI only ever read an account's own rows.

CREATE TABLE IF NOT EXISTS accounts (
  id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name       VARCHAR(255)    NOT NULL,
  is_admin   TINYINT         NOT NULL DEFAULT 0,
  created_at TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  UNIQUE KEY accounts_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Only the SHA-256 (hex) of a bearer token is stored.
CREATE TABLE IF NOT EXISTS api_tokens (
  id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  account_id   BIGINT UNSIGNED NOT NULL,
  token_sha256 CHAR(64)        NOT NULL,
  created_at   TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  last_used_at TIMESTAMP(3)    NULL,
  UNIQUE KEY api_tokens_sha256 (token_sha256),
  KEY api_tokens_account (account_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS lists (
  id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  account_id BIGINT UNSIGNED NOT NULL,
  name       VARCHAR(255)    NOT NULL,
  opt_in     VARCHAR(8)      NOT NULL DEFAULT 'single',  -- single | double
  created_at TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  UNIQUE KEY lists_account_name (account_id, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- email_key = lower(email): unique within the account.
CREATE TABLE IF NOT EXISTS subscribers (
  id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  account_id BIGINT UNSIGNED NOT NULL,
  email      VARCHAR(320)    NOT NULL,
  email_key  VARCHAR(320)    NOT NULL,
  name       VARCHAR(255)    NOT NULL DEFAULT '',
  attributes TEXT            NOT NULL,                    -- JSON object ('{}' when none)
  status     VARCHAR(12)     NOT NULL DEFAULT 'enabled',  -- enabled | blocklisted
  created_at TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  updated_at TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  UNIQUE KEY subscribers_account_email (account_id, email_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS list_members (
  list_id         BIGINT UNSIGNED NOT NULL,
  subscriber_id   BIGINT UNSIGNED NOT NULL,
  status          VARCHAR(12)     NOT NULL,  -- unconfirmed | confirmed | unsubscribed
  created_at      TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  updated_at      TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  unsubscribed_by BIGINT UNSIGNED NULL,
  PRIMARY KEY (list_id, subscriber_id),
  KEY list_members_subscriber (subscriber_id),
  KEY list_members_unsubscribed_by (unsubscribed_by)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS imports (
  id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  account_id  BIGINT UNSIGNED NOT NULL,
  list_id     BIGINT UNSIGNED NOT NULL,
  state       VARCHAR(12)     NOT NULL DEFAULT 'queued',  -- queued | running | finished | failed
  rows_read   BIGINT          NOT NULL DEFAULT 0,
  added       BIGINT          NOT NULL DEFAULT 0,
  updated     BIGINT          NOT NULL DEFAULT 0,
  rejected    BIGINT          NOT NULL DEFAULT 0,
  errors      MEDIUMTEXT      NOT NULL,                   -- JSON array ('[]' when none)
  failure     TEXT            NULL,
  created_at  TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  updated_at  TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  finished_at TIMESTAMP(3)    NULL,
  KEY imports_account (account_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS campaigns (
  id                  BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  account_id          BIGINT UNSIGNED NOT NULL,
  name                VARCHAR(255)    NOT NULL,
  template_id         BIGINT UNSIGNED NOT NULL,
  sender              VARCHAR(320)    NOT NULL,
  messages_per_second DOUBLE          NULL,
  send_at             TIMESTAMP(3)    NULL,
  state               VARCHAR(12)     NOT NULL DEFAULT 'draft',
  created_at          TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  updated_at          TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  started_at          TIMESTAMP(3)    NULL,
  finished_at         TIMESTAMP(3)    NULL,
  recipients          BIGINT          NOT NULL DEFAULT 0,
  expand_cursor       BIGINT UNSIGNED NOT NULL DEFAULT 0,
  expand_done         TINYINT         NOT NULL DEFAULT 0,
  expand_node         VARCHAR(64)     NULL,
  expand_instance     VARCHAR(32)     NULL,
  expand_until        TIMESTAMP(3)    NULL,
  next_send_at        TIMESTAMP(3)    NULL,
  KEY campaigns_account (account_id),
  KEY campaigns_state (state)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS campaign_lists (
  campaign_id BIGINT UNSIGNED NOT NULL,
  list_id     BIGINT UNSIGNED NOT NULL,
  kind        VARCHAR(8)      NOT NULL,  -- include | exclude
  PRIMARY KEY (campaign_id, list_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Campaign rows of the queue, once per subscriber and campaign; 'paused' is the
-- state of a paused campaign's rows not yet sent.
ALTER TABLE outbound_queue
  ADD COLUMN campaign_id BIGINT UNSIGNED NULL,
  ADD COLUMN subscriber_id BIGINT UNSIGNED NULL,
  ADD UNIQUE KEY outbound_queue_campaign_subscriber (campaign_id, subscriber_id),
  ADD KEY outbound_queue_campaign_state (campaign_id, state);
ALTER TABLE outbound_log
  ADD COLUMN campaign_id BIGINT UNSIGNED NULL,
  ADD KEY outbound_log_campaign (campaign_id, at);
-- A campaign's bounce count joins bounces to queue rows.
ALTER TABLE outbound_bounces ADD KEY outbound_bounces_queue (queue_id);
