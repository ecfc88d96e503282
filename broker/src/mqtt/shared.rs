//! MQTT 5 shared subscriptions (`$share/{group}/{filter}`): each message goes to one
//! member of the group, round robin over the members that are connected (an offline one
//! only when none is). rmqtt 0.24's built-in choice supports none.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use rmqtt::context::ServerContext;
use rmqtt::subscribe::SharedSubscription;
use rmqtt::types::{
    ClientId, Id, IsOnline, NodeId, SharedGroup, SubscriptionIdentifier, SubscriptionOptions,
    TopicName,
};

#[derive(Default)]
pub(crate) struct RoundRobin {
    next: AtomicUsize,
}

/// The member at turn `turn` among `online` (or among all when none is online).
fn pick(turn: usize, online: &[bool]) -> Option<(usize, bool)> {
    let connected: Vec<usize> = (0..online.len()).filter(|&i| online[i]).collect();
    if connected.is_empty() {
        (!online.is_empty()).then(|| (turn % online.len(), false))
    } else {
        Some((connected[turn % connected.len()], true))
    }
}

#[async_trait]
impl SharedSubscription for RoundRobin {
    fn is_supported(&self) -> bool {
        true
    }

    async fn choice(
        &self,
        _scx: &ServerContext,
        _group: &SharedGroup,
        _publisher_id: &Id,
        _topic: &TopicName,
        members: &[(
            NodeId,
            ClientId,
            SubscriptionOptions,
            Option<Vec<SubscriptionIdentifier>>,
            Option<IsOnline>,
        )],
    ) -> Option<(usize, IsOnline)> {
        let online: Vec<bool> = members.iter().map(|m| m.4.unwrap_or(true)).collect();
        pick(self.next.fetch_add(1, Ordering::Relaxed), &online)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_go_round_robin_to_connected_members_and_to_an_offline_one_only_when_alone() {
        let online = [true, false, true];
        let picks: Vec<usize> = (0..4)
            .filter_map(|t| pick(t, &online))
            .map(|p| p.0)
            .collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        assert_eq!(pick(1, &[false, false]), Some((1, false)));
        assert_eq!(pick(0, &[]), None);
    }
}
