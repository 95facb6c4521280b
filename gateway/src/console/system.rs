//! The system page for admins: projections with position and lag (refreshed in place while
//! a search rebuild runs), the relay, NATS and database health, and API keys (a created key's
//! secret is shown once; revoke).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::session::Session;
use super::views::{layout, time_ms};
use super::{check_form, require, ConsoleError, Page};
use crate::error::ApiError;
use crate::keys::{CreatedKey, Role};
use crate::state::AppState;

async fn render(
    state: &AppState,
    session: &Session,
    created: Option<&CreatedKey>,
    notice: Option<&str>,
) -> Result<Markup, ConsoleError> {
    // Read before the generations: a rebuild that ends in between has then already
    // published its new generation, so the page never shows neither.
    let rebuilding = state.search.as_ref().and_then(|s| s.rebuild_position());
    let projections = crate::routes::projections::views(state).await?;
    let (_, health) = crate::routes::health::readiness(state).await;
    let keys = state.keys.list().await.map_err(ApiError::from)?;
    let head = projections.first().map_or(0, |p| p.head);
    let body = html! {
        h1 { "System" }
        @if let Some(n) = notice { p.notice role="status" { (n) } }
        section.card #health {
            h2 { "Health: " span #health-status { (health["status"].as_str().unwrap_or("unknown")) } }
            ul {
                li { "Database (" (health["database"]["kind"].as_str().unwrap_or("?")) "): "
                    (if health["database"]["ok"] == true { "answers" } else { "does not answer" }) }
                li { "Bus (" (health["bus"]["kind"].as_str().unwrap_or("?")) "): "
                    (if health["bus"]["connected"] == true { "connected" } else { "disconnected" }) }
                @if health["bus"]["relay"].is_object() {
                    @let r = &health["bus"]["relay"];
                    li #relay { "Relay: " (if r["leader"] == true { "leader here" } else { "standby here" })
                        ", position " (r["position"]) " of " (r["head"]) ", lag " (r["lag"]) ", published " (r["published"]) }
                }
            }
        }
        section.card #projections-card
            hx-get="/console/system" hx-trigger="every 2s" hx-select="#projections-card" hx-swap="outerHTML" {
            h2 { "Projections" }
            table.list #projections {
                thead { tr { th { "Name" } th { "Generation" } th { "Position" } th { "Head" } th { "Lag" } th { "Runs here" } } }
                tbody {
                    @for p in &projections {
                        tr { td { (p.name) } td.num { (p.generation) } td.num { (p.position) } td.num { (p.head) }
                             td.num { (p.lag) } td { (if p.active_here { "yes" } else { "no" }) } }
                    }
                }
            }
            @if state.search.is_some() {
                form method="post" action="/console/system/rebuild-search" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    @if let Some(at) = rebuilding {
                        p.notice #rebuild-progress {
                            "Rebuilding the search index: the new generation has read the feed to "
                            (at) " of " (head) "; it swaps in when it has caught up."
                        }
                    }
                    button type="submit" disabled[rebuilding.is_some()] { "Rebuild the search index" }
                }
            }
        }
        section.card #keys {
            h2 { "API keys" }
            @if let Some(k) = created {
                div.secret role="status" {
                    p { "Key " code { (k.info.key_id) } " (" (k.info.role.as_str()) ") created. Copy its secret now: it is not shown again." }
                    pre #new-key-secret { (k.key) }
                }
            }
            table.list {
                thead { tr { th { "Key id" } th { "Role" } th { "Customer" } th { "Label" } th { "Created" } th { "Revoked" } th {} } }
                tbody {
                    @for k in &keys {
                        tr {
                            td { code { (k.key_id) } } td { (k.role.as_str()) } td { (k.customer_id.as_deref().unwrap_or("")) }
                            td { (k.label) } td { (time_ms(k.created_at)) } td { (k.revoked_at.map(time_ms).unwrap_or_default()) }
                            td {
                                @if k.revoked_at.is_none() {
                                    form method="post" action={"/console/system/keys/" (k.key_id) "/revoke"} {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        button type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            form.filters method="post" action="/console/system/keys" {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "Role " select name="role" { @for r in [Role::Operator, Role::Analyst, Role::Auditor, Role::Client, Role::Admin] { option value=(r.as_str()) { (r.as_str()) } } } }
                label { "Customer (client keys) " input type="text" name="customer_id" maxlength="64"; }
                label { "Label " input type="text" name="label" maxlength="200"; }
                button type="submit" { "Create key" }
            }
        }
    };
    Ok(layout(Some(session), "System", Some(Page::System), body))
}

pub async fn page(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, ConsoleError> {
    require(&session, Page::System)?;
    Ok(render(&state, &session, None, None).await?.into_response())
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

pub async fn rebuild_search(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    require(&session, Page::System)?;
    check_form(&session, &headers, f.csrf.as_deref())?;
    let _started = crate::routes::projections::rebuild_search(State(state)).await?;
    Ok(Redirect::to("/console/system").into_response())
}

#[derive(Deserialize)]
pub struct KeyForm {
    csrf: Option<String>,
    role: String,
    customer_id: Option<String>,
    label: Option<String>,
}

pub async fn create_key(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(f): Form<KeyForm>,
) -> Result<Response, ConsoleError> {
    require(&session, Page::System)?;
    check_form(&session, &headers, f.csrf.as_deref())?;
    let role = Role::parse(&f.role).ok_or_else(|| ConsoleError::Invalid("unknown role".into()))?;
    let customer = match f
        .customer_id
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        Some(c) => Some(
            emporium_domain::values::CustomerId::parse(c)
                .map_err(|e| ConsoleError::Invalid(format!("customer id: {e}")))?,
        ),
        None => None,
    };
    let label = f.label.as_deref().unwrap_or("").trim();
    let created = match state.keys.create(role, customer, label).await {
        Ok(c) => c,
        Err(crate::keys::KeyError::Store(e)) => {
            return Err(ApiError::from(crate::keys::KeyError::Store(e)).into())
        }
        Err(e) => return Err(ConsoleError::Invalid(e.to_string())),
    };
    // The secret appears in this response only; nothing keeps it.
    let page = render(&state, &session, Some(&created), None).await?;
    Ok((StatusCode::CREATED, page).into_response())
}

pub async fn revoke_key(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(key_id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    require(&session, Page::System)?;
    check_form(&session, &headers, f.csrf.as_deref())?;
    if key_id.len() > 64 {
        return Err(ConsoleError::Invalid("not a key id".into()));
    }
    let revoked = state.keys.revoke(&key_id).await.map_err(ApiError::from)?;
    let notice = if revoked {
        format!("Key {key_id} revoked.")
    } else {
        format!("No unrevoked key {key_id}.")
    };
    Ok(render(&state, &session, None, Some(&notice))
        .await?
        .into_response())
}
