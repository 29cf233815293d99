//! Errors as OpenAI writes them: `{"error":{"message","type","param","code"}}`, with the status
//! and the headers OpenAI's clients read to decide whether to retry.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// How long a client told to slow down (429 `rate_limit_exceeded`) waits before retrying.
pub const RETRY_AFTER_S: u64 = 1;

/// An error in OpenAI's shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code,
        }
    }
    pub fn invalid(param: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError {
            param,
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                message,
            )
        }
    }
    /// A parameter the gateway does not support (yet): 400 naming it.
    pub fn unsupported(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param),
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("unsupported_parameter"),
                message,
            )
        }
    }
    pub fn bad_key(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            message,
        )
    }
    pub fn model_not_found(model: &str) -> Self {
        ApiError {
            param: Some("model"),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
                format!("The model `{model}` does not exist on this chain"),
            )
        }
    }
    /// The key's spend limit (or the paying account) cannot cover the request. OpenAI answers
    /// 429 `insufficient_quota`; the response says not to retry (`x-should-retry: false`).
    pub fn quota(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            Some("insufficient_quota"),
            message,
        )
    }
    /// Too many requests in flight: 429 `rate_limit_exceeded`, retry after [`RETRY_AFTER_S`].
    pub fn busy(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            Some("rate_limit_exceeded"),
            message,
        )
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
            message,
        )
    }
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some(code),
            message,
        )
    }
    pub fn upstream(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            Some("upstream_error"),
            message,
        )
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            Some("timeout"),
            message,
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            message,
        )
    }
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        match self.code {
            // OpenAI's clients retry 429s unless told not to; a spent limit does not refill.
            Some("insufficient_quota") => {
                headers.insert("x-should-retry", HeaderValue::from_static("false"));
            }
            Some("rate_limit_exceeded") => {
                headers.insert("retry-after", HeaderValue::from(RETRY_AFTER_S));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_openai_shape() {
        let e = ApiError::model_not_found("nope");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let body = e.body();
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["param"], "model");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn quota_says_do_not_retry_and_busy_says_when() {
        let quota = ApiError::quota("spent").into_response();
        assert_eq!(quota.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(quota.headers()["x-should-retry"], "false");
        let busy = ApiError::busy("full").into_response();
        assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(busy.headers()["retry-after"], "1");
        assert!(busy.headers().get("x-should-retry").is_none());
    }
}
