//! Retained messages: the broker's own (`vehicles/{id}/service`, `fleet/sli`), so a
//! subscriber that connects later gets the current state at once, and the clients' on the
//! fleet's own topics, bounded.
//!
//! rmqtt 0.24's `DefaultRetainStorage`, as registered by default, stores nothing and logs
//! "use the rmqtt-retainer plugin"; its in-memory trie (`set_with_timeout`/`get_message`)
//! does work, so this wraps two of them: the broker's messages (`FromType::System`) and the
//! clients', so clients can never crowd out a service state. A client's retain on a
//! contract topic is ignored (nobody may read uplinks).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::retain::{DefaultRetainStorage, RetainStorage};
use rmqtt::types::{Retain, TopicFilter, TopicName};

use super::stats::Counters;
use crate::contract::{Topic, Topics};

/// Retained messages of clients kept at most; further ones are ignored and counted.
pub(crate) const CLIENT_RETAINED_MAX: isize = 100_000;

pub(crate) struct BrokerRetainStore {
    broker: DefaultRetainStorage,
    clients: DefaultRetainStorage,
    topics: Topics,
    counters: Arc<Counters>,
}

impl BrokerRetainStore {
    pub fn new(counters: Arc<Counters>, topics: Topics) -> Self {
        Self {
            broker: DefaultRetainStorage::new(),
            clients: DefaultRetainStorage::new(),
            topics,
            counters,
        }
    }

    async fn total(&self) -> isize {
        RetainStorage::count(&self.broker).await + RetainStorage::count(&self.clients).await
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
        let store = if retain.from.is_system() {
            &self.broker
        } else {
            let contract = !matches!(
                self.topics.classify(topic),
                Topic::Other | Topic::Liveness { .. }
            );
            let full = !retain.publish.payload.is_empty()
                && RetainStorage::count(&self.clients).await >= CLIENT_RETAINED_MAX;
            if contract || full {
                self.counters
                    .retained_ignored
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(client_id = %retain.from.client_id, %topic, full, "retain flag ignored");
                return Ok(());
            }
            &self.clients
        };
        // An empty payload clears the topic's retained message (MQTT semantics).
        store
            .set_with_timeout(topic, retain, expiry_interval)
            .await?;
        let count = self.total().await;
        self.counters
            .retained_messages
            .store(u64::try_from(count).unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    async fn get(&self, topic_filter: &TopicFilter) -> rmqtt::Result<Vec<(TopicName, Retain)>> {
        let mut found = self.broker.get_message(topic_filter).await?;
        found.extend(self.clients.get_message(topic_filter).await?);
        Ok(found)
    }

    async fn count(&self) -> isize {
        self.total().await
    }

    async fn max(&self) -> isize {
        RetainStorage::max(&self.broker)
            .await
            .max(RetainStorage::max(&self.clients).await)
    }
}
