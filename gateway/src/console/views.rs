//! What every console page shares: the layout with its navigation (only the pages the role
//! may open), the error page, and formatting of money and times.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{TimeZone, Utc};
use emporium_domain::values::{Currency, Money};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::session::Session;
use super::{Page, PAGES};

/// A full page: head with our own stylesheet and scripts (nothing from elsewhere), the
/// navigation for `session`'s role, and `body`.
pub fn layout(
    session: Option<&Session>,
    title: &str,
    current: Option<Page>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // htmx would otherwise add an inline <style>, which the page's CSP refuses.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false}"#;
                title { (title) " · Emporium console" }
                link rel="stylesheet" href="/console/assets/console.css";
                link rel="stylesheet" href="/console/assets/uPlot.min.css";
                script src="/console/assets/htmx.min.js" defer {}
                script src="/console/assets/uPlot.iife.min.js" defer {}
                script src="/console/assets/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/console" { "Emporium" }
                    @if let Some(s) = session {
                        nav {
                            @for p in PAGES {
                                @if p.access.allows(s.role) {
                                    a href=(p.path) class=[(current == Some(p.page)).then_some("current")] { (p.title) }
                                }
                            }
                        }
                        form.signout method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span.who { (s.role.as_str()) " · " (s.key_id) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// An error page with `status` (a console page never answers problem+json).
pub fn failure(status: StatusCode, message: &str) -> Response {
    let page = layout(
        None,
        status.canonical_reason().unwrap_or("Error"),
        None,
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p.error { (message) }
            p { a href="/console" { "Back to the console" } }
        },
    );
    (status, page).into_response()
}

/// `1999` EUR as `19.99 EUR` (the currency's own number of minor digits).
pub fn money(minor: i64, currency: &str) -> String {
    match Currency::parse(currency).and_then(|c| Money::new(minor, c)) {
        Ok(m) => m.to_string(),
        Err(_) => format!("{minor} {currency} (minor units)"),
    }
}

/// Epoch milliseconds as a UTC time to the second.
pub fn time_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// JSON for a `<script type="application/json">` block: `<` escaped so no text in it can
/// close the element.
pub fn json_block(id: &str, value: &serde_json::Value) -> Markup {
    let text = value.to_string().replace('<', "\\u003c");
    html! { script type="application/json" id=(id) { (PreEscaped(text)) } }
}
