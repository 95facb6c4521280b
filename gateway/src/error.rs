//! One error type for every route, rendered as RFC 9457 `application/problem+json`.
//!
//! Domain rejections map to 4xx with the rule that was broken; storage trouble maps to a
//! 503 or 500 whose body never carries database text (it is logged with the request id).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One invalid field: a JSON pointer into the request and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub pointer: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }
}

/// The problem document (RFC 9457).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The broken rule's code (`insufficient_stock`), stable for clients to branch on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Every way a request can fail.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the body is not JSON, or the request is otherwise unreadable.
    BadRequest(String),
    /// 401: no or unknown API key.
    Unauthorized,
    /// 403: the key's role may not call this route, or the resource is not the caller's.
    Forbidden(String),
    /// 404: the addressed resource does not exist.
    NotFound(String),
    /// 409: a business rule refused the command in the resource's current state.
    Conflict { code: &'static str, detail: String },
    /// 413: the body is larger than the limit.
    PayloadTooLarge(String),
    /// 415: not `application/json`.
    UnsupportedMediaType(String),
    /// 422: well-formed JSON with invalid fields.
    Validation(Vec<FieldError>),
    /// 422: a rule about the request's content (not the resource's state).
    Unprocessable { code: &'static str, detail: String },
    /// 429: the key's rate limit is exceeded.
    TooManyRequests(String),
    /// 503: the server sheds load; retry after a moment.
    Overloaded,
    /// 504: the request took longer than the configured timeout.
    Timeout,
    /// 503: the event store cannot be reached or stayed contended; retry later.
    Unavailable(String),
    /// 500: a defect. The detail is logged, not sent.
    Internal(String),
}

impl ApiError {
    pub fn conflict(code: &'static str, detail: impl ToString) -> Self {
        Self::Conflict {
            code,
            detail: detail.to_string(),
        }
    }

    pub fn unprocessable(code: &'static str, detail: impl ToString) -> Self {
        Self::Unprocessable {
            code,
            detail: detail.to_string(),
        }
    }

    pub fn field(pointer: &str, detail: impl ToString) -> Self {
        Self::Validation(vec![FieldError::new(pointer, detail.to_string())])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) | Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn problem(&self) -> Problem {
        let status = self.status();
        let (slug, title, detail, errors, code) = match self {
            Self::BadRequest(d) => ("bad-request", "Malformed request", d.clone(), vec![], None),
            Self::Unauthorized => (
                "unauthorized",
                "Authentication required",
                "send `Authorization: Bearer <api key>`".to_string(),
                vec![],
                None,
            ),
            Self::Forbidden(d) => ("forbidden", "Forbidden", d.clone(), vec![], None),
            Self::NotFound(d) => ("not-found", "Not found", d.clone(), vec![], None),
            Self::TooManyRequests(d) => {
                ("rate-limited", "Too many requests", d.clone(), vec![], None)
            }
            Self::Overloaded => (
                "overloaded",
                "Overloaded",
                "the server is at its command concurrency limit; retry shortly".to_string(),
                vec![],
                None,
            ),
            Self::Timeout => (
                "timeout",
                "Request timed out",
                "the request took too long; a command may or may not have been applied \
                 (retry with the same Idempotency-Key)"
                    .to_string(),
                vec![],
                None,
            ),
            Self::Conflict { code, detail } => (
                "conflict",
                "Refused in the current state",
                detail.clone(),
                vec![],
                Some(code.to_string()),
            ),
            Self::PayloadTooLarge(d) => (
                "payload-too-large",
                "Request body too large",
                d.clone(),
                vec![],
                None,
            ),
            Self::UnsupportedMediaType(d) => (
                "unsupported-media-type",
                "Unsupported media type",
                d.clone(),
                vec![],
                None,
            ),
            Self::Validation(errors) => (
                "validation",
                "Invalid request",
                format!(
                    "{} field(s) are invalid: {}",
                    errors.len(),
                    errors
                        .iter()
                        .map(|e| format!("{} {}", e.pointer, e.detail))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                errors.clone(),
                None,
            ),
            Self::Unprocessable { code, detail } => (
                "unprocessable",
                "Request refused",
                detail.clone(),
                vec![],
                Some(code.to_string()),
            ),
            Self::Unavailable(_) => (
                "unavailable",
                "Service unavailable",
                "the event store is unavailable or busy; retry later".to_string(),
                vec![],
                None,
            ),
            Self::Internal(_) => (
                "internal",
                "Internal error",
                "an unexpected error occurred; it has been logged".to_string(),
                vec![],
                None,
            ),
        };
        Problem {
            type_uri: format!("https://emporium.dev/problems/{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail,
            errors,
            code,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.problem();
        write!(f, "{} {}: {}", p.status, p.title, p.detail)
    }
}

impl From<emporium_event_store::StoreError> for ApiError {
    fn from(e: emporium_event_store::StoreError) -> Self {
        match e {
            emporium_event_store::StoreError::Database(ref db)
                if emporium_event_store::is_transient(db) =>
            {
                Self::Unavailable(e.to_string())
            }
            emporium_event_store::StoreError::Unavailable(_) => Self::Unavailable(e.to_string()),
            // No proof can be given against a digest the log no longer matches.
            emporium_event_store::StoreError::Tampered(_) => Self::conflict("log_tampered", e),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let mut response = (self.status(), axum::Json(&problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            Self::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Unavailable(_) | Self::Overloaded => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        // The private detail rides along for the logging layer, never in the body.
        if let Self::Internal(d) | Self::Unavailable(d) = self {
            response.extensions_mut().insert(InternalDetail(d));
        }
        response
    }
}

/// The problems any authenticated command route may answer, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum CommandProblems {
    /// The body is not JSON or a path parameter is malformed.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// No or unknown API key.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The key's role may not call this route (or the resource is another customer's).
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// The addressed resource does not exist.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// A business rule refused the command in the current state (`code` names it).
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// The body exceeds the size limit.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body is not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// Invalid fields (listed in `errors` as JSON pointers), or an Idempotency-Key reused with another body.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// The key's rate limit is exceeded; see Retry-After.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// Load shed or the event store is unavailable; see Retry-After.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
    /// The request exceeded the server's time limit.
    #[response(status = 504, content_type = "application/problem+json")]
    Timeout(Problem),
}

/// The problems any authenticated read route may answer, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ReadProblems {
    /// A path or query parameter is malformed.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// No or unknown API key.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The key's role may not call this route.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// The addressed resource does not exist.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Invalid query parameters.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// The key's rate limit is exceeded.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// The event store is unavailable.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The hidden cause of a 5xx, logged by the tracing layer with the request id.
#[derive(Debug, Clone)]
pub struct InternalDetail(pub String);
