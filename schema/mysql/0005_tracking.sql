-- Tracking and the web console, schema version 5 (MySQL 8 / MariaDB 10.6+). See
-- schema/README.md ("Tracking and the console").

-- argon2id PHC string; NULL: no console login.
ALTER TABLE accounts ADD COLUMN password_hash VARCHAR(255) NULL;

CREATE TABLE IF NOT EXISTS console_sessions (
  id_sha256  CHAR(64)        NOT NULL PRIMARY KEY,
  account_id BIGINT UNSIGNED NOT NULL,
  csrf_token CHAR(64)        NOT NULL,
  created_at TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  expires_at TIMESTAMP(3)    NOT NULL,
  KEY console_sessions_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS tracking_domains (
  domain     VARCHAR(253)    NOT NULL PRIMARY KEY,
  account_id BIGINT UNSIGNED NOT NULL,
  created_at TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  KEY tracking_domains_account (account_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

ALTER TABLE campaigns
  ADD COLUMN tracking_domains TEXT NULL,   -- JSON array; NULL or '[]': none
  ADD COLUMN track_opens TINYINT NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS campaign_links (
  id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  campaign_id BIGINT UNSIGNED NOT NULL,
  url         VARCHAR(2048)   NOT NULL,
  url_sha256  CHAR(64)        NOT NULL,  -- unique key: a long URL does not fit an index
  UNIQUE KEY campaign_links_url (campaign_id, url_sha256)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS clicks (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  at            TIMESTAMP(3)    NOT NULL,
  campaign_id   BIGINT UNSIGNED NOT NULL,
  link_id       BIGINT UNSIGNED NOT NULL,
  subscriber_id BIGINT UNSIGNED NOT NULL,
  ip            VARCHAR(45)     NULL,
  user_agent    VARCHAR(512)    NULL,
  KEY clicks_campaign_link (campaign_id, link_id, subscriber_id),
  KEY clicks_campaign_at (campaign_id, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS opens (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  at            TIMESTAMP(3)    NOT NULL,
  campaign_id   BIGINT UNSIGNED NOT NULL,
  subscriber_id BIGINT UNSIGNED NOT NULL,
  ip            VARCHAR(45)     NULL,
  user_agent    VARCHAR(512)    NULL,
  KEY opens_campaign (campaign_id, subscriber_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
