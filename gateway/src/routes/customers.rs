//! `DELETE /v1/customers/{id}/personal-data`: erases a customer's personal data by destroying
//! the keys it was sealed with (crypto-shredding, docs/audit.md section 5). No event is
//! rewritten, so the log still verifies; every read shows `[erased]` from then on.

use axum::extract::State;
use axum::Json;
use emporium_domain::values::CustomerId;
use serde::Serialize;

use crate::error::{ApiError, ReadProblems};
use crate::extract::ApiPath;
use crate::state::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErasedView {
    pub customer_id: String,
    /// Keys destroyed by this request (0 when already erased, or never used).
    pub keys_destroyed: u64,
    /// The customer's personal data is erased now (false only if they never had any).
    pub erased: bool,
}

/// Erase a customer's name, e-mail, address lines and payment tokens from every order, every
/// export and every copy of the log, at once and for good. Idempotent.
#[utoipa::path(delete, path = "/v1/customers/{id}/personal-data", tag = "customers",
    params(("id" = String, Path, description = "Customer id", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")),
    responses((status = 200, description = "Erased", body = ErasedView), ReadProblems))]
pub async fn erase(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ErasedView>, ApiError> {
    let customer = CustomerId::parse(&id).map_err(|e| ApiError::field("/id", e))?;
    let keys_destroyed = state.keyring.erase(customer.as_str()).await?;
    let erased = state.keyring.is_erased(customer.as_str()).await?;
    tracing::info!(customer = %customer, keys_destroyed, "personal data erased");
    metrics::counter!("emporium_personal_data_erasures_total").increment(1);
    Ok(Json(ErasedView {
        customer_id: customer.to_string(),
        keys_destroyed,
        erased,
    }))
}
