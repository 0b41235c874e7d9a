//! Reading request bodies: within a deadline, within a size limit, and (for
//! the admin API) only after the caller is authorized, as JSON objects.
//!
//! [`body_deadline`] gives every request's body `HTTP_BODY_TIMEOUT_SECS`
//! from the moment its headers arrived; a body still incomplete by then
//! ends in a 408, so a client trickling bytes cannot hold a connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage as _, mime};
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::AppState;
use crate::error::ApiError;

/// Largest JSON body the admin API accepts.
pub const JSON_LIMIT: usize = 256 * 1024;

/// What can go wrong reading a body, before anything is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit (413).
    TooLarge { limit: usize },
    /// Not complete within the deadline (408).
    TimedOut,
    /// The connection broke or the body was malformed on the wire (400).
    Broken,
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
            BodyError::TimedOut => ApiError::RequestTimeout,
            BodyError::Broken => ApiError::BadRequest("the request body could not be read".into()),
        }
    }
}

/// Middleware: puts the configured deadline on the request's body.
pub async fn body_deadline(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(timeout) = request
        .app_data::<web::Data<AppState>>()
        .map(|state| state.body_timeout)
    {
        let payload = request.take_payload();
        request.set_payload(Payload::Stream {
            payload: Box::pin(Deadline::new(payload, timeout)),
        });
    }
    next.call(request).await
}

/// A body stream that fails with [`io::ErrorKind::TimedOut`] once its
/// deadline has passed.
struct Deadline {
    inner: Payload,
    expired: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(inner: Payload, timeout: Duration) -> Self {
        Self {
            inner,
            expired: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        match self.expired.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(PayloadError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request body did not arrive in time",
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The whole body, at most `limit` bytes.
pub async fn read(payload: web::Payload, limit: usize) -> Result<Bytes, BodyError> {
    match payload.to_bytes_limited(limit).await {
        Err(_) => Err(BodyError::TooLarge { limit }),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => Err(match error.as_error::<PayloadError>() {
            Some(PayloadError::Io(error)) if error.kind() == io::ErrorKind::TimedOut => {
                BodyError::TimedOut
            }
            Some(PayloadError::Overflow) => BodyError::TooLarge { limit },
            _ => BodyError::Broken,
        }),
    }
}

/// A JSON body that must be an object, as every request body of the admin
/// API is (serde would otherwise read `["ADMIN"]` as `{"role":"ADMIN"}`).
/// Read only when called, so that handlers authorize the caller first.
pub async fn json_object<T: DeserializeOwned>(
    request: &actix_web::HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<T, ApiError> {
    let is_json = request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<mime::Mime>().ok())
        .is_some_and(|mime| mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON));
    if !is_json {
        return Err(ApiError::BadRequest(
            "expected a body of type application/json".into(),
        ));
    }
    let bytes = read(payload, limit).await?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::BadRequest(format!("malformed JSON body: {error}")))?;
    objects_only(&value)?;
    serde_json::from_value(value)
        .map_err(|error| ApiError::BadRequest(format!("malformed JSON body: {error}")))
}

/// The body must be an object, and so must every element of an array in
/// it: no request of this API holds an array of anything else, so a
/// sequence standing in for a struct is refused at every depth.
fn objects_only(value: &Value) -> Result<(), ApiError> {
    let Value::Object(fields) = value else {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    };
    fields.values().try_for_each(|field| match field {
        Value::Array(items) => items.iter().try_for_each(objects_only),
        Value::Object(_) => objects_only(field),
        _ => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_objects_stand_for_structs() {
        assert!(objects_only(&json!({"role": "ADMIN"})).is_ok());
        assert!(objects_only(&json!({"changes": [{"userId": "u", "role": "ADMIN"}]})).is_ok());
        assert!(objects_only(&json!(["ADMIN"])).is_err());
        assert!(objects_only(&json!("ADMIN")).is_err());
        assert!(objects_only(&json!({"changes": [["u", "ADMIN"]]})).is_err());
        assert!(
            objects_only(&json!({"changes": [{"userId": "u", "role": "ADMIN"}, ["v", "ADMIN"]]}))
                .is_err()
        );
    }
}
