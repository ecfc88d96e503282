//! The link over MQTT 3.1.1.

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
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
    o.set_clean_session(s.session_expiry.is_zero());
    o.set_manual_acks(s.ack_when_stored);
    o.set_max_packet_size(MAX_INCOMING_PACKET, MAX_INCOMING_PACKET);
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
                        super::AckClient::V311(subscriber.clone())
                    });
                    if !ctx.deliver(p.topic, p.payload, p.retain, None, ack).await {
                        break; // the engine is gone
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
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
        let filters = filters
            .into_iter()
            .map(|f| rumqttc::SubscribeFilter::new(f, qos));
        if let Err(e) = client.subscribe_many(filters).await {
            tracing::warn!("uplink subscription not sent: {e}");
        }
    });
}

/// The next attempt goes to the URL now current (the requests queued stay).
fn reconnect_to(eventloop: &mut EventLoop, ctx: &LoopCtx, tls: &TlsFiles) {
    if ctx.settings().urls.len() > 1 {
        eventloop.mqtt_options = options(ctx, tls);
    }
}
