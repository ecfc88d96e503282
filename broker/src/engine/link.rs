//! Attach mode: the engine follows the upstream link. While it is down the fleet is blind
//! (`fleet_rules::Fleet::link_lost`); once it is back deadlines resume with the restart
//! grace, and if the upstream lost the broker's session (and with it, as Mosquitto without
//! persistence does, its retained messages) the retained service state and the SLI are
//! published again.

use std::sync::atomic::Ordering;

use fleet_rules::Blindness;
use tokio::sync::watch;
use tracing::{info, warn};

use super::Engine;
use crate::mqtt::upstream::Link;
use crate::store::{Location, StoreReader};

/// The link as the engine follows it.
pub(super) struct LinkWatch {
    pub(super) rx: watch::Receiver<Link>,
    how: Blindness,
    store: Location,
    /// Connections seen so far.
    connects: u64,
}

/// Whether the link changed (`false`: its sender is gone, stop watching). Never resolves
/// without a link.
pub(super) async fn changed(link: &mut Option<LinkWatch>) -> bool {
    match link {
        Some(l) => l.rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

impl Engine {
    /// Follows `link`: blind while it is down (from the start until the first connection).
    pub fn with_link(
        mut self,
        rx: watch::Receiver<Link>,
        how: Blindness,
        store: Location,
    ) -> Engine {
        self.link = Some(LinkWatch {
            rx,
            how,
            store,
            connects: 0,
        });
        self
    }

    pub(super) async fn on_link(&mut self, watch: &mut LinkWatch, state: Link) {
        let now = self.clock.now();
        // A reconnect the watch folded into one change was a (short) blind stretch too.
        let missed_loss = state.up && state.connects > watch.connects + 1;
        if (!state.up || missed_loss) && self.fleet.blind_since().is_none() {
            self.fleet.link_lost(now, watch.how);
            self.metrics.blind.store(1, Ordering::Relaxed);
            if watch.connects == 0 {
                info!("blind until the first connection to the upstream: nobody is taken out for silence meanwhile");
            } else if !missed_loss {
                warn!("blind: the upstream link is down; nobody is taken out for silence until it is back");
            }
        }
        if state.up {
            if let Some(blind_ms) = self.fleet.link_restored(now) {
                self.metrics.blind.store(0, Ordering::Relaxed);
                self.metrics.blind_ms.fetch_add(blind_ms, Ordering::Relaxed);
                info!(
                    blind_ms,
                    "the upstream link is back: deadlines resume with the restart grace"
                );
            }
            let reconnect = watch.connects > 0;
            watch.connects = state.connects;
            if reconnect && !state.session_present {
                self.republish_after_upstream_loss(watch).await;
            }
        }
    }

    /// The upstream forgot the broker's session: publish the retained state again.
    async fn republish_after_upstream_loss(&mut self, watch: &LinkWatch) {
        let location = watch.store.clone();
        let read = tokio::task::spawn_blocking(move || StoreReader::open(&location)?.changed_at());
        match read.await {
            Ok(Ok(changed_at)) => {
                info!(
                    vehicles = changed_at.len(),
                    "the upstream lost the broker's session (and its retained messages?): publishing the retained service state again"
                );
                self.republish_retained_state(changed_at);
                self.publish_sli(true).await;
            }
            Ok(Err(e)) => warn!("cannot read the store to republish the retained state: {e}"),
            Err(e) => warn!("reading the store to republish the retained state failed: {e}"),
        }
    }
}
