//! Retained-message store for the broker's own retained topics (`vehicles/{id}/service`,
//! `fleet/sli`), so a subscriber that connects later gets the current state at once.
//!
//! rmqtt 0.24's `DefaultRetainStorage`, as registered by default, stores nothing and logs
//! "use the rmqtt-retainer plugin"; its in-memory trie (`set_with_timeout`/`get_message`)
//! does work, so this wraps it. Only messages the broker itself published
//! (`FromType::System`) are kept: clients have no business retaining anything.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::retain::{DefaultRetainStorage, RetainStorage};
use rmqtt::types::{Retain, TopicFilter, TopicName};

use super::stats::Counters;

pub(crate) struct BrokerRetainStore {
    inner: DefaultRetainStorage,
    counters: Arc<Counters>,
}

impl BrokerRetainStore {
    pub fn new(counters: Arc<Counters>) -> Self {
        Self {
            inner: DefaultRetainStorage::new(),
            counters,
        }
    }
}

#[async_trait]
impl RetainStorage for BrokerRetainStore {
    fn enable(&self) -> bool {
        true
    }

    async fn set(
        &self,
        topic: &TopicName,
        retain: Retain,
        expiry_interval: Option<Duration>,
    ) -> rmqtt::Result<()> {
        if !retain.from.is_system() {
            self.counters
                .retained_ignored
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client_id = %retain.from.client_id, %topic, "retain flag ignored: only the broker's own messages are retained");
            return Ok(());
        }
        // An empty payload clears the topic's retained message (MQTT semantics).
        self.inner
            .set_with_timeout(topic, retain, expiry_interval)
            .await?;
        let count = RetainStorage::count(&self.inner).await;
        self.counters
            .retained_messages
            .store(u64::try_from(count).unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    async fn get(&self, topic_filter: &TopicFilter) -> rmqtt::Result<Vec<(TopicName, Retain)>> {
        self.inner.get_message(topic_filter).await
    }

    async fn count(&self) -> isize {
        RetainStorage::count(&self.inner).await
    }

    async fn max(&self) -> isize {
        RetainStorage::max(&self.inner).await
    }
}
