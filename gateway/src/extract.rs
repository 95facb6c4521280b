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

/// `Path<T>` with problem+json rejections. A segment holding a control character names no
/// resource and never reaches storage (PostgreSQL refuses NUL in text): 404.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let decoded = percent_encoding::percent_decode_str(parts.uri.path()).decode_utf8_lossy();
        if decoded.chars().any(char::is_control) {
            return Err(ApiError::NotFound(
                "a path with control characters names nothing".into(),
            ));
        }
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadRequest(format!("invalid path: {}", r.body_text()))
    }
}

/// `Query<T>` with problem+json rejections. No query value may hold a control character:
/// none is meaningful in a filter, and PostgreSQL refuses NUL in text.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let errors: Vec<_> = form_urlencoded::parse(query.as_bytes())
            .filter(|(_, value)| value.chars().any(char::is_control))
            .map(|(name, _)| {
                crate::error::FieldError::new(
                    format!("/{name}"),
                    "must not contain control characters",
                )
            })
            .collect();
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

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

/// Reads a JSON integer as JSON Schema defines one: any number without a fractional part,
/// so `273.0` is 273 (clients in languages with one number type send that). A fraction or a
/// value outside `i64` is refused.
pub fn integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct Whole;

    impl serde::de::Visitor<'_> for Whole {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            // i64::MAX as f64 rounds up to 2^63, which is out of range: hence `<`.
            if v.fract() == 0.0 && v >= i64::MIN as f64 && v < i64::MAX as f64 {
                #[allow(clippy::cast_possible_truncation)]
                Ok(v as i64)
            } else {
                Err(E::custom(format!("{v} is not an integer")))
            }
        }
    }

    d.deserialize_any(Whole)
}
