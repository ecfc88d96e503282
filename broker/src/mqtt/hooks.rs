//! The rmqtt hooks that make the embedded broker speak MQTT contract v1: admit clients,
//! tap allowed uplinks into the broker's channel, and enforce the topic rules of `acl`.
//!
//! rmqtt runs `MessagePublish` BEFORE `MessagePublishCheckAcl` (rmqtt 0.24,
//! `SessionState::_publish`), so the uplink tap applies the publish rule itself and
//! forwards nothing the ACL hook will deny; the ACL hook is where denials are counted.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::hook::{Handler, HookResult, Parameter, Register, ReturnType, Type};
use rmqtt::session::Session;
use rmqtt::types::{
    AuthResult, ConnectInfo, FromType, LastWill, Publish, PublishAclResult, QoS, SubscribeAclResult,
};
use tokio::sync::{mpsc, watch};

use super::acl::{self, PublishDenied, SubscribeDenied};
use super::stats::{log_loudly, Counters};
use super::Uplink;

/// One handler for all hook types we use; rmqtt dispatches on `Parameter`.
#[derive(Clone)]
pub(crate) struct ContractHooks {
    pub uplink: mpsc::Sender<Uplink>,
    pub counters: Arc<Counters>,
    pub max_payload: usize,
    /// Becomes `true` when the front shuts down, to release a publish waiting for room.
    pub shutdown: watch::Receiver<bool>,
}

impl ContractHooks {
    /// Registers and enables the hooks on the server context's hook manager.
    pub async fn register(self, register: &dyn Register) {
        for typ in [
            Type::ClientAuthenticate,
            Type::MessagePublish,
            Type::MessagePublishCheckAcl,
            Type::ClientSubscribeCheckAcl,
        ] {
            register.add(typ, Box::new(self.clone())).await;
        }
        register.start().await;
    }

    fn authenticate(&self, connect_info: &ConnectInfo) -> AuthResult {
        let Some(will) = connect_info.last_will() else {
            return AuthResult::Allow(false, None);
        };
        let (topic, payload_len) = match will {
            LastWill::V3(lw) => (lw.topic.clone(), lw.message.len()),
            LastWill::V5(lw) => (lw.topic.clone(), lw.message.len()),
        };
        let client_id = connect_info.client_id();
        // rmqtt publishes a will without asking the publish ACL, so refuse it up front.
        match acl::check_publish(client_id, &topic, payload_len, self.max_payload) {
            Ok(_) => AuthResult::Allow(false, None),
            Err(reason) => {
                let n = self
                    .counters
                    .connects_refused_will
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if log_loudly(n) {
                    tracing::warn!(%client_id, will_topic = %topic, %reason, refused_so_far = n, "MQTT connect refused: the will message's topic is not one this client may publish");
                } else {
                    tracing::debug!(%client_id, will_topic = %topic, %reason, "MQTT connect refused: will topic not allowed");
                }
                AuthResult::NotAuthorized
            }
        }
    }

    /// Forwards an allowed uplink to the channel; waits for room when it is full.
    async fn tap(&self, session: &Session, publish: &Publish) {
        let client_id = &session.id.client_id;
        if acl::check_publish(
            client_id,
            &publish.topic,
            publish.payload.len(),
            self.max_payload,
        )
        .is_err()
        {
            return; // the ACL hook that runs next denies and counts it
        }
        let uplink = Uplink {
            client_id: client_id.to_string(),
            topic: publish.topic.to_string(),
            payload: publish.payload.clone(),
        };
        let uplink = match self.uplink.try_send(uplink) {
            Ok(()) => {
                self.counters.uplinks.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.uplink_dropped_closed(client_id);
                return;
            }
            Err(mpsc::error::TrySendError::Full(uplink)) => uplink,
        };
        // Full: this client's connection task waits here, so rmqtt stops reading its
        // socket and TCP pushes back on the vehicle. Other clients are not held up.
        // rmqtt holds its hook table's read lock meanwhile, so hooks must not be
        // (re)registered after start: a writer would queue behind this wait.
        // The client's downlink waits too (same task).
        let n = self
            .counters
            .uplink_queue_full
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if log_loudly(n) {
            tracing::warn!(%client_id, full_so_far = n, "uplink channel full: holding this client's publishes until the engine catches up");
        }
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            sent = self.uplink.send(uplink) => match sent {
                Ok(()) => {
                    self.counters.uplinks.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => self.uplink_dropped_closed(client_id),
            },
            _ = shutdown.wait_for(|down| *down) => self.uplink_dropped_closed(client_id),
        }
    }

    fn uplink_dropped_closed(&self, client_id: &str) {
        let n = self
            .counters
            .uplinks_dropped_closed
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if log_loudly(n) {
            tracing::warn!(%client_id, dropped_so_far = n, "uplink dropped: the uplink channel is closed (broker shutting down?)");
        }
    }

    fn check_publish_acl(&self, session: &Session, publish: &Publish) -> Option<PublishDenied> {
        let client_id = &session.id.client_id;
        let reason = acl::check_publish(
            client_id,
            &publish.topic,
            publish.payload.len(),
            self.max_payload,
        )
        .err()?;
        let n = self.counters.publish_denied(reason);
        if log_loudly(n) {
            tracing::warn!(%client_id, topic = %publish.topic, %reason, denied_so_far = n, "MQTT publish denied and dropped; the client stays connected");
        } else {
            tracing::debug!(%client_id, topic = %publish.topic, %reason, "MQTT publish denied");
        }
        Some(reason)
    }

    fn check_subscribe_acl(&self, session: &Session, filter: &str) -> Option<SubscribeDenied> {
        let client_id = &session.id.client_id;
        let reason = acl::check_subscribe(client_id, filter).err()?;
        let n = self.counters.subscribe_denied(reason);
        if log_loudly(n) {
            tracing::warn!(%client_id, topic_filter = %filter, %reason, denied_so_far = n, "MQTT subscription refused");
        } else {
            tracing::debug!(%client_id, topic_filter = %filter, %reason, "MQTT subscription refused");
        }
        Some(reason)
    }
}

#[async_trait]
impl Handler for ContractHooks {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(connect_info) => (
                false,
                Some(HookResult::AuthResult(self.authenticate(connect_info))),
            ),
            Parameter::MessagePublish(Some(session), from, publish) => {
                // Only what a connected client sent; not wills, not the broker's own.
                if matches!(from.typ(), FromType::Custom) {
                    self.tap(session, publish).await;
                }
                (true, acc)
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                match self.check_publish_acl(session, publish) {
                    // disconnect = false: a bad message never costs a vehicle its link.
                    Some(reason) => (
                        false,
                        Some(HookResult::PublishAclResult(PublishAclResult::rejected(
                            false,
                            Some(reason.as_str().into()),
                        ))),
                    ),
                    None => (
                        false,
                        Some(HookResult::PublishAclResult(PublishAclResult::allow())),
                    ),
                }
            }
            Parameter::ClientSubscribeCheckAcl(session, subscribe) => {
                let result = match self.check_subscribe_acl(session, &subscribe.topic_filter) {
                    Some(_) => SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized),
                    // Grant at most QoS 1: the contract uses nothing higher.
                    None => SubscribeAclResult::new_success(QoS::AtLeastOnce, None),
                };
                (false, Some(HookResult::SubscribeAclResult(result)))
            }
            _ => (true, acc),
        }
    }
}
