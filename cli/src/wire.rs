//! The wire's messages as the model's types (through the proto crate's conversions), which
//! print as JSON and YAML the way the JSON API shows them; and times for people.

use grayline_proto::v1 as pb;
use grayline_routing::api::{HistoryEntry, ProxyStatus, SeriesView, ServiceRecord};

use crate::exit::{Code, Failure, Result};

fn unreadable(e: grayline_routing::Invalid) -> Failure {
    Failure::new(
        Code::Error,
        format!("the server sent something this client cannot read: {e}"),
    )
}

pub fn record(r: pb::ServiceRecord) -> Result<ServiceRecord> {
    ServiceRecord::try_from(r).map_err(unreadable)
}

pub fn entry(e: pb::HistoryEntry) -> Result<HistoryEntry> {
    HistoryEntry::try_from(e).map_err(unreadable)
}

pub fn proxy(p: pb::ProxyStatus) -> ProxyStatus {
    p.into()
}

pub fn series(s: pb::StatsSeries) -> SeriesView {
    s.into()
}

/// A time as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn time(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "—".into();
    }
    let secs = unix_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_as_utc() {
        assert_eq!(super::time(0), "—");
        assert_eq!(super::time(1_796_140_800_000), "2026-12-01 16:00:00");
        assert_eq!(super::time(951_782_400_000), "2000-02-29 00:00:00");
    }
}
