//! `/v1/projects/{p}/tokens` and `/v1/tokens`: minting, listing and revoking
//! tokens. A manage token deals only in tokens no wider than itself; the
//! others are answered as absent.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::projects::set_location;
use super::request::json_body;
use super::views::{Duration, MintedToken, Role as RoleName, TokenList};
use super::{Ctx, json, views};
use crate::domain::{
    Digest, ImportedDigest, Prefix, ProjectId, Role, Timestamp, TokenId, TokenRecord, TokenSecret,
    TokenSource, parse_duration_json,
};
use crate::store::{CatalogWrite, TokenScope};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewProjectToken {
    #[schema(value_type = RoleName)]
    role: Role,
    /// Keys the token covers: those that start with it (bytes).
    prefix: Option<String>,
    name: Option<String>,
    #[schema(value_type = Option<Duration>)]
    expires_in: Option<serde_json::Value>,
    /// A key's digest from another server: the token is imported.
    imported_digest: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewAdminToken {
    name: Option<String>,
    #[schema(value_type = Option<Duration>)]
    expires_in: Option<serde_json::Value>,
    /// A key's digest from another server: `pbkdf2_sha256$<iterations>$<salt>$<hash>`.
    imported_digest: Option<String>,
}

/// The imported digest of a request, checked; 400 when malformed.
fn imported_digest(text: Option<&str>) -> Result<Option<ImportedDigest>, ApiError> {
    text.map(|text| {
        ImportedDigest::parse(text)
            .map_err(|error| ApiError::bad_request(format!("imported_digest: {error}")))
    })
    .transpose()
}

/// Stores an imported token: its record with a random digest that no
/// secret matches, until its key is first presented (see
/// `http::imported`). Answers the Token, without a secret.
async fn import(
    ctx: &Ctx<'_>,
    mut record: TokenRecord,
    digest: ImportedDigest,
    location: String,
) -> Result<Response, ApiError> {
    record.digest = Digest::random().map_err(|error| {
        tracing::error!(%error, "no random bytes for a token");
        ApiError::internal()
    })?;
    record.source = TokenSource::Import;
    ctx.write_catalog(CatalogWrite::ImportToken {
        token: record.clone(),
        digest,
    })
    .await?;
    let mut response = json(StatusCode::CREATED, views::minted(&record, None));
    set_location(&mut response, &location);
    Ok(response)
}

/// A new token record and its secret (shown once, never stored).
pub fn mint(
    role: Role,
    project: Option<ProjectId>,
    prefix: Option<String>,
    name: Option<String>,
    expires_in: Option<u64>,
    source: TokenSource,
) -> Result<(TokenRecord, TokenSecret), ApiError> {
    let randomness = |error| {
        tracing::error!(%error, "no random bytes for a token");
        ApiError::internal()
    };
    let secret = TokenSecret::generate().map_err(randomness)?;
    let now = Timestamp::now();
    let record = TokenRecord {
        id: TokenId::generate().map_err(randomness)?,
        digest: secret.digest(),
        role,
        project,
        prefix,
        name,
        created_at: now,
        expires_at: expires_in.map(|seconds| now.plus_seconds(seconds)),
        source,
    };
    Ok((record, secret))
}

fn expires_in(value: Option<&serde_json::Value>) -> Result<Option<u64>, ApiError> {
    value
        .map(|v| {
            parse_duration_json(v).map_err(|e| ApiError::bad_request(format!("expires_in: {e}")))
        })
        .transpose()
}

fn created(record: &TokenRecord, secret: &TokenSecret, location: String) -> Response {
    let mut response = json(StatusCode::CREATED, views::minted(record, Some(secret)));
    set_location(&mut response, &location);
    response
}

#[utoipa::path(
    post,
    path = "/v1/projects/{project}/tokens",
    summary = "Create a project token",
    tag = "tokens",
    description = "Admin or manage; a manage token mints no token wider than itself",
    params(("project" = String, Path, description = "The project id")),
    request_body = NewProjectToken,
    responses(
        (status = 201, description = "The new token, its secret shown once", body = MintedToken,
            headers(("Location" = String, description = "The token's URL"))),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "Not a JSON body", body = ErrorBody),
        (status = 507, description = "The disk is full", body = ErrorBody),
    ),
)]
pub async fn create_for_project(
    ctx: &Ctx<'_>,
    raw_id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let project = ctx.caller.project(&ctx.catalog, raw_id)?;
    ctx.caller.require_role(Role::Manage)?;
    let request: NewProjectToken = json_body(headers, body).await?;
    if request.role == Role::Admin {
        return Err(ApiError::bad_request(
            "a project token is read, write or manage; admin tokens are made at /v1/tokens",
        ));
    }
    if let Some(prefix) = &request.prefix {
        Prefix::parse(prefix.as_str())?;
    }
    let prefix = request.prefix.filter(|p| !p.is_empty());
    let expires = expires_in(request.expires_in.as_ref())?;
    let imported = imported_digest(request.imported_digest.as_deref())?;
    if imported.is_some() && !ctx.caller.is_admin() {
        return Err(ApiError::forbidden(
            "only an admin token can import a token",
        ));
    }
    let id = project.settings.id.clone();
    let (record, secret) = mint(
        request.role,
        Some(id.clone()),
        prefix,
        request.name,
        expires,
        TokenSource::V1,
    )?;
    if !ctx.caller.reaches(&record) {
        return Err(ApiError::forbidden(
            "a manage token cannot mint a token wider than itself \
             (a higher role, a wider prefix or a later expiry)",
        ));
    }
    let location = format!("/v1/projects/{id}/tokens/{}", record.id.as_str());
    if let Some(digest) = imported {
        return import(ctx, record, digest, location).await;
    }
    ctx.write_catalog(CatalogWrite::CreateToken(record.clone()))
        .await?;
    Ok(created(&record, &secret, location))
}

#[utoipa::path(
    get,
    path = "/v1/projects/{project}/tokens",
    summary = "List a project's tokens",
    tag = "tokens",
    description = "Admin or manage (those no wider than the caller)",
    params(("project" = String, Path, description = "The project id")),
    responses((status = 200, description = "The project's tokens", body = TokenList)),
)]
pub fn list_for_project(ctx: &Ctx<'_>, raw_id: &str) -> Result<Response, ApiError> {
    let project = ctx.caller.project(&ctx.catalog, raw_id)?;
    ctx.caller.require_role(Role::Manage)?;
    let tokens: Vec<_> = ctx
        .catalog
        .tokens()
        .into_iter()
        .filter(|t| t.project.as_ref() == Some(&project.settings.id))
        .filter(|t| ctx.caller.reaches(t))
        .map(|t| views::token(t))
        .collect();
    Ok(json(StatusCode::OK, TokenList { tokens }))
}

#[utoipa::path(
    delete,
    path = "/v1/projects/{project}/tokens/{id}",
    summary = "Revoke a project token",
    tag = "tokens",
    description = "Admin or manage",
    params(("project" = String, Path, description = "The project id"), ("id" = String, Path, description = "The token id")),
    responses((status = 204, description = "Revoked")),
)]
pub async fn delete_for_project(
    ctx: &Ctx<'_>,
    raw_id: &str,
    token_id: &str,
) -> Result<Response, ApiError> {
    let project = ctx.caller.project(&ctx.catalog, raw_id)?;
    ctx.caller.require_role(Role::Manage)?;
    let id = TokenId::from_path(token_id);
    let visible = ctx
        .catalog
        .token_by_id(&id)
        .is_some_and(|t| t.project.as_ref() == Some(&project.settings.id) && ctx.caller.reaches(t));
    if !visible {
        return Err(ApiError::token_not_found());
    }
    let scope = TokenScope::Project(project.settings.id.clone());
    ctx.write_catalog(CatalogWrite::DeleteToken { id, scope })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    post,
    path = "/v1/tokens",
    summary = "Create an admin token",
    tag = "tokens",
    description = "Admin",
    request_body = NewAdminToken,
    responses(
        (status = 201, description = "The new admin token, its secret shown once", body = MintedToken,
            headers(("Location" = String, description = "The token's URL"))),
        (status = 400, description = "Malformed input", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "Not a JSON body", body = ErrorBody),
        (status = 507, description = "The disk is full", body = ErrorBody),
    ),
)]
pub async fn create_admin(
    ctx: &Ctx<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    ctx.caller.require_admin()?;
    let request: NewAdminToken = json_body(headers, body).await?;
    let expires = expires_in(request.expires_in.as_ref())?;
    let imported = imported_digest(request.imported_digest.as_deref())?;
    let (record, secret) = mint(
        Role::Admin,
        None,
        None,
        request.name,
        expires,
        TokenSource::V1,
    )?;
    let location = format!("/v1/tokens/{}", record.id.as_str());
    if let Some(digest) = imported {
        return import(ctx, record, digest, location).await;
    }
    ctx.write_catalog(CatalogWrite::CreateToken(record.clone()))
        .await?;
    Ok(created(&record, &secret, location))
}

#[utoipa::path(
    get,
    path = "/v1/tokens",
    summary = "List admin tokens",
    tag = "tokens",
    description = "Admin",
    responses((status = 200, description = "The admin tokens", body = TokenList)),
)]
pub fn list_admin(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    ctx.caller.require_admin()?;
    let tokens: Vec<_> = ctx
        .catalog
        .tokens()
        .into_iter()
        .filter(|t| t.role == Role::Admin)
        .map(|t| views::token(t))
        .collect();
    Ok(json(StatusCode::OK, TokenList { tokens }))
}

#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    summary = "Revoke an admin token",
    tag = "tokens",
    description = "Admin; addresses admin tokens only",
    params(("id" = String, Path, description = "The token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 409, description = "The last admin token", body = ErrorBody),
    ),
)]
pub async fn delete_admin(ctx: &Ctx<'_>, token_id: &str) -> Result<Response, ApiError> {
    ctx.caller.require_admin()?;
    let id = TokenId::from_path(token_id);
    ctx.write_catalog(CatalogWrite::DeleteToken {
        id,
        scope: TokenScope::Admin,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
