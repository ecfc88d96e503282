//! Where vehicles live: a slab of records addressed by a `u32` slot, the id index, the
//! slots freed by decommissioning, and the ids that may never come back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::vehicle::Vehicle;

/// The tracked vehicles. The id string is shared between the slab and the index.
#[derive(Default)]
pub(crate) struct Registry {
    slots: Vec<Option<Vehicle>>,
    free: Vec<u32>,
    index: HashMap<Arc<str>, u32>,
    decommissioned: HashSet<Box<str>>,
}

impl Registry {
    pub(crate) fn find(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    pub(crate) fn get(&self, slot: u32) -> Option<&Vehicle> {
        self.slots.get(slot as usize)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, slot: u32) -> Option<&mut Vehicle> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Adds a vehicle whose id is not tracked; `None` when the slot space (2^32) is used up.
    pub(crate) fn insert(&mut self, vehicle: Vehicle) -> Option<u32> {
        let id = Arc::clone(&vehicle.id);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(vehicle);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len()).ok()?;
                self.slots.push(Some(vehicle));
                slot
            }
        };
        self.index.insert(id, slot);
        Some(slot)
    }

    /// Removes the vehicle for good: its id is refused from now on.
    pub(crate) fn decommission(&mut self, slot: u32) -> Option<Vehicle> {
        let vehicle = self.slots.get_mut(slot as usize)?.take()?;
        self.index.remove(&*vehicle.id);
        self.free.push(slot);
        self.decommissioned.insert((*vehicle.id).into());
        Some(vehicle)
    }

    pub(crate) fn is_decommissioned(&self, id: &str) -> bool {
        self.decommissioned.contains(id)
    }

    /// Refuses `id` from now on (a decommissioning from before a restart).
    pub(crate) fn forbid(&mut self, id: &str) {
        self.decommissioned.insert(id.into());
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Vehicle> {
        self.slots.iter().flatten()
    }

    /// The vehicles in slot order from slot `from` on, each with its slot.
    pub(crate) fn iter_from(&self, from: u32) -> impl Iterator<Item = (u32, &Vehicle)> {
        let start = (from as usize).min(self.slots.len());
        self.slots[start..]
            .iter()
            .zip(from..)
            .filter_map(|(v, slot)| v.as_ref().map(|v| (slot, v)))
    }

    /// Looks at up to `max` slots from `from`, keeping what `pick` returns; the next slot
    /// to look at, or `None` past the end.
    pub(crate) fn scan<T>(
        &self,
        from: u32,
        max: usize,
        mut pick: impl FnMut(&Vehicle) -> Option<T>,
    ) -> (Vec<T>, Option<u32>) {
        let start = (from as usize).min(self.slots.len());
        let end = start.saturating_add(max).min(self.slots.len());
        let picked = self.slots[start..end]
            .iter()
            .flatten()
            .filter_map(&mut pick)
            .collect();
        let next = (end < self.slots.len())
            .then(|| u32::try_from(end).ok())
            .flatten();
        (picked, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decommissioned_vehicles_slot_is_reused_but_its_id_is_refused() {
        let mut r = Registry::default();
        let a = r.insert(Vehicle::new("a".into(), 0));
        let b = r.insert(Vehicle::new("b".into(), 0));
        assert_eq!((a, b), (Some(0), Some(1)));
        assert!(r.decommission(0).is_some());
        assert_eq!(r.find("a"), None);
        assert!(r.is_decommissioned("a"));
        assert_eq!(r.len(), 1);
        assert_eq!(r.insert(Vehicle::new("c".into(), 0)), Some(0));
        assert_eq!(r.find("c"), Some(0));
        assert_eq!(r.iter().count(), 2);
    }
}
