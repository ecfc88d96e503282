//! The rmqtt hooks that make the embedded broker speak MQTT contract v1: admit clients
//! (`auth`, connect rate), tap allowed uplinks into the broker's channel (publish rate),
//! and enforce the topic rules of `acl` for each session's role.
//!
//! rmqtt runs `MessagePublish` BEFORE `MessagePublishCheckAcl` (rmqtt 0.24,
//! `SessionState::_publish`), so the uplink tap applies the publish rule and the rate
//! limit itself and forwards nothing the ACL hook will deny; the ACL hook is where topic
//! denials are counted, and where a rate-limited publish is refused (and a persistent
//! flooder disconnected) on the tap's verdict.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, Register, ReturnType, Type};
use rmqtt::session::Session;
use rmqtt::types::{
    AuthResult, ConnectInfo, FromType, LastWill, Publish, PublishAclResult, QoS, SubscribeAclResult,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::acl::{Acl, Allowed, Client, Granted, PublishDenied, Role, SubscribeDenied};
use super::auth::{Authenticator, ConnectClaim};
use super::limits::{ConnectLimiter, PublishLimiter, Verdict};
use super::stats::{log_loudly, Counters};
use super::Uplink;

/// One handler for all hook types we use; rmqtt dispatches on `Parameter`.
#[derive(Clone)]
pub(crate) struct ContractHooks {
    pub uplink: mpsc::Sender<Uplink>,
    pub counters: Arc<Counters>,
    pub max_payload: usize,
    /// The topic layout and the `[[acl]]` entries.
    pub acl: Arc<Acl>,
    /// Journey topics: their messages are routed and handed to the engine too.
    pub journeys: crate::journeys::Journeys,
    /// Becomes `true` when the front shuts down, to release a publish waiting for room.
    pub shutdown: watch::Receiver<bool>,
    pub auth: Arc<Authenticator>,
    pub publish_limits: Arc<PublishLimiter>,
    pub connect_limits: Arc<ConnectLimiter>,
    /// To tell a takeover of a connected client id (a possible clone).
    pub scx: ServerContext,
}

impl ContractHooks {
    /// Registers and enables the hooks on the server context's hook manager.
    pub async fn register(self, register: &dyn Register) {
        let mut types = vec![
            Type::ClientAuthenticate,
            Type::ClientDisconnected,
            Type::MessagePublish,
            Type::MessagePublishCheckAcl,
            Type::ClientSubscribeCheckAcl,
        ];
        // Only a wide subscription an [[acl]] entry allowed can match a contract topic
        // its client may not read: without read entries no delivery needs a look.
        if self.acl.has_read_entries() {
            types.push(Type::MessageExpiryCheck);
        }
        for typ in types {
            register.add(typ, Box::new(self.clone())).await;
        }
        register.start().await;
    }

    fn role(&self, session: &Session) -> Role {
        self.auth
            .role_of(session.id.username.as_ref().map(|u| u.as_ref()))
    }

    /// The ACL's verdict on a publish of `len` bytes to `topic` by `client`.
    fn may_publish(
        &self,
        client: &Client<'_>,
        topic: &str,
        len: usize,
    ) -> Result<Allowed, PublishDenied> {
        if len > self.max_payload {
            return Err(PublishDenied::Oversize);
        }
        self.acl.publish(client, topic)
    }

    fn client<'s>(&self, session: &'s Session) -> Client<'s> {
        Client {
            role: self.role(session),
            id: &session.id.client_id,
            username: session.id.username.as_ref().map(|u| u.as_ref()),
        }
    }

    async fn authenticate(&self, connect_info: &ConnectInfo) -> AuthResult {
        let client_id = connect_info.client_id();
        let remote = connect_info.ipaddress();
        // Before any hashing: a connect storm costs at most the bucket's rate in CPU.
        if !self.connect_limits.try_admit(Instant::now()) {
            let n = self
                .counters
                .connects_refused_rate
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if log_loudly(n) {
                tracing::warn!(%client_id, ?remote, refused_so_far = n, "MQTT connect refused: over the listener's connect rate (limits.connect_rate); the client should retry with backoff");
            }
            return AuthResult::NotAuthorized;
        }
        let claim = ConnectClaim {
            client_id,
            username: connect_info.username().map(|u| u.as_ref()),
            password: connect_info.password().map(|p| p.as_ref()),
            cert_common_name: connect_info.cert().and_then(|c| c.common_name.as_deref()),
        };
        let role = match self.auth.authenticate(&claim) {
            Ok(role) => role,
            Err(reason) => {
                let n = self.counters.auth_refused(reason);
                // Never log the password; the username is logged (it is no secret).
                if log_loudly(n) {
                    tracing::warn!(%client_id, username = ?claim.username, ?remote, %reason, refused_so_far = n, "MQTT connect refused: authentication failed");
                } else {
                    tracing::debug!(%client_id, ?remote, %reason, "MQTT connect refused: authentication failed");
                }
                return if reason.is_bad_credentials() {
                    AuthResult::BadUsernameOrPassword
                } else {
                    AuthResult::NotAuthorized
                };
            }
        };
        if let Some(will) = connect_info.last_will() {
            let (topic, payload_len) = match will {
                LastWill::V3(lw) => (lw.topic.clone(), lw.message.len()),
                LastWill::V5(lw) => (lw.topic.clone(), lw.message.len()),
            };
            // rmqtt publishes a will without asking the publish ACL, so refuse it up front.
            let client = Client {
                role,
                id: client_id,
                username: claim.username,
            };
            if let Err(reason) = self.may_publish(&client, &topic, payload_len) {
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
                return AuthResult::NotAuthorized;
            }
        }
        self.note_takeover(connect_info).await;
        AuthResult::Allow(false, None)
    }

    /// A CONNECT with the client id of a connected client takes the session over (MQTT
    /// says so, and a vehicle whose old TCP link is half-dead must get back in). If both
    /// keep reconnecting they kick each other out in turn: the log shows both addresses.
    async fn note_takeover(&self, connect_info: &ConnectInfo) {
        let id = connect_info.id();
        let entry = self.scx.extends.shared().await.entry(id.clone());
        let Some(old) = entry.session() else {
            return;
        };
        if !entry.is_connected().await {
            return;
        }
        let n = self
            .counters
            .clone_takeovers
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let client_id = &id.client_id;
        if log_loudly(n) {
            tracing::warn!(%client_id, new_remote = ?id.remote_addr, old_remote = ?old.id.remote_addr, takeovers_so_far = n, "MQTT client id already connected: the new connection takes over and the old one is closed (a reconnect, or a possible clone of this vehicle's credentials)");
        } else {
            tracing::info!(%client_id, new_remote = ?id.remote_addr, old_remote = ?old.id.remote_addr, "MQTT client id already connected: takeover");
        }
    }

    /// Forwards an allowed uplink to the channel; waits for room when it is full.
    async fn tap(&self, session: &Session, publish: &Publish) {
        let client_id = &session.id.client_id;
        let user = matches!(self.role(session), Role::Observer | Role::User(_));
        match self
            .publish_limits
            .check_at(client_id, user, Instant::now())
        {
            Verdict::Allow => {}
            // The ACL hook that runs next refuses it on the limiter's pending verdict.
            Verdict::Drop | Verdict::Disconnect => return,
        }
        let journey =
            match self.may_publish(&self.client(session), &publish.topic, publish.payload.len()) {
                Ok(Allowed::Uplink(_) | Allowed::Liveness) => None,
                // Routed to its readers by the broker; the engine only looks at journeys.
                Ok(Allowed::PassThrough(rule)) => {
                    self.counters.passed_through(rule);
                    if self.journeys.is_empty() {
                        return;
                    }
                    let correlation = publish
                        .properties
                        .as_ref()
                        .and_then(|p| p.correlation_data.as_ref());
                    match self.journeys.tap(&publish.topic, correlation) {
                        Some(tap) => Some(tap),
                        None => return,
                    }
                }
                Err(_) => return, // the ACL hook that runs next denies and counts it
            };
        let uplink = Uplink {
            client_id: client_id.to_string(),
            topic: publish.topic.to_string(),
            payload: publish.payload.clone(),
            ack: None,
            journey,
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

    /// The rate limiter's verdict on this publish, counted and logged: whether to refuse
    /// it, and whether to disconnect the client too.
    fn rate_limited(&self, session: &Session, publish: &Publish) -> Option<bool> {
        let client_id = &session.id.client_id;
        let verdict = self.publish_limits.take_pending(client_id)?;
        let n = self
            .counters
            .publishes_rate_limited
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if verdict == Verdict::Disconnect {
            let d = self
                .counters
                .flooders_disconnected
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            tracing::warn!(%client_id, topic = %publish.topic, disconnected_so_far = d, "MQTT client disconnected: it kept publishing over its rate limit (limits.disconnect_after)");
        } else if log_loudly(n) {
            tracing::warn!(%client_id, topic = %publish.topic, dropped_so_far = n, "MQTT publish dropped: over the client's publish rate (limits.publish_rate)");
        }
        Some(verdict == Verdict::Disconnect)
    }

    fn check_publish_acl(&self, session: &Session, publish: &Publish) -> Option<PublishDenied> {
        let client_id = &session.id.client_id;
        let reason = self
            .may_publish(&self.client(session), &publish.topic, publish.payload.len())
            .err()?;
        let n = self.counters.publish_denied(reason);
        if log_loudly(n) {
            tracing::warn!(%client_id, topic = %publish.topic, %reason, denied_so_far = n, "MQTT publish denied and dropped; the client stays connected");
        } else {
            tracing::debug!(%client_id, topic = %publish.topic, %reason, "MQTT publish denied");
        }
        Some(reason)
    }

    fn check_subscribe_acl(
        &self,
        session: &Session,
        filter: &str,
    ) -> Result<Granted, SubscribeDenied> {
        let client_id = &session.id.client_id;
        let verdict = self.acl.subscribe(&self.client(session), filter);
        let Err(reason) = verdict else {
            return verdict;
        };
        let n = self.counters.subscribe_denied(reason);
        if log_loudly(n) {
            tracing::warn!(%client_id, topic_filter = %filter, %reason, denied_so_far = n, "MQTT subscription refused");
        } else {
            tracing::debug!(%client_id, topic_filter = %filter, %reason, "MQTT subscription refused");
        }
        Err(reason)
    }
}

#[async_trait]
impl Handler for ContractHooks {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(connect_info) => (
                false,
                Some(HookResult::AuthResult(
                    self.authenticate(connect_info).await,
                )),
            ),
            Parameter::ClientDisconnected(session, _reason) => {
                self.publish_limits.forget(&session.id.client_id);
                (true, acc)
            }
            Parameter::MessagePublish(Some(session), from, publish) => {
                // Only what a connected client sent; not wills, not the broker's own.
                if matches!(from.typ(), FromType::Custom) {
                    self.tap(session, publish).await;
                }
                (true, acc)
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                if let Some(disconnect) = self.rate_limited(session, publish) {
                    return (
                        false,
                        Some(HookResult::PublishAclResult(PublishAclResult::rejected(
                            disconnect,
                            Some("rate_limited".into()),
                        ))),
                    );
                }
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
            // Called per delivery: holds back contract topics a wide subscription matched.
            Parameter::MessageExpiryCheck(session, _, publish) => {
                if self.acl.may_receive(&self.client(session), &publish.topic) {
                    (true, acc)
                } else {
                    (false, Some(HookResult::MessageExpiry))
                }
            }
            Parameter::ClientSubscribeCheckAcl(session, subscribe) => {
                let asked = subscribe.opts.qos();
                let result = match self.check_subscribe_acl(session, &subscribe.topic_filter) {
                    Err(_) => SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized),
                    // At most QoS 1 on contract topics: the contract uses nothing higher.
                    Ok(Granted::Contract) => {
                        SubscribeAclResult::new_success(asked.min(QoS::AtLeastOnce), None)
                    }
                    Ok(Granted::PassThrough(_)) => SubscribeAclResult::new_success(asked, None),
                };
                (false, Some(HookResult::SubscribeAclResult(result)))
            }
            _ => (true, acc),
        }
    }
}
