//! `/api/v1/live`: a WebSocket that pushes one statistics tick per second. Browsers cannot
//! set headers on a WebSocket, so the first message authenticates:
//! `{"token": "<admin token>", "service": "<name or empty>"}`. A wrong token gets an error
//! message and close code 4401.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::AppState;

#[derive(Debug, Deserialize)]
struct Hello {
    token: String,
    #[serde(default)]
    service: String,
}

pub async fn live(ws: WebSocketUpgrade, State(state): State<Arc<AppState>>) -> Response {
    // The client only ever sends its hello.
    ws.max_message_size(64 * 1024)
        .on_upgrade(move |socket| session(socket, state))
}

async fn refuse(mut socket: WebSocket, code: u16, message: String) {
    let _ = socket
        .send(Message::Text(
            serde_json::json!({ "error": message }).to_string().into(),
        ))
        .await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: "refused".into(),
        })))
        .await;
}

async fn session(mut socket: WebSocket, state: Arc<AppState>) {
    let first = tokio::time::timeout(Duration::from_secs(10), socket.recv()).await;
    let hello: Hello = match first {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str(&text) {
            Ok(h) => h,
            Err(e) => {
                return refuse(
                    socket,
                    4400,
                    format!("the first message must be {{\"token\": …}}: {e}"),
                )
                .await;
            }
        },
        _ => {
            return refuse(
                socket,
                4400,
                "the first message must be {\"token\": …} within 10 s".into(),
            )
            .await;
        }
    };
    // Every role may watch.
    if let Err(message) = state
        .tokens
        .caller(Some(&format!("Bearer {}", hello.token)))
    {
        return refuse(socket, 4401, message).await;
    }
    let mut ticks = state.ops.stats.subscribe();
    loop {
        tokio::select! {
            tick = ticks.recv() => {
                let tick = match tick {
                    Ok(t) => t,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let mut tick = (*tick).clone();
                if !hello.service.is_empty() {
                    tick.series.retain(|s| s.service == hello.service);
                }
                let text = match serde_json::to_string(&tick) {
                    Ok(t) => t,
                    Err(_) => continue,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            () = state.shutdown.cancelled() => return,
        }
    }
}
