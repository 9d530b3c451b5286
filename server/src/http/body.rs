//! A JSON body extractor whose errors name the field that failed to parse
//! (`service.versions[0].timeout_ms: invalid value: integer `-5`, expected u32`), and that
//! answers an oversized body with 413 only after reading (a bounded amount of) the rest, so
//! the client gets to read the answer instead of a reset connection.

use axum::extract::{FromRequest, Request};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// How much of an oversized body is read and dropped before answering 413; beyond it the
/// connection is simply closed.
const DRAIN_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let mut body = req.into_body().into_data_stream();
        let mut bytes = Vec::new();
        let mut total = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::invalid("", format!("reading the body: {e}")))?;
            total += chunk.len();
            if total <= super::MAX_BODY_BYTES {
                bytes.extend_from_slice(&chunk);
            } else if total > super::MAX_BODY_BYTES + DRAIN_BYTES {
                break;
            }
        }
        if total > super::MAX_BODY_BYTES {
            return Err(ApiError::TooLarge(format!(
                "the request body is larger than {} KiB",
                super::MAX_BODY_BYTES / 1024
            )));
        }
        parse(&bytes).map(JsonBody)
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde reports a missing field at the object that lacks it; the field is the one
        // to name (`policy.rules[0].route`, as the gRPC side says).
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name);
        let field = match (path.as_str(), missing) {
            (".", None) => String::new(),
            (".", Some(name)) => name.to_string(),
            (_, Some(name)) => format!("{path}.{name}"),
            (_, None) => path,
        };
        ApiError::invalid(field, message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use grayline_routing::Service;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Wrapper {
        #[allow(dead_code)]
        service: Service,
    }

    #[test]
    fn errors_name_the_field() {
        let body = br#"{"service": {"name": "s", "stable": "v1",
            "versions": [{"name": "v1", "endpoints": ["h:1"], "timeout_ms": -5}]}}"#;
        let ApiError::Invalid(e) = parse::<Wrapper>(body).unwrap_err() else {
            panic!("not invalid")
        };
        assert_eq!(e.errors[0].field, "service.versions[0].timeout_ms");
        assert!(
            e.errors[0].message.contains("-5"),
            "{}",
            e.errors[0].message
        );

        let body = br#"{"service": {"name": "s", "stable": "v1", "versions": [],
            "policy": {"rules": [{"conditions": [{"os": {"family": "android", "bogus": 1}}],
            "route": {"version": "v1"}}]}}}"#;
        let ApiError::Invalid(e) = parse::<Wrapper>(body).unwrap_err() else {
            panic!("not invalid")
        };
        assert_eq!(
            e.errors[0].field,
            "service.policy.rules[0].conditions[0].os.bogus"
        );

        // A missing field is named itself, not the object that lacks it.
        let body = br#"{"service": {"name": "s", "stable": "v1", "versions": [],
            "policy": {"rules": [{"conditions": []}]}}}"#;
        let ApiError::Invalid(e) = parse::<Wrapper>(body).unwrap_err() else {
            panic!("not invalid")
        };
        assert_eq!(e.errors[0].field, "service.policy.rules[0].route");
        assert!(e.errors[0].message.contains("missing field `route`"), "{e}");
        let ApiError::Invalid(e) = parse::<Wrapper>(b"{}").unwrap_err() else {
            panic!("not invalid")
        };
        assert_eq!(e.errors[0].field, "service");

        let ApiError::Invalid(e) = parse::<Wrapper>(b"{").unwrap_err() else {
            panic!("not invalid")
        };
        assert!(e.errors[0].message.contains("EOF"), "{e}");
    }
}
