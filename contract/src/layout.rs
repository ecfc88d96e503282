//! `[topics]` as the broker's config file writes it (contract v1 by default), read by the
//! broker and by the simulated fleet, and checked into a [`Topics`] with every problem
//! named by its key.

use serde::Deserialize;

use crate::{Template, TemplateKind, Topics};

/// `[topics]`: where each contract topic lives. `{id}` fills the vehicle's level.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LayoutSection {
    /// Heartbeats.
    pub heartbeat: String,
    /// Error reports.
    pub error: String,
    /// Command acks.
    pub ack: String,
    /// Commands to the vehicle.
    pub command: String,
    /// The vehicle's retained desired state.
    pub service: String,
    /// One event per change of a vehicle's reasons.
    pub events: String,
    /// The retained CMC SLI.
    pub sli: String,
    /// The retained SLO alert state.
    pub alerts: String,
    /// Further topics (filters with `{id}`, `+` and a last `#`) whose messages prove the
    /// vehicle alive without being decoded: routed to their readers like any message.
    pub liveness: Vec<String>,
}

impl Default for LayoutSection {
    fn default() -> Self {
        LayoutSection {
            heartbeat: "vehicles/{id}/heartbeat".into(),
            error: "vehicles/{id}/error".into(),
            ack: "vehicles/{id}/ack".into(),
            command: "vehicles/{id}/command".into(),
            service: "vehicles/{id}/service".into(),
            events: "fleet/events".into(),
            sli: "fleet/sli".into(),
            alerts: "fleet/alerts".into(),
            liveness: Vec::new(),
        }
    }
}

/// A problem of one `[topics]` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutProblem {
    /// e.g. `topics.heartbeat`
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl LayoutSection {
    /// The layout, or every problem at once.
    pub fn topics(&self) -> Result<Topics, Vec<LayoutProblem>> {
        let mut problems = Vec::new();
        let mut template = |key: String, text: &str, kind: TemplateKind| {
            Template::parse(text, kind)
                .map_err(|e| {
                    problems.push(LayoutProblem {
                        key: format!("topics.{key}"),
                        message: e.to_string(),
                    })
                })
                .ok()
        };
        let vehicle = [
            template("heartbeat".into(), &self.heartbeat, TemplateKind::Vehicle),
            template("error".into(), &self.error, TemplateKind::Vehicle),
            template("ack".into(), &self.ack, TemplateKind::Vehicle),
            template("command".into(), &self.command, TemplateKind::Vehicle),
            template("service".into(), &self.service, TemplateKind::Vehicle),
        ];
        let fleet = [
            template("events".into(), &self.events, TemplateKind::Fleet),
            template("sli".into(), &self.sli, TemplateKind::Fleet),
            template("alerts".into(), &self.alerts, TemplateKind::Fleet),
        ];
        let liveness: Vec<Option<Template>> = self
            .liveness
            .iter()
            .enumerate()
            .map(|(i, l)| template(format!("liveness[{i}]"), l, TemplateKind::Liveness))
            .collect();
        let (
            [Some(hb), Some(err), Some(ack), Some(cmd), Some(svc)],
            [Some(events), Some(sli), Some(alerts)],
            true,
        ) = (vehicle, fleet, problems.is_empty())
        else {
            return Err(problems);
        };
        let topics = Topics::new(
            [hb, err, ack, cmd, svc],
            [
                events.as_str().to_owned(),
                sli.as_str().to_owned(),
                alerts.as_str().to_owned(),
            ],
            liveness.into_iter().flatten().collect(),
        );
        let overlaps: Vec<LayoutProblem> = topics
            .overlaps()
            .into_iter()
            .map(|o| LayoutProblem {
                key: "topics".into(),
                message: format!(
                    "{:?} and {:?} can name the same topic: make them differ in a level that is not `{{id}}` or a wildcard",
                    o.0, o.1
                ),
            })
            .collect();
        if overlaps.is_empty() {
            Ok(topics)
        } else {
            Err(overlaps)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_layout_is_contract_v1() {
        let topics = LayoutSection::default().topics().expect("valid");
        assert_eq!(topics, Topics::default());
    }

    #[test]
    fn a_layout_reads_from_a_config_files_topics_table() {
        #[derive(Deserialize)]
        struct File {
            topics: LayoutSection,
        }
        let file: File = toml::from_str("[topics]\nheartbeat = \"s/{id}/hb\"\n").expect("toml");
        let topics = file.topics.topics().expect("valid");
        assert_eq!(topics.uplink("v1", crate::UplinkKind::Heartbeat), "s/v1/hb");
        assert_eq!(topics.command("v1"), "vehicles/v1/command");
    }
}
