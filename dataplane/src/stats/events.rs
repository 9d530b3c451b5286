//! Application events: what a version's answers say happened, named in the
//! [`EVENT_HEADER`] response header or by status, counted per version like its errors.
//!
//! A version's statistics give each event name it ever counted a slot (at most
//! [`SLOTS`] names over the proxy's life; a service declares at most eight at a time), so a
//! push that renames or reorders the service's events never moves one event's counts into
//! another's. The request path sees a version's declared events as [`Events`]: the names
//! with their slots, matched against an answer in a few comparisons, and nothing at all for
//! a service that declares none.

use grayline_routing::model::{EVENT_HEADER, Event};
use http::HeaderMap;

use super::VersionStats;

/// Event names one version's statistics can count over the proxy's life.
pub const SLOTS: usize = 16;

/// The events of one answer, one bit per slot.
pub type EventSet = u16;

#[derive(Debug)]
struct Declared {
    name: Box<str>,
    statuses: Box<[u16]>,
    slot: u8,
}

/// A service's declared events, as one version's statistics count them.
#[derive(Debug, Default)]
pub struct Events {
    declared: Box<[Declared]>,
}

impl Events {
    /// The service's `events`, each given its slot in `stats`. An event past the slots a
    /// version can have (a proxy that saw more than [`SLOTS`] names come and go) is not
    /// counted, and said so once.
    pub fn new(events: &[Event], stats: &VersionStats) -> Events {
        let declared = events
            .iter()
            .filter_map(|e| match stats.event_slot(&e.name) {
                Some(slot) => Some(Declared {
                    name: e.name.as_str().into(),
                    statuses: e.statuses.as_slice().into(),
                    slot,
                }),
                None => {
                    tracing::warn!(
                        service = stats.service(),
                        version = stats.version(),
                        event = e.name,
                        "event not counted: this version's statistics have counted {SLOTS} \
                         event names since the proxy started"
                    );
                    None
                }
            })
            .collect();
        Events { declared }
    }

    pub fn is_empty(&self) -> bool {
        self.declared.is_empty()
    }

    /// The declared events an answer with `status` and `headers` carries.
    pub fn of(&self, status: u16, headers: &HeaderMap) -> EventSet {
        if self.declared.is_empty() {
            return 0;
        }
        let mut set = 0;
        for d in self
            .declared
            .iter()
            .filter(|d| d.statuses.contains(&status))
        {
            set |= 1 << d.slot;
        }
        for value in headers.get_all(EVENT_HEADER) {
            let Ok(text) = value.to_str() else { continue };
            for name in text.split(',').map(str::trim) {
                if let Some(d) = self.declared.iter().find(|d| *d.name == *name) {
                    set |= 1 << d.slot;
                }
            }
        }
        set
    }

    /// Whether these are the events `declared` describes (same names, statuses and order).
    pub fn describe(&self, declared: &[Event]) -> bool {
        self.declared.len() == declared.len()
            && self
                .declared
                .iter()
                .zip(declared)
                .all(|(d, e)| *d.name == *e.name && *d.statuses == *e.statuses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Outcome;

    fn event(name: &str, statuses: &[u16]) -> Event {
        Event {
            name: name.into(),
            statuses: statuses.to_vec(),
        }
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(EVENT_HEADER, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn answers_are_matched_by_header_and_status_and_counted_in_both_samples() {
        let stats = VersionStats::new("shop", "v2", false);
        let events = Events::new(
            &[
                event("declined", &[402]),
                event("paid", &[]),
                event("busy", &[429]),
            ],
            &stats,
        );
        assert_eq!(events.of(200, &HeaderMap::new()), 0);
        let declined = events.of(402, &HeaderMap::new());
        let both = events.of(200, &headers(&["paid , declined", "unknown"]));
        let busy = events.of(429, &headers(&["paid"]));
        assert_eq!(declined.count_ones(), 1);
        assert_eq!(both.count_ones(), 2);
        assert_eq!(busy.count_ones(), 2);
        for (set, judged) in [(declined, true), (both, false), (busy, true), (0, true)] {
            let mut o = Outcome::status(200).judged(judged);
            o.events = set;
            stats.record(o, 100);
        }
        // The proxy's own answers carry no events of the version's.
        let mut fallback = Outcome::status(503);
        fallback.fallback = true;
        fallback.events = declined;
        stats.record(fallback, 1);
        let d = stats.take();
        let counted: Vec<_> = d
            .events
            .iter()
            .map(|e| (e.name.as_str(), e.count, e.judged))
            .collect();
        assert_eq!(
            counted,
            [("busy", 1, 1), ("declined", 2, 1), ("paid", 2, 1)]
        );
        assert!(
            d.judged.events.is_empty(),
            "the judged counts travel once, in `events`"
        );
        assert!(stats.take().events.is_empty(), "taken and reset");
    }

    #[test]
    fn a_renamed_or_reordered_event_keeps_its_own_counts() {
        let stats = VersionStats::new("shop", "v2", false);
        let before = Events::new(&[event("a", &[]), event("b", &[])], &stats);
        let a = before.of(200, &headers(&["a"]));
        let after = Events::new(&[event("c", &[]), event("b", &[]), event("a", &[])], &stats);
        assert_eq!(after.of(200, &headers(&["a"])), a, "`a` keeps its slot");
        let mut o = Outcome::status(200);
        o.events = after.of(200, &headers(&["c"]));
        stats.record(o, 1);
        o.events = a;
        stats.record(o, 1);
        let names: Vec<_> = stats.take().events.into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a", "c"]);
        assert!(after.describe(&[event("c", &[]), event("b", &[]), event("a", &[])]));
        assert!(!after.describe(&[event("c", &[409]), event("b", &[]), event("a", &[])]));
        // Slots run out only after SLOTS names.
        let fresh = VersionStats::new("shop", "v3", false);
        let many: Vec<Event> = (0..SLOTS + 2)
            .map(|i| event(&format!("e{i}"), &[]))
            .collect();
        assert_eq!(Events::new(&many, &fresh).declared.len(), SLOTS);
    }
}
