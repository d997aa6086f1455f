//! STUB (uncommitted) — replaced by the protocol branch.
#![allow(dead_code, unused_variables, clippy::all)]
use crate::handoff::{Envelope, QueueId, StoreFailed};
use std::sync::Arc;
pub struct SessionConfig {
    pub hostname: String,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub max_data_line_bytes: usize,
    pub domains: DomainPolicy,
}
#[derive(Debug, Clone)]
pub enum DomainPolicy {
    Any,
    List(Vec<String>),
}
#[derive(Debug)]
pub struct DomainPatternError;
impl std::fmt::Display for DomainPatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad")
    }
}
impl DomainPolicy {
    pub fn parse(e: &[String]) -> Result<DomainPolicy, DomainPatternError> {
        Ok(DomainPolicy::Any)
    }
    pub fn accepts(&self, d: &str) -> bool {
        true
    }
}
pub struct Session;
pub struct Fed {
    pub consumed: usize,
    pub event: Option<Event>,
}
pub enum Event {
    Message(Envelope),
    Close,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Command,
    Data,
    Storing,
    Closed,
}
impl Session {
    pub fn new(config: Arc<SessionConfig>, peer: std::net::IpAddr) -> Session {
        Session
    }
    pub fn greet(&mut self, out: &mut Vec<u8>) {}
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Fed {
        Fed {
            consumed: 0,
            event: None,
        }
    }
    pub fn on_stored(&mut self, result: Result<QueueId, StoreFailed>, out: &mut Vec<u8>) {}
    pub fn on_timeout(&mut self, out: &mut Vec<u8>) {}
    pub fn on_shutdown(&mut self, out: &mut Vec<u8>) {}
    pub fn phase(&self) -> Phase {
        Phase::Command
    }
    pub fn wants_read(&self) -> bool {
        true
    }
    pub fn in_transaction(&self) -> bool {
        false
    }
    pub fn set_tls(&mut self, on: bool) {}
    pub fn summary(&self) -> impl std::fmt::Display + '_ {
        ""
    }
}
pub fn write_too_busy(hostname: &str, out: &mut Vec<u8>) {}
