//! `GET /problems/{problemType}`: what a kind of problem means, at the
//! `type` its problem documents carry.

use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, get, web};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use crate::error::{ApiError, ProblemType};

/// The `{problemType}` of `/problems/{problemType}`, documented as one of
/// the kinds' slugs.
#[derive(Deserialize)]
pub struct ProblemTypePath(String);

impl IntoParams for ProblemTypePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let slugs = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ProblemType::ALL.iter().map(|kind| kind.slug())));
        vec![
            ParameterBuilder::new()
                .name("problemType")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The last segment of a problem's `type`"))
                .schema(Some(slugs))
                .build(),
        ]
    }
}

/// Describe a kind of problem.
///
/// A problem document's `type` (such as `/problems/last-admin`) names its
/// kind; this is what the kind means and what to do about it, as plain
/// text.
#[utoipa::path(
    tag = "problems",
    params(ProblemTypePath),
    responses(
        (status = 200, description = "The kind's title, status and description", content_type = "text/plain", body = String,
            example = json!("409 It would leave no admin\n\nThe change would leave no live ADMIN. Promote another user first, then demote this one. Nothing was changed.\n")),
        (status = 404, description = "No such kind of problem", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[get("/problems/{problemType}")]
pub async fn get_problem_type(path: web::Path<ProblemTypePath>) -> Result<HttpResponse, ApiError> {
    let kind = ProblemType::from_slug(&path.0)
        .ok_or_else(|| ApiError::NotFound("no such kind of problem".into()))?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body(format!(
            "{} {}\n\n{}\n",
            kind.status().as_u16(),
            kind.title(),
            kind.description()
        )))
}
