//! Application events per version and minute for the last hour, with the requests they are
//! out of: what the wizard shows for an event gate before the rollout starts.
//!
//! Counted from the reports (on etcd, from the commits every replica counts), every answer
//! a version gave, not only the judged sample. A version is counted from its first event
//! on, so a service without events costs nothing here (and the minute of a version's first
//! event is partial). Kept in memory only: the per-second records on disk carry no events,
//! so a server started less than an hour ago shows the minutes since it started.

use std::collections::{BTreeMap, HashMap, VecDeque};

use grayline_proto::v1 as pb;

use super::{Key, RETENTION_SECS};

/// One minute of one version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Minute {
    /// Answers counted (every status, fallbacks too).
    pub requests: u64,
    /// Per event name.
    pub events: BTreeMap<String, u64>,
}

/// Every version's minutes, oldest first.
#[derive(Debug, Default)]
pub struct EventMinutes {
    versions: HashMap<Key, VecDeque<(i64, Minute)>>,
}

impl EventMinutes {
    /// Counts one version's numbers of second `t`: its answers, and each event it named;
    /// nothing for a version before its first event.
    pub fn add(&mut self, key: &Key, t: i64, requests: u64, events: &[pb::EventCount]) {
        let named = events.iter().any(|e| e.count > 0);
        let minute = t.div_euclid(60);
        let minutes = match self.versions.get_mut(key) {
            Some(m) => m,
            None if named => self.versions.entry(key.clone()).or_default(),
            None => return,
        };
        if requests == 0 && !named {
            return;
        }
        let slot = match minutes.iter().rposition(|(m, _)| *m <= minute) {
            Some(i) if minutes[i].0 == minute => &mut minutes[i].1,
            // A late report for a minute before the oldest kept, or between two kept.
            found => {
                let at = found.map_or(0, |i| i + 1);
                minutes.insert(at, (minute, Minute::default()));
                &mut minutes[at].1
            }
        };
        slot.requests += requests;
        for e in events.iter().filter(|e| e.count > 0) {
            match slot.events.get_mut(&e.name) {
                Some(n) => *n += e.count,
                None => {
                    slot.events.insert(e.name.clone(), e.count);
                }
            }
        }
        let oldest = minute - RETENTION_SECS / 60;
        while minutes.front().is_some_and(|(m, _)| *m < oldest) {
            minutes.pop_front();
        }
    }

    /// `event` of `key` per minute from `first` to `last` (minute numbers): answers and
    /// events, for the minutes with any answer.
    pub fn series(&self, key: &Key, event: &str, first: i64, last: i64) -> Vec<(i64, u64, u64)> {
        self.versions
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(m, _)| (first..=last).contains(m))
            .map(|(m, c)| (*m, c.requests, c.events.get(event).copied().unwrap_or(0)))
            .collect()
    }

    /// Forgets the versions with nothing in the last hour before `now`.
    pub fn prune(&mut self, now_unix_s: i64) {
        let oldest = (now_unix_s - RETENTION_SECS).div_euclid(60);
        self.versions
            .retain(|_, m| m.back().is_some_and(|(newest, _)| *newest >= oldest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, count: u64) -> pb::EventCount {
        pb::EventCount {
            name: name.into(),
            count,
            ..Default::default()
        }
    }

    #[test]
    fn minutes_add_up_keep_an_hour_and_take_late_reports() {
        let key: Key = ("shop".into(), "v1".into());
        let mut m = EventMinutes::default();
        let t0 = 1_700_000_040; // the minute's 40th second
        // Before its first event a version is not counted at all.
        m.add(&key, t0 - 120, 50, &[event("converted", 0)]);
        assert!(m.versions.is_empty());
        m.add(&key, t0, 10, &[event("converted", 3), event("conflict", 0)]);
        m.add(&key, t0 + 5, 10, &[event("converted", 1)]);
        m.add(&key, t0 + 60, 4, &[]);
        // Late: a report for the minute before the first.
        m.add(&key, t0 - 60, 2, &[event("converted", 2)]);
        let minute = t0.div_euclid(60);
        assert_eq!(
            m.series(&key, "converted", minute - 1, minute + 1),
            vec![(minute - 1, 2, 2), (minute, 20, 4), (minute + 1, 4, 0)]
        );
        assert_eq!(
            m.series(&key, "conflict", minute, minute),
            vec![(minute, 20, 0)]
        );
        // An hour later the first minutes are gone.
        m.add(&key, t0 + RETENTION_SECS, 1, &[]);
        let kept = m.series(&key, "converted", 0, i64::MAX);
        assert_eq!(kept.first().map(|p| p.0), Some(minute));
        m.prune(t0 + 3 * RETENTION_SECS);
        assert!(m.series(&key, "converted", 0, i64::MAX).is_empty());
    }
}
