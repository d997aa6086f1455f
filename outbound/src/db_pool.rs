//! A small pool of [`Db`] connections for the HTTP API, where requests run
//! concurrently (the relay itself has one connection, owned by its dispatcher).
//!
//! Owns: handing out a connection for the length of one request and taking it
//! back. A connection whose last call failed mid-transaction is rolled back by
//! [`Db`] itself; MySQL connections reconnect on next use.
//! Must not: know any table.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use mailstore::{OpenError, StoreUrl};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::db::{Db, DbError};

pub struct DbPool {
    idle: Mutex<Vec<Db>>,
    permits: Semaphore,
}

/// A connection lent by [`DbPool::get`]; back to the pool when dropped.
pub struct PooledDb<'a> {
    db: Option<Db>,
    pool: &'a DbPool,
    _permit: SemaphorePermit<'a>,
}

impl DbPool {
    /// Opens `size` connections to `url` (MySQL: migrating first with `migrate`).
    pub async fn open(url: &StoreUrl, migrate: bool, size: usize) -> Result<Self, OpenError> {
        let conns = Db::open_many(url, migrate, size).await?;
        Ok(Self {
            permits: Semaphore::new(conns.len()),
            idle: Mutex::new(conns),
        })
    }

    /// Waits for a free connection.
    pub async fn get(&self) -> Result<PooledDb<'_>, DbError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| DbError::Timeout(std::time::Duration::ZERO))?;
        let db = self
            .idle
            .lock()
            .map_err(|_| DbError::Timeout(std::time::Duration::ZERO))?
            .pop();
        match db {
            Some(mut db) => {
                // A request cancelled half-way (client gone) may have left a
                // transaction open on this connection: never lend it that way.
                db.rollback().await;
                Ok(PooledDb {
                    db: Some(db),
                    pool: self,
                    _permit: permit,
                })
            }
            // A permit always has its connection; reaching here is a bug, reported
            // as a failed call rather than a panic.
            None => Err(DbError::Timeout(std::time::Duration::ZERO)),
        }
    }
}

impl Deref for PooledDb<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        // Always Some until drop.
        self.db.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for PooledDb<'_> {
    fn deref_mut(&mut self) -> &mut Db {
        self.db.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for PooledDb<'_> {
    fn drop(&mut self) {
        if let (Some(db), Ok(mut idle)) = (self.db.take(), self.pool.idle.lock()) {
            idle.push(db);
        }
    }
}
