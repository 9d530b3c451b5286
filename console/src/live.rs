//! Live statistics: one WebSocket to `/api/v1/live` for the whole app, reconnecting when it
//! drops, keeping the last few minutes of per-second ticks for the dashboards.

use std::collections::VecDeque;

use futures::{SinkExt, StreamExt};
use gloo_net::websocket::Message;
use gloo_net::websocket::futures::WebSocket;
use grayline_routing::api::{Point, Tick};
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::session::Session;

/// Seconds of ticks kept.
pub const KEEP: usize = 300;

#[derive(Clone, Copy, Debug)]
pub struct Live {
    pub ticks: RwSignal<VecDeque<Tick>>,
    pub connected: RwSignal<bool>,
}

/// Requests per second and error share of one version over the last seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rate {
    pub rps: f64,
    /// 5xx among the version's answers (fallbacks are not its answers).
    pub error_percent: f64,
    /// Requests the proxies answered with the fallback instead of asking the version.
    pub fallback_percent: f64,
}

impl Live {
    pub fn get() -> Live {
        expect_context::<Live>()
    }

    /// Opens the socket once signed in and keeps it open.
    pub fn start(session: Session) -> Live {
        let live = Live {
            ticks: RwSignal::new(VecDeque::new()),
            connected: RwSignal::new(false),
        };
        spawn_local(async move {
            loop {
                match session.auth.get_untracked() {
                    Some(auth) => {
                        live.run(&auth.token).await;
                        live.connected.set(false);
                        // The server went away or refused: try again shortly.
                        gloo_timers::future::TimeoutFuture::new(2_000).await;
                    }
                    None => gloo_timers::future::TimeoutFuture::new(250).await,
                }
            }
        });
        live
    }

    async fn run(&self, token: &str) {
        let location = window().location();
        let host = location.host().unwrap_or_default();
        let scheme = if location.protocol().unwrap_or_default() == "https:" {
            "wss"
        } else {
            "ws"
        };
        let Ok(socket) = WebSocket::open(&format!("{scheme}://{host}/api/v1/live")) else {
            return;
        };
        let (mut write, mut read) = socket.split();
        let hello = serde_json::json!({ "token": token }).to_string();
        if write.send(Message::Text(hello)).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = read.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            match serde_json::from_str::<Tick>(&text) {
                Ok(tick) => {
                    self.connected.set(true);
                    self.ticks.update(|ticks| {
                        if ticks
                            .back()
                            .is_some_and(|t| t.time_unix_s >= tick.time_unix_s)
                        {
                            return;
                        }
                        ticks.push_back(tick);
                        while ticks.len() > KEEP {
                            ticks.pop_front();
                        }
                    });
                }
                Err(_) => return, // an error message: the server closes the socket next
            }
        }
    }

    /// The per-second points of one version's live traffic in the kept ticks, oldest first.
    pub fn points(&self, service: &str, version: &str) -> Vec<Point> {
        self.points_of(service, version, false)
    }

    /// The same for the mirrored copies the version received.
    pub fn mirrored_points(&self, service: &str, version: &str) -> Vec<Point> {
        self.points_of(service, version, true)
    }

    fn points_of(&self, service: &str, version: &str, mirrored: bool) -> Vec<Point> {
        self.ticks.with(|ticks| {
            ticks
                .iter()
                .map(|t| {
                    t.series
                        .iter()
                        .find(|s| {
                            s.service == service && s.version == version && s.mirrored == mirrored
                        })
                        .and_then(|s| s.points.first().cloned())
                        .unwrap_or(Point {
                            time_unix_s: t.time_unix_s,
                            ..Point::default()
                        })
                })
                .collect()
        })
    }

    /// Every version's average rate over the last `seconds` ticks, in one pass: for pages
    /// that rank thousands of services (one `rate` per version would scan every series of
    /// every tick for each).
    pub fn rates(&self, seconds: usize) -> std::collections::HashMap<(String, String), Rate> {
        self.ticks.with(|ticks| {
            let mut points: std::collections::HashMap<(String, String), Vec<Point>> =
                std::collections::HashMap::new();
            for t in ticks.iter().skip(ticks.len().saturating_sub(seconds)) {
                for s in t.series.iter().filter(|s| !s.mirrored) {
                    if let Some(p) = s.points.first() {
                        points
                            .entry((s.service.clone(), s.version.clone()))
                            .or_default()
                            .push(p.clone());
                    }
                }
            }
            points
                .into_iter()
                .map(|(k, p)| (k, Self::rate_of(&p, seconds)))
                .collect()
        })
    }

    /// Average rate of the live traffic over the last `seconds` ticks.
    pub fn rate(&self, service: &str, version: &str, seconds: usize) -> Rate {
        Self::rate_of(&self.points(service, version), seconds)
    }

    /// Average rate of the mirrored copies over the last `seconds` ticks.
    pub fn mirrored_rate(&self, service: &str, version: &str, seconds: usize) -> Rate {
        Self::rate_of(&self.mirrored_points(service, version), seconds)
    }

    fn rate_of(points: &[Point], seconds: usize) -> Rate {
        let recent = &points[points.len().saturating_sub(seconds)..];
        if recent.is_empty() {
            return Rate::default();
        }
        let requests: u64 = recent.iter().map(|p| p.requests).sum();
        let answered: u64 = recent.iter().map(Point::answered).sum();
        let errors: u64 = recent.iter().map(|p| p.status_5xx).sum();
        let share = |part: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                part as f64 * 100.0 / of as f64
            }
        };
        Rate {
            rps: requests as f64 / recent.len() as f64,
            error_percent: share(errors, answered),
            fallback_percent: share(requests - answered, requests),
        }
    }
}
