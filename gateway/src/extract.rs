//! Extractors whose rejections are problem+json (axum's own are plain text), and the
//! per-request context (actor, request id) every command's metadata is built from.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use emporium_event_store::EventMetadata;

use crate::auth::Actor;
use crate::error::ApiError;

/// `Json<T>` with problem+json rejections.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                // serde's message names the path and the problem ("lines[0].qty: invalid type").
                ApiError::Validation(vec![crate::error::FieldError::new(
                    "",
                    std::error::Error::source(&e)
                        .map(ToString::to_string)
                        .unwrap_or_else(|| e.body_text()),
                )])
            }
            JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(format!(
                "body is not valid JSON: {}",
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.body_text())
            )),
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "send the body as `Content-Type: application/json`".into(),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge(format!(
                    "the body exceeds the limit of {} bytes",
                    crate::app::BODY_LIMIT
                ))
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

/// `Path<T>` with problem+json rejections.
#[derive(Debug, FromRequestParts)]
#[from_request(via(Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadRequest(format!("invalid path: {}", r.body_text()))
    }
}

/// `Query<T>` with problem+json rejections.
#[derive(Debug, FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::Validation(vec![crate::error::FieldError::new("query", r.body_text())])
    }
}

/// Who is asking and under which request id: the seed of every event's metadata.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub actor: Actor,
    pub request_id: String,
    /// `X-Correlation-Id` from the client, joining this request to a flow it tracks.
    pub correlation_id: Option<String>,
    /// The request's `Idempotency-Key`, if any, and whether this run must first check
    /// that its command was not applied already.
    pub idempotency: Option<crate::idempotency::Mark>,
}

impl RequestContext {
    pub fn metadata(&self) -> EventMetadata {
        let mut m = EventMetadata::for_request(self.actor.key_id.clone(), self.request_id.clone());
        if let Some(c) = &self.correlation_id {
            m = m.correlated_with(c.clone());
        }
        if let Some(mark) = &self.idempotency {
            m = m.with_idempotency_key(mark.key.clone());
        }
        m
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let actor = parts
            .extensions
            .get::<Actor>()
            .cloned()
            .ok_or(ApiError::Unauthorized)?;
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| crate::app::acceptable_client_id(v.as_bytes()))
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let correlation_id = parts
            .headers
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| crate::app::acceptable_client_id(v.as_bytes()))
            .map(str::to_string);
        let idempotency = parts.extensions.get::<crate::idempotency::Mark>().cloned();
        Ok(Self {
            actor,
            request_id,
            correlation_id,
            idempotency,
        })
    }
}
