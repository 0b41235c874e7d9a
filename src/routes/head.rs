//! `HEAD` wherever `GET` works: the request is answered as a `GET`. The
//! HTTP/1 codec remembers that the request on the wire was a `HEAD`, so the
//! answer keeps its status and headers (its length included) and goes out
//! without its body.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

pub async fn head_as_get(
    mut request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if request.method() == Method::HEAD {
        request.head_mut().method = Method::GET;
    }
    next.call(request).await
}
