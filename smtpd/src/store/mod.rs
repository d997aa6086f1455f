//! STUB (uncommitted) — replaced by the store branch.
#![allow(dead_code, unused_variables, clippy::all)]
use crate::handoff::{QueueId, Submission};
#[derive(Debug, Clone)]
pub enum StoreUrl {
    Sqlite(std::path::PathBuf),
}
#[derive(Debug)]
pub struct StoreUrlError;
impl std::fmt::Display for StoreUrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad")
    }
}
impl std::str::FromStr for StoreUrl {
    type Err = StoreUrlError;
    fn from_str(s: &str) -> Result<Self, StoreUrlError> {
        Ok(StoreUrl::Sqlite(s.trim_start_matches("sqlite:").into()))
    }
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synchronous {
    Full,
    Normal,
}
impl std::str::FromStr for Synchronous {
    type Err = StoreUrlError;
    fn from_str(s: &str) -> Result<Self, StoreUrlError> {
        Ok(Synchronous::Full)
    }
}
pub struct StageConfig {
    pub batch_max_messages: usize,
    pub batch_max_delay: std::time::Duration,
    pub queue_capacity: usize,
    pub hostname: String,
    pub synchronous: Synchronous,
}
#[derive(Debug)]
pub struct StoreError;
impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad")
    }
}
impl std::error::Error for StoreError {}
pub struct StorageStage(crossbeam_channel::Sender<Submission>);
impl StorageStage {
    pub fn start(url: &StoreUrl, config: StageConfig) -> Result<StorageStage, StoreError> {
        todo!()
    }
    pub fn sender(&self) -> crossbeam_channel::Sender<Submission> {
        self.0.clone()
    }
    pub fn join(self) -> Result<(), StoreError> {
        Ok(())
    }
}
pub fn new_queue_id(now: std::time::SystemTime) -> QueueId {
    QueueId([0; 16])
}
