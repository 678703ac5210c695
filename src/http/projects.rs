//! `/v1/projects` and `/v1/projects/{p}`: creating, reading, changing and
//! deleting projects.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::request::json_body;
use super::views::{CreatedProject, ProjectList, ProjectView, Storage};
use super::{Ctx, json, views};
use crate::domain::{
    ProjectId, ProjectSettings, Public, Role, StorageMode, Timestamp, TokenSource,
};
use crate::store::{CatalogWrite, Project, ProjectChange};

/// The default limit on a value of a new project: 1 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 1 << 20;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewProject {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    id: String,
    /// Default `disk`.
    #[schema(value_type = Option<Storage>)]
    storage: Option<StorageMode>,
    /// Default true.
    keys_discoverable: Option<bool>,
    /// Default 1 MiB, or the server's ceiling when that is lower; at most
    /// the server's ceiling.
    max_value_bytes: Option<u64>,
    /// Default null: unlimited.
    max_keys: Option<u64>,
    /// Default `none`: what requests without any credential may do with
    /// the project's keys.
    #[schema(value_type = Option<views::Public>)]
    public: Option<Public>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Patch {
    /// Present only to refuse it with a clear message.
    #[schema(ignore)]
    id: Option<serde_json::Value>,
    /// Admin only: moves the data live.
    #[schema(value_type = Option<Storage>)]
    storage: Option<StorageMode>,
    keys_discoverable: Option<bool>,
    max_value_bytes: Option<u64>,
    /// `null`: unlimited.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    max_keys: Option<Option<u64>>,
    /// Admin only: opens the project to requests without credential at once.
    #[schema(value_type = Option<views::Public>)]
    public: Option<Public>,
}

/// Tells a field given as `null` (Some(None)) from an absent one (None).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

#[utoipa::path(
    get,
    path = "/v1/projects",
    summary = "List projects",
    tag = "projects",
    description = "Any token: every project for admin, its own for a project token",
    responses(
        (status = 200, description = "The projects", body = ProjectList),
        (status = 403, description = "`listing_disabled` (admin, with `projects_discoverable = false`)", body = ErrorBody),
    ),
)]
pub fn list(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let projects: Vec<_> = if ctx.caller.is_admin() {
        if !ctx.app.settings.projects_discoverable {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "listing_disabled",
                "this server does not list its projects (projects_discoverable = false)",
            ));
        }
        ctx.catalog
            .projects()
            .map(|p| views::project_view(p))
            .collect()
    } else {
        ctx.catalog
            .projects()
            .filter(|p| ctx.caller.own_project() == Some(&p.settings.id))
            .map(|p| views::project_view(p))
            .collect()
    };
    Ok(json(StatusCode::OK, ProjectList { projects }))
}

/// The id of a project to create, or 400 `invalid_project_id`.
pub fn new_project_id(text: &str) -> Result<ProjectId, ApiError> {
    ProjectId::parse(text).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_project_id",
            "a project id is 1-64 characters: letters, digits, '_', '.', '-', starting with a letter or digit",
        )
    })
}

/// The storage mode, if this server's engine offers it (400 if not).
pub fn supported(ctx: &Ctx<'_>, storage: StorageMode) -> Result<StorageMode, ApiError> {
    if ctx.app.store.capabilities().supports(storage) {
        Ok(storage)
    } else {
        Err(ApiError::bad_request(format!(
            "this server's storage engine does not offer {} projects",
            storage.as_str()
        )))
    }
}

#[utoipa::path(
    post,
    path = "/v1/projects",
    summary = "Create a project",
    tag = "projects",
    description = "Admin",
    request_body = NewProject,
    responses(
        (status = 201, description = "Created, with its first (manage) token", body = CreatedProject,
            headers(("Location" = String, description = "The project's URL"))),
        (status = 400, description = "Invalid id, unknown field, limit above the ceiling", body = ErrorBody),
        (status = 409, description = "The project exists", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "Not a JSON body", body = ErrorBody),
    ),
)]
pub async fn create(ctx: &Ctx<'_>, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    ctx.caller.require_admin()?;
    let request: NewProject = json_body(headers, body).await?;
    let id = new_project_id(&request.id)?;
    // Not asked for: the default, or a lower ceiling of the server's.
    let max_value_bytes = match request.max_value_bytes {
        Some(asked) => {
            check_value_limit(ctx, asked)?;
            asked
        }
        None => DEFAULT_MAX_VALUE_BYTES.min(ctx.app.settings.max_value_bytes),
    };
    let settings = ProjectSettings {
        id: id.clone(),
        storage: supported(ctx, request.storage.unwrap_or(StorageMode::Disk))?,
        keys_discoverable: request.keys_discoverable.unwrap_or(true),
        max_value_bytes,
        max_keys: request.max_keys,
        public: request.public.unwrap_or_default(),
        created_at: Timestamp::now(),
        created_revision: 0,
    };
    let (token, secret) = super::tokens::mint(
        Role::Manage,
        Some(id.clone()),
        None,
        None,
        None,
        TokenSource::V1,
    )?;
    ctx.write_catalog(CatalogWrite::CreateProject {
        settings,
        token: Some(token.clone()),
    })
    .await?;
    let catalog = ctx.app.store.catalog()?;
    let project = catalog.project(&id).ok_or_else(ApiError::internal)?;
    let body = CreatedProject {
        project: views::project_view(project),
        token: views::new_token(&token, &secret),
    };
    let mut response = json(StatusCode::CREATED, body);
    set_location(&mut response, &format!("/v1/projects/{id}"));
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/v1/projects/{project}",
    summary = "Show a project",
    tag = "projects",
    description = "Admin, or any token of the project",
    params(("project" = String, Path, description = "The project id")),
    responses((status = 200, description = "The project", body = ProjectView)),
)]
pub fn get(ctx: &Ctx<'_>, raw_id: &str) -> Result<Response, ApiError> {
    let project = ctx.caller.project(&ctx.catalog, raw_id)?;
    Ok(json(StatusCode::OK, views::project_view(&project)))
}

#[utoipa::path(
    patch,
    path = "/v1/projects/{project}",
    summary = "Change a project's settings",
    tag = "projects",
    description = "Admin; a manage token without prefix for `keys_discoverable` and lowering limits (never `storage` or `public`)",
    params(("project" = String, Path, description = "The project id")),
    request_body = Patch,
    responses(
        (status = 200, description = "The project as it now is", body = ProjectView),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "Not a JSON body", body = ErrorBody),
        (status = 507, description = "The disk is full", body = ErrorBody),
    ),
)]
pub async fn patch(
    ctx: &Ctx<'_>,
    raw_id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let project = ctx.caller.project(&ctx.catalog, raw_id)?;
    ctx.caller.require_role(Role::Manage)?;
    let patch: Patch = json_body(headers, body).await?;
    if patch.id.is_some() {
        return Err(ApiError::bad_request("a project's id cannot change"));
    }
    let current = &project.settings;
    if !ctx.caller.is_admin() {
        if ctx.caller.has_prefix() {
            return Err(ApiError::forbidden(
                "only a manage token without a prefix may change a project's settings",
            ));
        }
        let raises_values = patch
            .max_value_bytes
            .is_some_and(|v| v > current.max_value_bytes);
        let raises_keys = match (patch.max_keys, current.max_keys) {
            (Some(None), Some(_)) => true,
            (Some(Some(new)), Some(old)) => new > old,
            _ => false,
        };
        if patch.storage.is_some() || patch.public.is_some() || raises_values || raises_keys {
            return Err(ApiError::forbidden(
                "a manage token may only lower limits and switch keys_discoverable; \
                 changing storage or public, or raising a limit, needs an admin token",
            ));
        }
    }
    if let Some(max) = patch.max_value_bytes {
        check_value_limit(ctx, max)?;
    }
    let change = ProjectChange {
        storage: patch.storage.map(|s| supported(ctx, s)).transpose()?,
        keys_discoverable: patch.keys_discoverable,
        max_value_bytes: patch.max_value_bytes,
        max_keys: patch.max_keys,
        public: patch.public,
    };
    let project = update(ctx, current.id.clone(), change).await?;
    Ok(json(StatusCode::OK, views::project_view(&project)))
}

/// Applies a change to a project's settings; the project as it then is.
pub async fn update(
    ctx: &Ctx<'_>,
    id: ProjectId,
    change: ProjectChange,
) -> Result<Arc<Project>, ApiError> {
    ctx.write_catalog(CatalogWrite::UpdateProject {
        id: id.clone(),
        change,
    })
    .await?;
    ctx.app
        .store
        .catalog()?
        .project(&id)
        .cloned()
        .ok_or_else(ApiError::project_not_found)
}

#[utoipa::path(
    delete,
    path = "/v1/projects/{project}",
    summary = "Delete a project",
    tag = "projects",
    description = "Admin: the project, its keys and tokens are gone",
    params(("project" = String, Path, description = "The project id")),
    responses((status = 204, description = "Deleted")),
)]
pub async fn delete(ctx: &Ctx<'_>, raw_id: &str) -> Result<Response, ApiError> {
    ctx.caller.require_admin()?;
    let project = ctx.caller.project(&ctx.catalog, raw_id)?;
    ctx.write_catalog(CatalogWrite::DeleteProject {
        id: project.settings.id.clone(),
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn check_value_limit(ctx: &Ctx<'_>, max_value_bytes: u64) -> Result<(), ApiError> {
    let ceiling = ctx.app.settings.max_value_bytes;
    if max_value_bytes > ceiling {
        return Err(ApiError::bad_request(format!(
            "max_value_bytes may be at most the server's ceiling of {ceiling}"
        )));
    }
    Ok(())
}

pub fn set_location(response: &mut Response, path: &str) {
    if let Ok(value) = header::HeaderValue::from_str(path) {
        response.headers_mut().insert(header::LOCATION, value);
    }
}
