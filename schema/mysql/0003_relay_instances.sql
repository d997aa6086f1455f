-- Relay process instances, schema version 3 (MySQL 8 / MariaDB 10.6+). See
-- schema/README.md ("Outbound").
--
-- A lease belongs to one process of a node (its random instance id), not to the
-- node id alone: two processes that share a node id (the default, the host name)
-- or a process restarted after a crash no longer renew, release or record each
-- other's rows. A clean stop is recorded at once. Columns are added last, so both
-- servers add them in place (ALGORITHM=INSTANT) without copying the queue table.

-- lease_instance: the process (outbound_nodes.instance_id) holding the row while
-- state = 'sending'; NULL for leases taken before version 3.
ALTER TABLE outbound_queue ADD COLUMN lease_instance VARCHAR(32) NULL;
-- instance_id: the process that owns the node row now ('' for rows written before
-- version 3); stopped_at: set by a clean stop, NULL while it runs or after a crash.
ALTER TABLE outbound_nodes
  ADD COLUMN instance_id VARCHAR(32) NOT NULL DEFAULT '',
  ADD COLUMN stopped_at TIMESTAMP(3) NULL;
