//! Read-only questions for the ops API that stay cheap at a million vehicles: a filtered
//! listing in pages that costs O(vehicles looked at) per call, and a census of states and
//! reasons (one pass, no allocation).

use crate::fleet::VehicleView;
use crate::timeouts::ModelId;
use crate::vehicle::{Silence, Vehicle};
use crate::{Fleet, ReasonKind, ServiceState};

impl ReasonKind {
    pub(crate) fn holds_for(self, v: &Vehicle) -> bool {
        match self {
            ReasonKind::HeartbeatLost => v.silence == Silence::Lost,
            ReasonKind::HardwareFault => v.extra.as_ref().is_some_and(|x| !x.faults.is_empty()),
            ReasonKind::JourneyFailures => v.extra.as_ref().is_some_and(|x| x.journeys.is_some()),
            ReasonKind::Maintenance => v.extra.as_ref().is_some_and(|x| x.maintenance.is_some()),
        }
    }
}

/// Which vehicles a listing returns; the default matches every vehicle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VehicleFilter {
    /// Only vehicles in this state.
    pub state: Option<ServiceState>,
    /// Only vehicles that have this reason.
    pub reason: Option<ReasonKind>,
    /// Only vehicles whose last named model is this one.
    pub model: Option<String>,
}

/// Where a listing goes on. Carried through the API as the decimal string of
/// [`PageCursor::token`]; callers treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageCursor(u32);

impl PageCursor {
    /// The cursor's text form.
    pub fn token(self) -> String {
        self.0.to_string()
    }

    /// A cursor from its text form; `None` for anything [`PageCursor::token`] never makes.
    pub fn from_token(token: &str) -> Option<PageCursor> {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        token.parse().ok().map(PageCursor)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct VehiclePage {
    /// Matching vehicles, in registration order (slots of decommissioned vehicles are
    /// reused, so a vehicle registered later may appear earlier).
    pub vehicles: Vec<VehicleView>,
    /// Where to go on, or `None` when every vehicle has been looked at. A page may hold
    /// fewer than `limit` vehicles (even none) and still have a next one: each call looks
    /// at a bounded number of vehicles.
    pub next: Option<PageCursor>,
}

/// How many vehicles are in each state and have each reason right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Census {
    /// Tracked vehicles (decommissioned excluded).
    pub total: usize,
    /// In service.
    pub in_service: usize,
    /// Out of service (for any reason).
    pub out_of_service: usize,
    /// With `heartbeat_lost`.
    pub heartbeat_lost: usize,
    /// With at least one `hardware_fault`.
    pub hardware_fault: usize,
    /// With at least one `journey_failures`.
    pub journey_failures: usize,
    /// With `maintenance`.
    pub maintenance: usize,
    /// Silent, with the service-out held by a (possible) mass-loss incident.
    pub held: usize,
}

/// Vehicles by fault code and by model, for people deciding what to repair.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Breakdown {
    /// Vehicles with each hardware-fault code, most first (ties by code).
    pub fault_codes: Vec<(String, usize)>,
    /// Per model (`None`: not reported yet), most vehicles first: `(model, in service,
    /// tracked)`.
    pub models: Vec<(Option<String>, usize, usize)>,
}

impl Census {
    /// Vehicles that have the reason `kind`.
    pub fn with_reason(&self, kind: ReasonKind) -> usize {
        match kind {
            ReasonKind::HeartbeatLost => self.heartbeat_lost,
            ReasonKind::HardwareFault => self.hardware_fault,
            ReasonKind::JourneyFailures => self.journey_failures,
            ReasonKind::Maintenance => self.maintenance,
        }
    }
}

impl Fleet {
    /// Up to `limit` vehicles matching `filter`, from `cursor` on, looking at no more than
    /// `max_scanned` vehicles (at least `limit`), so one call costs the same at any fleet
    /// size even when few vehicles match. Follow [`VehiclePage::next`] for the rest.
    pub fn vehicles_page(
        &self,
        filter: &VehicleFilter,
        cursor: PageCursor,
        limit: usize,
        max_scanned: usize,
    ) -> VehiclePage {
        let limit = limit.max(1);
        let budget = max_scanned.max(limit);
        let mut vehicles = Vec::new();
        let mut next = None;
        for (scanned, (slot, v)) in self.registry.iter_from(cursor.0).enumerate() {
            if vehicles.len() == limit || scanned == budget {
                next = Some(PageCursor(slot));
                break;
            }
            if self.matches(filter, v) {
                vehicles.push(self.view(v));
            }
        }
        VehiclePage { vehicles, next }
    }

    /// Counts by state and reason, in one pass over the fleet.
    pub fn census(&self) -> Census {
        self.count(|_| {})
    }

    /// The census and the breakdown by fault code and model, in one pass over the fleet.
    pub fn census_and_breakdown(&self) -> (Census, Breakdown) {
        let mut codes: std::collections::HashMap<&str, usize> = Default::default();
        let mut models: std::collections::HashMap<ModelId, (usize, usize)> = Default::default();
        let census = self.count(|v| {
            if let Some(x) = v.extra.as_ref() {
                for (code, _) in &x.faults {
                    *codes.entry(code).or_default() += 1;
                }
            }
            let m = models.entry(v.model).or_default();
            m.0 += usize::from(v.state() == ServiceState::InService);
            m.1 += 1;
        });
        let mut fault_codes: Vec<(String, usize)> = codes
            .into_iter()
            .map(|(code, n)| (code.to_owned(), n))
            .collect();
        fault_codes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut models: Vec<(Option<String>, usize, usize)> = models
            .into_iter()
            .map(|(id, (ok, n))| (self.timeouts.name(id).map(str::to_owned), ok, n))
            .collect();
        models.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        (
            census,
            Breakdown {
                fault_codes,
                models,
            },
        )
    }

    fn count<'a>(&'a self, mut each: impl FnMut(&'a Vehicle)) -> Census {
        let mut c = Census::default();
        for v in self.registry.iter() {
            c.total += 1;
            match v.state() {
                ServiceState::InService => c.in_service += 1,
                ServiceState::OutOfService => c.out_of_service += 1,
            }
            c.heartbeat_lost += usize::from(ReasonKind::HeartbeatLost.holds_for(v));
            c.hardware_fault += usize::from(ReasonKind::HardwareFault.holds_for(v));
            c.journey_failures += usize::from(ReasonKind::JourneyFailures.holds_for(v));
            c.maintenance += usize::from(ReasonKind::Maintenance.holds_for(v));
            c.held += usize::from(matches!(v.silence, Silence::Pending | Silence::Held));
            each(v);
        }
        c
    }

    fn matches(&self, filter: &VehicleFilter, v: &Vehicle) -> bool {
        filter.state.is_none_or(|s| v.state() == s)
            && filter.reason.is_none_or(|k| k.holds_for(v))
            && filter
                .model
                .as_deref()
                .is_none_or(|m| self.timeouts.name(v.model) == Some(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::Heartbeat;

    #[test]
    fn the_breakdown_counts_vehicles_per_fault_code_and_per_model() {
        let f = ten();
        let (census, b) = f.census_and_breakdown();
        assert_eq!(census, f.census());
        assert_eq!(b.fault_codes, [("BRAKE_SENSOR".to_owned(), 2)]);
        assert_eq!(
            b.models,
            [(None, 6, 9), (Some("e-bike".to_owned()), 1, 1)],
            "v3, v5 and v7 are out"
        );
    }

    fn ids(page: &VehiclePage) -> Vec<&str> {
        page.vehicles.iter().map(|v| v.id.as_str()).collect()
    }

    /// v0..v9 registered in order; v3 and v7 faulted, v5 in maintenance, v8 an e-bike.
    fn ten() -> Fleet {
        let mut f = fleet();
        for i in 0..10 {
            let model = (i == 8).then_some("e-bike");
            let heartbeat = Heartbeat { model, ..BARE };
            f.heartbeat(&format!("v{i}"), heartbeat, T0).unwrap();
        }
        f.error_report("v3", &[("BRAKE_SENSOR", 1)], T0).unwrap();
        f.error_report("v7", &[("BRAKE_SENSOR", 1)], T0).unwrap();
        f.service_out("v5", "ana", "tyre", T0).unwrap();
        drain(&mut f);
        f
    }

    #[test]
    fn pages_follow_each_other_until_every_vehicle_was_listed_once() {
        let f = ten();
        let all = VehicleFilter::default();
        let first = f.vehicles_page(&all, PageCursor::default(), 4, 1000);
        assert_eq!(ids(&first), ["v0", "v1", "v2", "v3"]);
        let second = f.vehicles_page(&all, first.next.unwrap(), 4, 1000);
        assert_eq!(ids(&second), ["v4", "v5", "v6", "v7"]);
        let third = f.vehicles_page(&all, second.next.unwrap(), 4, 1000);
        assert_eq!(ids(&third), ["v8", "v9"]);
        assert_eq!(third.next, None);
    }

    #[test]
    fn filters_by_state_reason_and_model_combine() {
        let f = ten();
        let page = |filter: VehicleFilter| {
            ids(&f.vehicles_page(&filter, PageCursor::default(), 100, 1000))
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let out = VehicleFilter {
            state: Some(ServiceState::OutOfService),
            ..VehicleFilter::default()
        };
        assert_eq!(page(out), ["v3", "v5", "v7"]);
        let faulted = VehicleFilter {
            reason: Some(ReasonKind::HardwareFault),
            ..VehicleFilter::default()
        };
        assert_eq!(page(faulted), ["v3", "v7"]);
        let ebikes = VehicleFilter {
            model: Some("e-bike".into()),
            ..VehicleFilter::default()
        };
        assert_eq!(page(ebikes), ["v8"]);
        let none = VehicleFilter {
            state: Some(ServiceState::InService),
            reason: Some(ReasonKind::Maintenance),
            model: None,
        };
        assert!(page(none).is_empty());
    }

    #[test]
    fn a_page_looks_at_a_bounded_number_of_vehicles_and_says_where_to_go_on() {
        let f = ten();
        let faulted = VehicleFilter {
            reason: Some(ReasonKind::HardwareFault),
            ..VehicleFilter::default()
        };
        // Budget of 3: v0..v2 hold no fault, so the page is empty but not the last.
        let first = f.vehicles_page(&faulted, PageCursor::default(), 1, 3);
        assert!(first.vehicles.is_empty());
        let second = f.vehicles_page(&faulted, first.next.unwrap(), 1, 3);
        assert_eq!(ids(&second), ["v3"]);
        let mut cursor = second.next;
        let mut rest = Vec::new();
        while let Some(c) = cursor {
            let p = f.vehicles_page(&faulted, c, 1, 3);
            rest.extend(ids(&p).into_iter().map(str::to_owned));
            cursor = p.next;
        }
        assert_eq!(rest, ["v7"]);
    }

    #[test]
    fn decommissioned_vehicles_are_skipped() {
        let mut f = ten();
        f.decommission("v1", "ana", T0).unwrap();
        let page = f.vehicles_page(&VehicleFilter::default(), PageCursor::default(), 3, 100);
        assert_eq!(ids(&page), ["v0", "v2", "v3"]);
    }

    #[test]
    fn cursor_tokens_round_trip_and_garbage_is_refused() {
        let c = PageCursor(1234);
        assert_eq!(PageCursor::from_token(&c.token()), Some(c));
        for bad in ["", "-1", "12a", "+3", "99999999999"] {
            assert_eq!(PageCursor::from_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_census_counts_states_and_each_reason() {
        let mut f = ten();
        f.tick(T0 + TIMEOUT + 1);
        f.heartbeat("v0", BARE, T0 + TIMEOUT + 2).unwrap();
        let c = f.census();
        assert_eq!(c.total, 10);
        // Everyone but v0 and the e-bike v8 (10 min timeout) went silent.
        assert_eq!((c.in_service, c.out_of_service), (2, 8));
        assert_eq!(c.heartbeat_lost, 8);
        assert_eq!(c.hardware_fault, 2);
        assert_eq!(c.maintenance, 1);
        assert_eq!(c.with_reason(ReasonKind::Maintenance), 1);
    }

    #[test]
    fn reason_kinds_use_the_contract_names() {
        for k in ReasonKind::ALL {
            assert_eq!(ReasonKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ReasonKind::parse("broken"), None);
    }
}
