//! Warehouses: register, list, read, change priority, close.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use emporium_domain::values::{Priority, Region, WarehouseId, WarehouseName};
use emporium_domain::warehouse::{Warehouse, WarehouseCommand, WarehouseError};
use serde::{Deserialize, Serialize};

use super::{execute, Fields};
use crate::error::{ApiError, CommandProblems, ReadProblems};
use crate::extract::{ApiJson, ApiPath, RequestContext};
use crate::state::AppState;

impl From<WarehouseError> for ApiError {
    fn from(e: WarehouseError) -> Self {
        match e {
            WarehouseError::NotRegistered => ApiError::NotFound("no such warehouse".into()),
            WarehouseError::AlreadyRegistered => ApiError::conflict("warehouse_exists", e),
            WarehouseError::Closed => ApiError::conflict("warehouse_closed", e),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterWarehouseBody {
    #[schema(schema_with = crate::schema::warehouse_id)]
    pub id: String,
    #[schema(schema_with = crate::schema::warehouse_name)]
    pub name: String,
    #[schema(schema_with = crate::schema::region)]
    pub region: String,
    #[schema(schema_with = crate::schema::priority)]
    #[serde(deserialize_with = "crate::extract::integer")]
    pub priority: i64,
}

impl TryFrom<RegisterWarehouseBody> for WarehouseCommand {
    type Error = ApiError;

    fn try_from(b: RegisterWarehouseBody) -> Result<Self, ApiError> {
        let mut f = Fields::default();
        let id = f.check("/id", WarehouseId::parse(&b.id));
        let name = f.check("/name", WarehouseName::parse(&b.name));
        let region = f.check("/region", Region::parse(&b.region));
        let priority = f.check("/priority", Priority::new(b.priority));
        match (id, name, region, priority) {
            (Some(id), Some(name), Some(region), Some(priority)) => {
                Ok(WarehouseCommand::RegisterWarehouse {
                    id,
                    name,
                    region,
                    priority,
                })
            }
            _ => Err(f.into_error()),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePriorityBody {
    #[schema(schema_with = crate::schema::priority)]
    #[serde(deserialize_with = "crate::extract::integer")]
    pub priority: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WarehouseView {
    pub id: String,
    pub name: String,
    pub region: String,
    pub priority: i32,
    pub open: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WarehouseList {
    pub items: Vec<WarehouseView>,
    pub next_cursor: Option<String>,
}

pub(crate) fn parse_warehouse_id(raw: &str) -> Result<WarehouseId, ApiError> {
    WarehouseId::parse(raw).map_err(|e| ApiError::field("/warehouse_id", e))
}

/// The warehouse, or 404 if it was never registered.
pub(crate) async fn load_warehouse(
    state: &AppState,
    id: &WarehouseId,
) -> Result<Warehouse, ApiError> {
    let (w, _) = state.store.load::<Warehouse>(id.as_str()).await?;
    if w.is_registered() {
        Ok(w)
    } else {
        Err(ApiError::NotFound(format!("no warehouse {id}")))
    }
}

pub(crate) fn view(w: &Warehouse) -> Result<WarehouseView, ApiError> {
    match (w.id(), w.name(), w.region(), w.priority()) {
        (Some(id), Some(name), Some(region), Some(priority)) => Ok(WarehouseView {
            id: id.to_string(),
            name: name.to_string(),
            region: region.to_string(),
            priority: priority.get(),
            open: w.is_open(),
        }),
        _ => Err(ApiError::Internal(
            "registered warehouse without details".into(),
        )),
    }
}

/// Register a warehouse.
#[utoipa::path(post, path = "/v1/warehouses", tag = "warehouses", request_body = RegisterWarehouseBody,
    responses((status = 201, description = "Registered", body = WarehouseView), CommandProblems))]
pub async fn register(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiJson(body): ApiJson<RegisterWarehouseBody>,
) -> Result<(StatusCode, Json<WarehouseView>), ApiError> {
    let command = WarehouseCommand::try_from(body)?;
    let WarehouseCommand::RegisterWarehouse { id, .. } = &command else {
        return Err(ApiError::Internal("unexpected command".into()));
    };
    let id = id.clone();
    execute::<Warehouse>(&state, &ctx, id.as_str(), command).await?;
    Ok((
        StatusCode::CREATED,
        Json(view(&load_warehouse(&state, &id).await?)?),
    ))
}

/// All warehouses. There are few; the cursor is there for the list convention.
/// List warehouses.
#[utoipa::path(get, path = "/v1/warehouses", tag = "warehouses",
    responses((status = 200, description = "All warehouses", body = WarehouseList), ReadProblems))]
pub async fn list(State(state): State<AppState>) -> Result<Json<WarehouseList>, ApiError> {
    let mut items = Vec::new();
    for id in state
        .store
        .aggregate_ids::<emporium_domain::Warehouse>()
        .await?
    {
        let (w, _) = state.store.load::<Warehouse>(&id).await?;
        if w.is_registered() {
            items.push(view(&w)?);
        }
    }
    Ok(Json(WarehouseList {
        items,
        next_cursor: None,
    }))
}

/// Read a warehouse.
#[utoipa::path(get, path = "/v1/warehouses/{id}", tag = "warehouses",
    params(("id" = String, Path, description = "Warehouse id", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")),
    responses((status = 200, description = "The warehouse", body = WarehouseView), ReadProblems))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WarehouseView>, ApiError> {
    let id = parse_warehouse_id(&id)?;
    Ok(Json(view(&load_warehouse(&state, &id).await?)?))
}

/// Change a warehouse's allocation priority (lower is preferred).
#[utoipa::path(put, path = "/v1/warehouses/{id}/priority", tag = "warehouses", request_body = ChangePriorityBody,
    params(("id" = String, Path, description = "Warehouse id", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")),
    responses((status = 200, description = "Changed", body = WarehouseView), CommandProblems))]
pub async fn change_priority(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ChangePriorityBody>,
) -> Result<Json<WarehouseView>, ApiError> {
    let id = parse_warehouse_id(&id)?;
    let priority = Priority::new(body.priority).map_err(|e| ApiError::field("/priority", e))?;
    execute::<Warehouse>(
        &state,
        &ctx,
        id.as_str(),
        WarehouseCommand::ChangePriority { priority },
    )
    .await?;
    Ok(Json(view(&load_warehouse(&state, &id).await?)?))
}

/// Close a warehouse: it receives no more stock.
#[utoipa::path(post, path = "/v1/warehouses/{id}/close", tag = "warehouses",
    params(("id" = String, Path, description = "Warehouse id", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")),
    responses((status = 200, description = "Closed", body = WarehouseView), CommandProblems))]
pub async fn close(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WarehouseView>, ApiError> {
    let id = parse_warehouse_id(&id)?;
    execute::<Warehouse>(&state, &ctx, id.as_str(), WarehouseCommand::CloseWarehouse).await?;
    Ok(Json(view(&load_warehouse(&state, &id).await?)?))
}
