//! Heartbeat timeouts: per-model (model names interned to a two-byte id) and the restart
//! grace. Names come from devices, so the table is capped: past the cap an unknown name is
//! ignored and the vehicle keeps the model it had.

use std::collections::HashMap;

use crate::config::millis;
use crate::{HeartbeatConfig, UnixMs};

/// Index into the model table; [`NO_MODEL`] until a heartbeat names one.
pub(crate) type ModelId = u16;
/// No model named yet: the default timeout applies.
pub(crate) const NO_MODEL: ModelId = 0;
/// Distinct model names learned from heartbeats, beyond the configured ones.
const MAX_LEARNED_MODELS: usize = 1024;

/// Timeouts and the restart grace; computes a vehicle's deadline.
pub(crate) struct Timeouts {
    names: Vec<Box<str>>,
    timeout_ms: Vec<u64>,
    index: HashMap<Box<str>, ModelId>,
    default_ms: u64,
    limit: usize,
    grace_ms: Option<u64>,
    /// Set by a restore: nobody is found silent before `restored_at + grace`.
    pub(crate) restored_at: Option<UnixMs>,
}

impl Timeouts {
    pub(crate) fn new(config: &HeartbeatConfig) -> Timeouts {
        let default_ms = millis(config.timeout);
        let mut t = Timeouts {
            names: vec!["".into()],
            timeout_ms: vec![default_ms],
            index: HashMap::new(),
            default_ms,
            limit: usize::from(ModelId::MAX) + 1,
            grace_ms: config.restart_grace.map(millis),
            restored_at: None,
        };
        // Sorted so model ids do not depend on the config map's iteration order.
        let mut configured: Vec<_> = config.models.iter().collect();
        configured.sort();
        for (name, timeout) in configured {
            t.add(name, millis(*timeout));
        }
        t.limit = t.limit.min(t.names.len() + MAX_LEARNED_MODELS);
        t
    }

    fn add(&mut self, name: &str, timeout_ms: u64) -> Option<ModelId> {
        let id = ModelId::try_from(self.names.len()).ok()?;
        self.names.push(name.into());
        self.timeout_ms.push(timeout_ms);
        self.index.insert(name.into(), id);
        Some(id)
    }

    /// The id for `name`, learning it if there is room.
    pub(crate) fn intern(&mut self, name: &str) -> Option<ModelId> {
        if let Some(&id) = self.index.get(name) {
            return Some(id);
        }
        if self.names.len() >= self.limit {
            return None;
        }
        self.add(name, self.default_ms)
    }

    pub(crate) fn name(&self, id: ModelId) -> Option<&str> {
        if id == NO_MODEL {
            return None;
        }
        self.names.get(usize::from(id)).map(|n| &**n)
    }

    /// The heartbeat timeout of `model` in ms.
    pub(crate) fn timeout(&self, model: ModelId) -> u64 {
        self.timeout_ms
            .get(usize::from(model))
            .copied()
            .unwrap_or(self.default_ms)
    }

    /// When a vehicle of `model` last seen at `last_seen` is found silent: `last_seen +
    /// timeout`, but after a restore never before the grace (its own timeout unless
    /// configured) counted from the restore. Takes the two fields, not the vehicle, so the
    /// table stays below the vehicle record in the module graph.
    pub(crate) fn deadline(&self, model: ModelId, last_seen: UnixMs) -> UnixMs {
        let timeout = self.timeout(model);
        let due = last_seen.saturating_add(timeout);
        match self.restored_at {
            Some(at) => due.max(at.saturating_add(self.grace_ms.unwrap_or(timeout))),
            None => due,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> HeartbeatConfig {
        HeartbeatConfig {
            timeout: Duration::from_secs(300),
            models: [("e-bike".to_string(), Duration::from_secs(600))].into(),
            recover_after: 1,
            restart_grace: None,
        }
    }

    #[test]
    fn a_configured_model_has_its_own_timeout_and_others_the_default() {
        let mut t = Timeouts::new(&config());
        assert_eq!(t.deadline(NO_MODEL, 1_000), 1_000 + 300_000);
        let ebike = t.intern("e-bike").unwrap_or(NO_MODEL);
        assert_eq!(t.deadline(ebike, 1_000), 1_000 + 600_000);
        let learned = t.intern("scooter-x").unwrap_or(NO_MODEL);
        assert_eq!(t.name(learned), Some("scooter-x"));
        assert_eq!(t.deadline(learned, 1_000), 1_000 + 300_000);
    }

    #[test]
    fn learned_model_names_are_capped() {
        let mut t = Timeouts::new(&config());
        for i in 0..MAX_LEARNED_MODELS {
            assert!(t.intern(&format!("m{i}")).is_some());
        }
        assert_eq!(t.intern("one-too-many"), None);
        assert!(t.intern("e-bike").is_some());
        assert!(t.intern("m7").is_some());
    }

    #[test]
    fn after_a_restore_the_deadline_is_never_before_the_grace_ends() {
        let mut t = Timeouts::new(&config());
        t.restored_at = Some(10_000_000);
        assert_eq!(t.deadline(NO_MODEL, 1_000), 10_000_000 + 300_000);
    }
}
