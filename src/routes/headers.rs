//! Response headers every answer carries: `X-Content-Type-Options: nosniff`
//! everywhere, `Cache-Control: no-store` on the admin API (its answers carry
//! emails), and a Content-Security-Policy that lets Swagger UI load only its
//! own files and never be framed.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;

/// Swagger UI's own scripts, styles (React sets inline `style` attributes)
/// and icons (`data:` SVGs in its CSS), the document from this origin, and
/// no framing.
const SWAGGER_UI_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The API answers JSON only: nothing in it is a document to run or frame.
const API_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

pub async fn security_headers(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let path = request.path().to_owned();
    let mut response = next.call(request).await?;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let policy = if path.starts_with("/swagger-ui") {
        SWAGGER_UI_POLICY
    } else {
        API_POLICY
    };
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    if path.starts_with("/api/admin") {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}
