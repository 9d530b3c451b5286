//! The metric gates' queries: PromQL templates checked when a plan is started, filled in per
//! version and interval, and asked of Prometheus's HTTP API (`/api/v1/query` at the
//! interval's end).
//!
//! What counts as an answer: one number per version. A failed query, an error from
//! Prometheus, an empty result, several series, or a value that is not finite is no answer,
//! and the interval is no evidence either way — except an event query that finds no series
//! while its exposure query answers: counters with a version label often appear only at
//! their first event, so that is 0 events.

use std::time::Duration;

use grayline_rollout::Plan;
use grayline_rollout::gate::Reading;
use grayline_rollout::plan::{MetricGate, fill};
use grayline_routing::{FieldError, Invalid};
use serde::Deserialize;

pub use grayline_rollout::view::{MetricPreview as Preview, PreviewPoint};

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// An interval is queried this many seconds after it ends, so its last scrapes have landed.
pub const SETTLE_SECONDS: i64 = 2;

/// Asks Prometheus.
#[derive(Clone, Debug)]
pub struct Prometheus {
    client: reqwest::Client,
    /// The server's `--prometheus-url`, for plans that name none.
    default_url: Option<String>,
}

impl Prometheus {
    pub fn new(default_url: Option<String>) -> anyhow::Result<Prometheus> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("grayline-server/", env!("CARGO_PKG_VERSION")))
            .timeout(QUERY_TIMEOUT)
            .build()?;
        Ok(Prometheus {
            client,
            default_url: default_url.map(|u| u.trim_end_matches('/').to_string()),
        })
    }

    /// Where `plan`'s queries go.
    pub fn url_for<'a>(&'a self, plan: &'a Plan) -> Option<&'a str> {
        plan.prometheus_url
            .as_deref()
            .or(self.default_url.as_deref())
    }

    /// Checks what [`Plan::check`] cannot: that every metric gate's queries parse as PromQL
    /// with an instant answer once filled in, and that there is a Prometheus to ask. Field
    /// paths are relative to the plan.
    pub fn check(&self, plan: &Plan) -> Result<(), Invalid> {
        let mut errors = Vec::new();
        if !plan.gates.metrics.is_empty() && self.url_for(plan).is_none() {
            errors.push(FieldError::new(
                "prometheus_url",
                "the plan has metric gates but names no Prometheus, and the server was started \
                 without --prometheus-url",
            ));
        }
        for (i, g) in plan.gates.metrics.iter().enumerate() {
            let queries = [("query", Some(&g.query)), ("exposure", g.exposure.as_ref())];
            for (field, template) in queries {
                let Some(template) = template else { continue };
                let query = fill(template, &plan.service, &plan.canary, g.interval_seconds);
                if let Err(e) = check_promql(&query) {
                    errors.push(FieldError::new(format!("gates.metrics[{i}].{field}"), e));
                }
            }
        }
        Invalid::check(errors)
    }

    /// Refuses metric gates whose interval is shorter than every scrape interval of the
    /// plan's Prometheus (an `increase` over it would never find two scrapes). Best effort:
    /// a Prometheus that cannot be asked now refuses nothing (the rollout pauses on no data
    /// instead).
    pub async fn check_intervals(&self, plan: &Plan) -> Result<(), Invalid> {
        let Some(url) = self
            .url_for(plan)
            .filter(|_| !plan.gates.metrics.is_empty())
        else {
            return Ok(());
        };
        let Ok(Ok(Some(shortest))) =
            tokio::time::timeout(Duration::from_secs(2), self.shortest_scrape(url)).await
        else {
            return Ok(());
        };
        let errors = plan
            .gates
            .metrics
            .iter()
            .enumerate()
            .filter(|(_, g)| u64::from(g.interval_seconds) * 1000 < shortest)
            .map(|(i, g)| {
                FieldError::new(
                    format!("gates.metrics[{i}].interval_seconds"),
                    format!(
                        "{} s is shorter than every scrape interval of the Prometheus at {url} \
                         (the shortest is {} s): its queries would find no two scrapes in an \
                         interval",
                        g.interval_seconds,
                        shortest as f64 / 1000.0
                    ),
                )
            })
            .collect();
        Invalid::check(errors)
    }

    /// The shortest scrape interval of Prometheus's configuration (global and per job), in
    /// milliseconds.
    async fn shortest_scrape(&self, url: &str) -> Result<Option<u64>, String> {
        let answer = self
            .client
            .get(format!("{url}/api/v1/status/config"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: serde_json::Value = answer.json().await.map_err(|e| e.to_string())?;
        let yaml = body["data"]["yaml"].as_str().unwrap_or_default();
        Ok(shortest_scrape_interval(yaml))
    }

    /// Both versions' readings of gate `g` for the interval ending at `end_unix_s`, or why
    /// there are none.
    pub async fn interval(
        &self,
        url: &str,
        service: &str,
        (canary, baseline): (&str, &str),
        g: &MetricGate,
        end_unix_s: i64,
    ) -> Result<(Reading, Reading), String> {
        let (c, b) = tokio::join!(
            self.reading(url, service, canary, g, end_unix_s),
            self.reading(url, service, baseline, g, end_unix_s)
        );
        let c = c.map_err(|e| format!("canary {canary}: {e}"))?;
        let b = b.map_err(|e| format!("baseline {baseline}: {e}"))?;
        Ok((c, b))
    }

    /// One version's reading.
    async fn reading(
        &self,
        url: &str,
        service: &str,
        version: &str,
        g: &MetricGate,
        end_unix_s: i64,
    ) -> Result<Reading, String> {
        let fill = |t: &str| fill(t, service, version, g.interval_seconds);
        let Some(exposure) = &g.exposure else {
            let value = self.value(url, &fill(&g.query), end_unix_s).await?;
            return value
                .map(Reading::Value)
                .ok_or_else(|| "the query found no series".to_string());
        };
        let (events, exposures) = (fill(&g.query), fill(exposure));
        let (events, exposures) = tokio::join!(
            self.value(url, &events, end_unix_s),
            self.value(url, &exposures, end_unix_s)
        );
        let exposures =
            exposures?.ok_or_else(|| "the exposure query found no series".to_string())?;
        // No series of events, with exposures: none happened yet.
        let events = events?.unwrap_or(0.0);
        Ok(Reading::Events { events, exposures })
    }

    /// Calls `/api/v1/{endpoint}` with `params`: its data, or what went wrong in words.
    async fn ask(
        &self,
        url: &str,
        endpoint: &str,
        params: &[(&str, String)],
    ) -> Result<Data, String> {
        let answer = self
            .client
            .get(format!("{url}/api/v1/{endpoint}"))
            .query(params)
            .send()
            .await
            .map_err(|e| format!("Prometheus at {url}: {}", super::webhook::root_cause(&e)))?;
        let status = answer.status();
        let body: Answer = answer
            .json()
            .await
            .map_err(|e| format!("Prometheus answered {status} that is not its API's JSON: {e}"))?;
        if body.status != "success" {
            return Err(format!(
                "Prometheus refused the query ({}): {}",
                body.error_type.unwrap_or_default(),
                body.error.unwrap_or_default()
            ));
        }
        body.data
            .ok_or_else(|| "Prometheus answered without data".to_string())
    }

    /// The one number `query` answers at `time`: `None` when it finds no series.
    async fn value(&self, url: &str, query: &str, time: i64) -> Result<Option<f64>, String> {
        let params = [("query", query.to_string()), ("time", time.to_string())];
        let data = self.ask(url, "query", &params).await?;
        let value = match data {
            Data::Scalar(v) => v.1,
            Data::Vector(series) => match one_series(series)? {
                None => return Ok(None),
                Some(one) => one.value.1,
            },
            Data::Matrix(_) | Data::Other => {
                return Err("the query's answer is not a number".into());
            }
        };
        let v: f64 = value
            .parse()
            .map_err(|_| format!("`{value}` is not a number"))?;
        if v.is_finite() {
            Ok(Some(v))
        } else {
            Err(format!("the query answered {value}"))
        }
    }
}

/// Minutes of history a preview shows.
pub const PREVIEW_SECONDS: i64 = 3600;
/// One point per this many seconds (and the queries' `{{interval}}`).
pub const PREVIEW_STEP_SECONDS: u32 = 60;

/// A preview's points: every step of the hour ending at `end`, each version's value at that
/// time where it has one (metric gates and event gates alike).
pub fn preview_points(
    end: i64,
    canary: &std::collections::BTreeMap<i64, f64>,
    baseline: &std::collections::BTreeMap<i64, f64>,
) -> Vec<PreviewPoint> {
    let step = i64::from(PREVIEW_STEP_SECONDS);
    (0..=PREVIEW_SECONDS / step)
        .map(|i| end - PREVIEW_SECONDS + i * step)
        .map(|t| PreviewPoint {
            time_unix_s: t,
            canary: canary.get(&t).copied(),
            baseline: baseline.get(&t).copied(),
        })
        .collect()
}

impl Prometheus {
    /// The last hour of `g` for `canary` and `baseline`, ending at `now_unix_s`.
    pub async fn preview(
        &self,
        url: &str,
        service: &str,
        (canary, baseline): (&str, &str),
        g: &MetricGate,
        now_unix_s: i64,
    ) -> Result<Preview, String> {
        let step = PREVIEW_STEP_SECONDS;
        // The last point is the last whole minute whose scrapes have landed.
        let end = now_unix_s - SETTLE_SECONDS;
        let queries = |version: &str| {
            std::iter::once(&g.query)
                .chain(g.exposure.as_ref())
                .map(|t| fill(t, service, version, step))
                .collect::<Vec<_>>()
        };
        let (cq, bq) = (queries(canary), queries(baseline));
        let (c, b) = tokio::join!(
            self.series(url, &cq, end, step),
            self.series(url, &bq, end, step)
        );
        let (c, b) = (
            c.map_err(|e| format!("canary {canary}: {e}"))?,
            b.map_err(|e| format!("baseline {baseline}: {e}"))?,
        );
        let points = preview_points(end, &c, &b);
        Ok(Preview {
            gate: g.name.clone(),
            canary: canary.to_string(),
            baseline: baseline.to_string(),
            step_seconds: step,
            points,
            canary_queries: cq,
            baseline_queries: bq,
        })
    }

    /// One version's points by time: the query's values, or events over exposures.
    async fn series(
        &self,
        url: &str,
        queries: &[String],
        end: i64,
        step: u32,
    ) -> Result<std::collections::BTreeMap<i64, f64>, String> {
        let values = self.range(url, &queries[0], end, step).await?;
        let Some(exposure) = queries.get(1) else {
            return Ok(values);
        };
        let exposures = self.range(url, exposure, end, step).await?;
        Ok(exposures
            .into_iter()
            .filter(|(_, x)| *x > 0.0)
            .map(|(t, x)| (t, values.get(&t).copied().unwrap_or(0.0) / x))
            .collect())
    }

    /// `query` over the hour before `end`, a point per `step`.
    async fn range(
        &self,
        url: &str,
        query: &str,
        end: i64,
        step: u32,
    ) -> Result<std::collections::BTreeMap<i64, f64>, String> {
        let params = [
            ("query", query.to_string()),
            ("start", (end - PREVIEW_SECONDS).to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ];
        let data = self.ask(url, "query_range", &params).await?;
        let Data::Matrix(series) = data else {
            return Err("the query's answer is not a series of numbers".into());
        };
        Ok(one_series(series)?.map_or_else(Default::default, |one| {
            one.values
                .iter()
                .filter_map(|(t, v)| {
                    Some((*t as i64, v.parse::<f64>().ok().filter(|v| v.is_finite())?))
                })
                .collect()
        }))
    }
}

/// The one series a metric query may answer per version: `None` for none, an error for
/// several.
fn one_series<T>(mut series: Vec<T>) -> Result<Option<T>, String> {
    match series.len() {
        0 | 1 => Ok(series.pop()),
        n => Err(format!(
            "the query returned {n} series; aggregate it to one number per version (sum(...))"
        )),
    }
}

/// The shortest `scrape_interval` in a Prometheus configuration (global, else its default
/// of 1 m, and each scrape job's), in milliseconds; `None` when it does not parse.
fn shortest_scrape_interval(yaml: &str) -> Option<u64> {
    let doc = yaml_rust2::YamlLoader::load_from_str(yaml)
        .ok()?
        .into_iter()
        .next()?;
    let global = doc["global"]["scrape_interval"]
        .as_str()
        .map_or(Some(60_000), duration_ms)?;
    let jobs = doc["scrape_configs"].as_vec().cloned().unwrap_or_default();
    let per_job = jobs
        .iter()
        .filter_map(|j| j["scrape_interval"].as_str().and_then(duration_ms));
    per_job.chain(std::iter::once(global)).min()
}

/// A Prometheus duration (`15s`, `1m30s`, `500ms`) in milliseconds.
fn duration_ms(text: &str) -> Option<u64> {
    let units = [
        ("ms", 1),
        ("s", 1000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
        ("w", 604_800_000),
        ("y", 31_536_000_000),
    ];
    let mut rest = text.trim();
    let mut total = 0u64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        let after = &rest[digits..];
        let (unit, factor) = units
            .iter()
            .filter(|(u, _)| after.starts_with(u))
            .max_by_key(|(u, _)| u.len())?;
        total = total.checked_add(n.checked_mul(*factor)?)?;
        rest = &after[unit.len()..];
    }
    (total > 0).then_some(total)
}

/// Parses `query` as PromQL that answers a number or an instant vector.
pub fn check_promql(query: &str) -> Result<(), String> {
    use promql_parser::parser::value::ValueType;
    let expr = promql_parser::parser::parse(query).map_err(|e| format!("not valid PromQL: {e}"))?;
    match expr.value_type() {
        ValueType::Vector | ValueType::Scalar => Ok(()),
        other => Err(format!(
            "answers a {other}, not a number per interval: wrap a range in a function such as \
             increase(...) or avg_over_time(...)"
        )),
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Scalar((f64, String)),
    Vector(Vec<Series>),
    Matrix(Vec<Range>),
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Series {
    value: (f64, String),
}

#[derive(Deserialize)]
struct Range {
    values: Vec<(f64, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_is_checked() {
        assert!(check_promql(r#"sum(increase(paid_total{version="v2"}[10s]))"#).is_ok());
        assert!(check_promql("1").is_ok());
        let e = check_promql(r#"sum(increase(paid_total{version="v2"}[10s])"#).unwrap_err();
        assert!(e.starts_with("not valid PromQL"), "{e}");
        let e = check_promql(r#"paid_total{version="v2"}[10s]"#).unwrap_err();
        assert!(e.contains("answers a matrix"), "{e}");
    }

    #[test]
    fn plans_need_a_prometheus_and_valid_queries() {
        let mut plan = Plan::through("shop", "v2", &[500]);
        plan.gates.metrics.push(MetricGate {
            name: "paid".into(),
            kind: grayline_rollout::plan::MetricKind::GoodEvents,
            query: r#"sum(increase(paid{v="{{version}}"}[{{interval}}])"#.into(),
            exposure: Some(r#"sum(increase(carts{v="{{version}}"}[{{interval}}]))"#.into()),
            interval_seconds: 10,
            tolerated_ratio: 1.2,
            min_difference: 0.0,
            detect: None,
            no_data_seconds: 60,
            mode: grayline_rollout::Mode::Enforce,
        });
        let fields = |p: &Prometheus, plan: &Plan| match p.check(plan) {
            Ok(()) => Vec::new(),
            Err(e) => e.errors.into_iter().map(|e| e.field).collect::<Vec<_>>(),
        };
        let none = Prometheus::new(None).unwrap();
        assert_eq!(
            fields(&none, &plan),
            ["prometheus_url", "gates.metrics[0].query"]
        );
        let some = Prometheus::new(Some("http://127.0.0.1:9090/".into())).unwrap();
        assert_eq!(fields(&some, &plan), ["gates.metrics[0].query"]);
        assert_eq!(some.url_for(&plan), Some("http://127.0.0.1:9090"));
        plan.gates.metrics[0].query.push(')');
        assert_eq!(fields(&some, &plan), Vec::<String>::new());
    }

    #[test]
    fn scrape_intervals() {
        assert_eq!(duration_ms("15s"), Some(15_000));
        assert_eq!(duration_ms("1m30s"), Some(90_000));
        assert_eq!(duration_ms("500ms"), Some(500));
        assert_eq!(duration_ms("soon"), None);
        let config = "global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: a\n  - job_name: b\n    scrape_interval: 5s\n";
        assert_eq!(shortest_scrape_interval(config), Some(5_000));
        assert_eq!(shortest_scrape_interval("scrape_configs: []"), Some(60_000));
    }

    #[test]
    fn answers_parse() {
        let a: Answer = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.5,"12.5"]}]}}"#,
        )
        .unwrap();
        assert!(matches!(a.data, Some(Data::Vector(v)) if v[0].value.1 == "12.5"));
        let a: Answer = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#,
        )
        .unwrap();
        assert!(matches!(a.data, Some(Data::Scalar((_, v))) if v == "3"));
        let a: Answer = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"1"],[1700000060,"2.5"]]}]}}"#,
        )
        .unwrap();
        assert!(matches!(a.data, Some(Data::Matrix(m)) if m[0].values[1].1 == "2.5"));
        let a: Answer = serde_json::from_str(
            r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
        )
        .unwrap();
        assert_eq!(a.error.as_deref(), Some("parse error"));
    }
}
