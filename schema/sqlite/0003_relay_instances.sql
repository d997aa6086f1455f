-- Relay process instances, schema version 3 (embedded SQLite). See schema/README.md
-- ("Outbound").
--
-- A lease belongs to one process of a node (its random instance id), not to the
-- node id alone: two processes that share a node id (the default, the host name)
-- or a process restarted after a crash no longer renew, release or record each
-- other's rows. A clean stop is recorded at once.

-- The process (outbound_nodes.instance_id) holding the row while state = 'sending';
-- NULL for leases taken before version 3.
ALTER TABLE outbound_queue ADD COLUMN lease_instance TEXT;
-- The process that owns the node row now ('' for rows written before version 3).
ALTER TABLE outbound_nodes ADD COLUMN instance_id TEXT NOT NULL DEFAULT '';
-- Set by a clean stop; NULL while the process runs (or after a crash).
ALTER TABLE outbound_nodes ADD COLUMN stopped_at TEXT;
