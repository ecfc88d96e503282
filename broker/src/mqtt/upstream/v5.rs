//! The link over MQTT 5.

use rumqttc::v5::mqttbytes::v5::{Filter, Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::Outgoing;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{LoopCtx, TlsFiles, MAX_INCOMING_PACKET, REQUEST_QUEUE};

fn options(ctx: &LoopCtx, tls: &TlsFiles) -> MqttOptions {
    let s = ctx.settings();
    let url = ctx.url();
    let mut o = MqttOptions::new(s.client_id.clone(), url.host.clone(), url.port);
    o.set_keep_alive(s.keep_alive);
    // A persistent session: the upstream queues uplinks while the link is down (none for
    // a standby's watch, whose session expiry is zero).
    o.set_clean_start(s.session_expiry.is_zero());
    o.set_manual_acks(s.ack_when_stored);
    o.set_session_expiry_interval(Some(
        u32::try_from(s.session_expiry.as_secs()).unwrap_or(u32::MAX),
    ));
    o.set_max_packet_size(u32::try_from(MAX_INCOMING_PACKET).ok());
    o.set_request_channel_capacity(REQUEST_QUEUE);
    o.set_transport(tls.transport(url));
    if let Some((user, password)) = &s.credentials {
        o.set_credentials(user.clone(), password.clone());
    }
    o
}

pub(super) fn spawn(
    mut ctx: LoopCtx,
    tls: TlsFiles,
    mut stop: watch::Receiver<bool>,
) -> (AsyncClient, JoinHandle<()>) {
    let (client, mut eventloop) = AsyncClient::new(options(&ctx, &tls), REQUEST_QUEUE);
    let subscriber = client.clone();
    let qos = if ctx.settings().qos1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let task = tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.changed() => break,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    ctx.connected(ack.session_present);
                    subscribe(&subscriber, ctx.filters(), qos);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let ack = ctx.ack(p.pkid, p.qos == QoS::AtLeastOnce, || {
                        super::AckClient::V5(subscriber.clone())
                    });
                    let Ok(topic) = String::from_utf8(p.topic.to_vec()) else {
                        ack.inspect(super::UplinkAck::send);
                        continue;
                    };
                    let correlation = p
                        .properties
                        .as_ref()
                        .and_then(|props| props.correlation_data.as_ref());
                    if !ctx
                        .deliver(topic, p.payload.clone(), p.retain, correlation, ack)
                        .await
                    {
                        break; // the engine is gone
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                        .count();
                    ctx.subscribed(refused);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    let wait = ctx.failed(&e);
                    reconnect_to(&mut eventloop, &ctx, &tls);
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    });
    (client, task)
}

/// Subscribes without blocking the connection loop (the request queue may be full).
fn subscribe(client: &AsyncClient, filters: Vec<String>, qos: QoS) {
    let client = client.clone();
    tokio::spawn(async move {
        let filters = filters.into_iter().map(|f| Filter::new(f, qos));
        if let Err(e) = client.subscribe_many(filters).await {
            tracing::warn!("uplink subscription not sent: {e}");
        }
    });
}

/// The next attempt goes to the URL now current (the requests queued stay).
fn reconnect_to(eventloop: &mut EventLoop, ctx: &LoopCtx, tls: &TlsFiles) {
    if ctx.settings().urls.len() > 1 {
        eventloop.options = options(ctx, tls);
    }
}
