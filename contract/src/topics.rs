//! The topic layout: templates with `{id}` for each per-vehicle topic, the fleet topics, and
//! the extra topics that prove a vehicle is alive. Contract v1 is the default; `[topics]`
//! may rename every one. Everything that spells a topic asks a [`Topics`].

use std::fmt;

use super::filter;
use super::{DownlinkKind, UplinkKind};

/// One level of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Lit(String),
    Id,
    Plus,
    Hash,
}

/// What a template may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// Exactly one `{id}` level, no wildcard (heartbeat, error, ack, command, service).
    Vehicle,
    /// No `{id}`, no wildcard (the fleet topics).
    Fleet,
    /// Exactly one `{id}` level; `+` levels and a last `#` allowed (liveness topics).
    Liveness,
}

/// Why a template is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Empty, or empty levels where none may be.
    #[error("{0:?} is not a topic: it is empty or starts with `$`")]
    Empty(String),
    /// `{id}` missing or repeated.
    #[error("{0:?} must have exactly one `{{id}}` level")]
    IdCount(String),
    /// `{id}` where it may not be.
    #[error("{0:?} must not name a vehicle: leave `{{id}}` out")]
    IdNotAllowed(String),
    /// `{id}` mixed with other text in one level.
    #[error("{0:?}: `{{id}}` must fill a whole level (like \"scooters/{{id}}/hb\")")]
    IdNotWhole(String),
    /// A wildcard where none may be.
    #[error("{0:?} must not contain `+` or `#`")]
    Wildcard(String),
    /// A `#` that is not the last level, or a wildcard inside a level.
    #[error("{0:?}: `+` must fill a level and `#` must be the last one")]
    BadWildcard(String),
}

/// A topic template such as `vehicles/{id}/heartbeat`.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    levels: Vec<Level>,
    /// Where `{id}` is.
    id_at: Option<usize>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Template {
    /// Parses and checks a template of `kind`.
    pub fn parse(text: &str, kind: TemplateKind) -> Result<Template, TemplateError> {
        if text.is_empty() || text.starts_with('$') || text.contains('\0') {
            return Err(TemplateError::Empty(text.to_owned()));
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "{id}" => Level::Id,
                "+" => Level::Plus,
                "#" if i + 1 == parts.len() => Level::Hash,
                p if p.contains("{id}") => return Err(TemplateError::IdNotWhole(text.to_owned())),
                p if p.contains(['+', '#']) => {
                    return Err(match kind {
                        TemplateKind::Liveness => TemplateError::BadWildcard(text.to_owned()),
                        _ => TemplateError::Wildcard(text.to_owned()),
                    })
                }
                p => Level::Lit(p.to_owned()),
            };
            levels.push(level);
        }
        let ids = levels.iter().filter(|l| **l == Level::Id).count();
        let wild = levels
            .iter()
            .any(|l| matches!(l, Level::Plus | Level::Hash));
        match kind {
            TemplateKind::Fleet if ids > 0 => {
                return Err(TemplateError::IdNotAllowed(text.to_owned()))
            }
            TemplateKind::Vehicle | TemplateKind::Liveness if ids != 1 => {
                return Err(TemplateError::IdCount(text.to_owned()))
            }
            TemplateKind::Vehicle | TemplateKind::Fleet if wild => {
                return Err(TemplateError::Wildcard(text.to_owned()))
            }
            _ => {}
        }
        Ok(Template {
            text: text.to_owned(),
            id_at: levels.iter().position(|l| *l == Level::Id),
            levels,
        })
    }

    fn fixed(text: &str) -> Template {
        let levels = text
            .split('/')
            .map(|l| match l {
                "{id}" => Level::Id,
                l => Level::Lit(l.to_owned()),
            })
            .collect::<Vec<_>>();
        Template {
            text: text.to_owned(),
            id_at: levels.iter().position(|l| *l == Level::Id),
            levels,
        }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The level index of `{id}`.
    pub fn id_level(&self) -> Option<usize> {
        self.id_at
    }

    /// The vehicle level of `topic` when it fits the template (not checked as an id).
    pub fn vehicle<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let mut id = None;
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Hash => return id,
                _ => {
                    let part = parts.next()?;
                    match level {
                        Level::Lit(l) if l != part => return None,
                        Level::Id => id = Some(part),
                        _ => {}
                    }
                }
            }
        }
        if parts.next().is_some() {
            return None;
        }
        id
    }

    /// The topic (or filter, for a liveness template) with `{id}` = `id`.
    pub fn with_id(&self, id: &str) -> String {
        match self.id_at {
            None => self.text.clone(),
            Some(_) => {
                let mut out = String::with_capacity(self.text.len() + id.len());
                for (i, level) in self.levels.iter().enumerate() {
                    if i > 0 {
                        out.push('/');
                    }
                    out.push_str(match level {
                        Level::Lit(l) => l,
                        Level::Id => id,
                        Level::Plus => "+",
                        Level::Hash => "#",
                    });
                }
                out
            }
        }
    }

    /// The template as an MQTT filter over every vehicle (`{id}` = `+`).
    pub fn any_vehicle(&self) -> String {
        self.with_id("+")
    }
}

/// The per-vehicle topics of the contract, by what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VehicleTopic {
    /// Published by the vehicle, read by nobody but the broker.
    Uplink(UplinkKind),
    /// Published by the broker only.
    Downlink(DownlinkKind),
}

/// What a topic name is in the configured layout. The vehicle level is given as written:
/// callers check it with [`super::is_vehicle_id`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'t> {
    /// A heartbeat, error report or ack.
    Uplink {
        /// The vehicle level.
        vehicle: &'t str,
        /// Which uplink.
        kind: UplinkKind,
    },
    /// A further topic that proves the vehicle is alive (telemetry, location).
    Liveness {
        /// The vehicle level.
        vehicle: &'t str,
    },
    /// A command or the retained service state.
    Downlink {
        /// The vehicle level.
        vehicle: &'t str,
        /// Which downlink.
        kind: DownlinkKind,
    },
    /// One of the fleet topics, or another topic under their common first level (only the
    /// broker publishes there).
    Fleet,
    /// None of the contract's: the fleet's own traffic.
    Other,
}

/// The layout every module spells topics with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    heartbeat: Template,
    error: Template,
    ack: Template,
    command: Template,
    service: Template,
    events: String,
    sli: String,
    alerts: String,
    /// The fleet topics' common first level, when they share one no vehicle template uses.
    fleet_root: Option<String>,
    liveness: Vec<Template>,
}

impl Default for Topics {
    /// Contract v1.
    fn default() -> Topics {
        Topics::new(
            [
                Template::fixed("vehicles/{id}/heartbeat"),
                Template::fixed("vehicles/{id}/error"),
                Template::fixed("vehicles/{id}/ack"),
                Template::fixed("vehicles/{id}/command"),
                Template::fixed("vehicles/{id}/service"),
            ],
            [
                "fleet/events".to_owned(),
                "fleet/sli".to_owned(),
                "fleet/alerts".to_owned(),
            ],
            Vec::new(),
        )
    }
}

/// Two templates a topic could fit both of: `(first, second)` as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap(pub String, pub String);

impl Topics {
    /// A layout from checked templates: `[heartbeat, error, ack, command, service]`,
    /// `[events, sli, alerts]` and the liveness filters. Use [`Topics::overlaps`] to find
    /// templates a topic could fit twice.
    pub fn new(vehicle: [Template; 5], fleet: [String; 3], liveness: Vec<Template>) -> Topics {
        let [heartbeat, error, ack, command, service] = vehicle;
        let [events, sli, alerts] = fleet;
        let mut topics = Topics {
            heartbeat,
            error,
            ack,
            command,
            service,
            events,
            sli,
            alerts,
            fleet_root: None,
            liveness,
        };
        topics.fleet_root = topics.common_fleet_root();
        topics
    }

    fn common_fleet_root(&self) -> Option<String> {
        let roots: Vec<(&str, &str)> = [&self.events, &self.sli, &self.alerts]
            .iter()
            .filter_map(|t| t.split_once('/'))
            .collect();
        let root = roots.first()?.0;
        let shared = roots.len() == 3 && roots.iter().all(|(r, _)| *r == root);
        // A vehicle template under the same first level would put vehicle topics in the
        // broker's namespace.
        let mut templates = self
            .vehicle_templates()
            .map(|(t, _)| t)
            .into_iter()
            .chain(&self.liveness);
        let used = templates.any(|t| match t.levels.first() {
            Some(Level::Lit(l)) => l == root,
            _ => true,
        });
        (shared && !used).then(|| root.to_owned())
    }

    /// The per-vehicle templates with what each is.
    pub fn vehicle_templates(&self) -> [(&Template, VehicleTopic); 5] {
        [
            (&self.heartbeat, VehicleTopic::Uplink(UplinkKind::Heartbeat)),
            (&self.error, VehicleTopic::Uplink(UplinkKind::Error)),
            (&self.ack, VehicleTopic::Uplink(UplinkKind::Ack)),
            (&self.command, VehicleTopic::Downlink(DownlinkKind::Command)),
            (&self.service, VehicleTopic::Downlink(DownlinkKind::Service)),
        ]
    }

    /// Filters over every vehicle's uplinks: heartbeat, error and ack, then the liveness
    /// filters. What a broker attached to an upstream subscribes to.
    pub fn uplink_filters(&self) -> Vec<String> {
        [&self.heartbeat, &self.error, &self.ack]
            .into_iter()
            .chain(&self.liveness)
            .map(Template::any_vehicle)
            .collect()
    }

    /// The liveness filters.
    pub fn liveness(&self) -> &[Template] {
        &self.liveness
    }

    /// The three fleet topics.
    pub fn fleet_topics(&self) -> [&str; 3] {
        [&self.events, &self.sli, &self.alerts]
    }

    /// The fleet topics' common first level, if only the broker publishes under it.
    pub fn fleet_root(&self) -> Option<&str> {
        self.fleet_root.as_deref()
    }

    /// Every pair of templates (or fleet topics) that some topic fits both of.
    pub fn overlaps(&self) -> Vec<Overlap> {
        let mut filters: Vec<String> = self
            .vehicle_templates()
            .iter()
            .map(|(t, _)| t.any_vehicle())
            .collect();
        filters.extend(self.fleet_topics().iter().map(|t| (*t).to_owned()));
        filters.extend(self.liveness.iter().map(Template::any_vehicle));
        let names: Vec<String> = self
            .vehicle_templates()
            .iter()
            .map(|(t, _)| t.text.clone())
            .chain(self.fleet_topics().iter().map(|t| (*t).to_owned()))
            .chain(self.liveness.iter().map(|t| t.text.clone()))
            .collect();
        let mut out = Vec::new();
        for i in 0..filters.len() {
            for j in i + 1..filters.len() {
                if filter::overlaps(&filters[i], &filters[j]) {
                    out.push(Overlap(names[i].clone(), names[j].clone()));
                }
            }
        }
        out
    }

    /// Sorts a topic name into the layout.
    pub fn classify<'t>(&self, topic: &'t str) -> Topic<'t> {
        if self.is_fleet(topic) {
            return Topic::Fleet;
        }
        for (template, kind) in self.vehicle_templates() {
            if let Some(vehicle) = template.vehicle(topic) {
                return match kind {
                    VehicleTopic::Uplink(kind) => Topic::Uplink { vehicle, kind },
                    VehicleTopic::Downlink(kind) => Topic::Downlink { vehicle, kind },
                };
            }
        }
        for template in &self.liveness {
            if let Some(vehicle) = template.vehicle(topic) {
                return Topic::Liveness { vehicle };
            }
        }
        Topic::Other
    }

    fn is_fleet(&self, topic: &str) -> bool {
        match &self.fleet_root {
            Some(root) => {
                topic == root
                    || topic
                        .strip_prefix(root.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            None => self.fleet_topics().contains(&topic),
        }
    }

    /// Where `vehicle` publishes `kind`.
    pub fn uplink(&self, vehicle: &str, kind: UplinkKind) -> String {
        match kind {
            UplinkKind::Heartbeat => self.heartbeat.with_id(vehicle),
            UplinkKind::Error => self.error.with_id(vehicle),
            UplinkKind::Ack => self.ack.with_id(vehicle),
        }
    }

    /// The vehicle's commands.
    pub fn command(&self, vehicle: &str) -> String {
        self.command.with_id(vehicle)
    }

    /// The vehicle's retained desired state.
    pub fn service(&self, vehicle: &str) -> String {
        self.service.with_id(vehicle)
    }

    /// One event per change of a vehicle's reasons.
    pub fn events(&self) -> &str {
        &self.events
    }

    /// The retained CMC SLI.
    pub fn sli(&self) -> &str {
        &self.sli
    }

    /// The retained SLO alert state.
    pub fn alerts(&self) -> &str {
        &self.alerts
    }

    /// The command template (for the ACL and the docs).
    pub fn command_template(&self) -> &Template {
        &self.command
    }

    /// The service template.
    pub fn service_template(&self) -> &Template {
        &self.service
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str, kind: TemplateKind) -> Result<Template, TemplateError> {
        Template::parse(text, kind)
    }

    #[test]
    fn the_uplink_filters_cover_every_uplink_and_liveness_topic() {
        assert_eq!(
            Topics::default().uplink_filters(),
            ["vehicles/+/heartbeat", "vehicles/+/error", "vehicles/+/ack"]
        );
        let live = t("scooters/{id}/telemetry/#", TemplateKind::Liveness).expect("valid");
        let topics = Topics {
            liveness: vec![live],
            ..Topics::default()
        };
        assert_eq!(
            topics.uplink_filters().last().map(String::as_str),
            Some("scooters/+/telemetry/#")
        );
    }

    #[test]
    fn templates_need_one_whole_id_level_and_no_wildcards() {
        assert!(t("scooters/{id}/hb", TemplateKind::Vehicle).is_ok());
        assert!(matches!(
            t("scooters/hb", TemplateKind::Vehicle),
            Err(TemplateError::IdCount(_))
        ));
        assert!(matches!(
            t("s/{id}/{id}", TemplateKind::Vehicle),
            Err(TemplateError::IdCount(_))
        ));
        assert!(matches!(
            t("s/v-{id}/hb", TemplateKind::Vehicle),
            Err(TemplateError::IdNotWhole(_))
        ));
        assert!(matches!(
            t("s/{id}/+", TemplateKind::Vehicle),
            Err(TemplateError::Wildcard(_))
        ));
        assert!(matches!(
            t("ops/{id}", TemplateKind::Fleet),
            Err(TemplateError::IdNotAllowed(_))
        ));
        assert!(matches!(
            t("", TemplateKind::Fleet),
            Err(TemplateError::Empty(_))
        ));
        assert!(matches!(
            t("$SYS/x", TemplateKind::Fleet),
            Err(TemplateError::Empty(_))
        ));
        assert!(t("s/{id}/telemetry/#", TemplateKind::Liveness).is_ok());
        assert!(t("s/{id}/+/gps", TemplateKind::Liveness).is_ok());
        assert!(matches!(
            t("s/#/{id}", TemplateKind::Liveness),
            Err(TemplateError::BadWildcard(_))
        ));
    }

    #[test]
    fn v1_classifies_as_contract_v1_says() {
        let v1 = Topics::default();
        assert_eq!(
            v1.classify("vehicles/v1/heartbeat"),
            Topic::Uplink {
                vehicle: "v1",
                kind: UplinkKind::Heartbeat
            }
        );
        assert_eq!(
            v1.classify("vehicles/v1/service"),
            Topic::Downlink {
                vehicle: "v1",
                kind: DownlinkKind::Service
            }
        );
        assert_eq!(v1.classify("fleet/sli"), Topic::Fleet);
        assert_eq!(v1.classify("fleet/anything"), Topic::Fleet);
        assert_eq!(v1.classify("fleet"), Topic::Fleet);
        assert_eq!(v1.classify("vehicles/v1/lock"), Topic::Other);
        assert_eq!(v1.classify("vehicles/v1/heartbeat/x"), Topic::Other);
        assert_eq!(v1.command("v9"), "vehicles/v9/command");
        assert_eq!(v1.fleet_root(), Some("fleet"));
        assert!(v1.overlaps().is_empty());
    }

    #[test]
    fn a_custom_layout_and_liveness_topics_are_classified() {
        let v = |s| Template::parse(s, TemplateKind::Vehicle).expect("template");
        let topics = Topics::new(
            [
                v("scooters/{id}/hb"),
                v("scooters/{id}/err"),
                v("scooters/{id}/ack"),
                v("scooters/{id}/cmd"),
                v("scooters/{id}/state"),
            ],
            ["ops/events".into(), "ops/sli".into(), "ops/alerts".into()],
            vec![
                Template::parse("scooters/{id}/telemetry/#", TemplateKind::Liveness)
                    .expect("liveness"),
            ],
        );
        assert_eq!(
            topics.classify("scooters/s1/telemetry/gps"),
            Topic::Liveness { vehicle: "s1" }
        );
        assert_eq!(
            topics.classify("scooters/s1/telemetry"),
            Topic::Liveness { vehicle: "s1" }
        );
        assert_eq!(
            topics.classify("scooters/s1/hb"),
            Topic::Uplink {
                vehicle: "s1",
                kind: UplinkKind::Heartbeat
            }
        );
        assert_eq!(topics.classify("vehicles/s1/heartbeat"), Topic::Other);
        assert_eq!(topics.classify("ops/x"), Topic::Fleet);
        assert_eq!(topics.service("s1"), "scooters/s1/state");
        assert!(topics.overlaps().is_empty());
    }

    #[test]
    fn templates_that_a_topic_fits_twice_are_reported() {
        let v = |s| Template::parse(s, TemplateKind::Vehicle).expect("template");
        let topics = Topics::new(
            [
                v("s/{id}/hb"),
                v("s/hb/{id}"),
                v("s/{id}/ack"),
                v("s/{id}/cmd"),
                v("s/{id}/state"),
            ],
            ["f/e".into(), "f/s".into(), "f/a".into()],
            vec![Template::parse("s/{id}/#", TemplateKind::Liveness).expect("liveness")],
        );
        let found = topics.overlaps();
        assert!(found.contains(&Overlap("s/{id}/hb".into(), "s/hb/{id}".into())));
        assert!(found.contains(&Overlap("s/{id}/hb".into(), "s/{id}/#".into())));
    }

    #[test]
    fn fleet_topics_without_a_common_root_are_only_themselves() {
        let topics = Topics::new(
            Topics::default()
                .vehicle_templates()
                .map(|(t, _)| t.clone()),
            ["events".into(), "ops/sli".into(), "ops/alerts".into()],
            Vec::new(),
        );
        assert_eq!(topics.fleet_root(), None);
        assert_eq!(topics.classify("events"), Topic::Fleet);
        assert_eq!(topics.classify("ops/other"), Topic::Other);
    }
}
