-- Schema version 11 (SQLite). See schema/README.md ("Schema version 11").

-- outbound_queue_campaign_state gains finished_at: an account's sample (what its
-- campaigns sent in the window, read each runner tick for every sending account)
-- was a count over every finished row of the account's campaigns; it is now a range
-- of the window on this index. A row's state and finished_at change in the same
-- UPDATE, so the wider index costs no extra index write.
DROP INDEX IF EXISTS outbound_queue_campaign_state;
CREATE INDEX IF NOT EXISTS outbound_queue_campaign_state
  ON outbound_queue (campaign_id, state, finished_at);
