//! Placeholder until the shared store lands (branch tgredis).
use std::sync::Arc;
use std::time::Duration;

use super::{Reply, Shared};
use crate::limit::redis::StoreError;
use crate::limit::RedisStore;

#[derive(Debug)]
pub struct RedisDedup {
    _store: Arc<RedisStore>,
}

impl RedisDedup {
    pub fn new(store: Arc<RedisStore>, _space: &str) -> RedisDedup {
        RedisDedup { _store: store }
    }
    pub async fn claim(&self, _id: i64, _lease: Duration) -> Result<Shared, StoreError> {
        Err(StoreError::Unavailable)
    }
    pub async fn peek(&self, _id: i64) -> Result<Shared, StoreError> {
        Err(StoreError::Unavailable)
    }
    pub async fn done(&self, _id: i64, _r: &Reply, _ttl: Duration) -> Result<(), StoreError> {
        Err(StoreError::Unavailable)
    }
    pub async fn failed(&self, _id: i64, _ttl: Duration) -> Result<u32, StoreError> {
        Err(StoreError::Unavailable)
    }
    pub async fn release(&self, _id: i64) -> Result<(), StoreError> {
        Err(StoreError::Unavailable)
    }
}
