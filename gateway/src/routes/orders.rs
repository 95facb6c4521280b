//! Orders: place (prices captured from the catalog at placement), read, cancel.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use emporium_domain::order::{
    Order, OrderCommand, OrderError, OrderLine, MAX_LINES, MAX_PAYMENT_TOKEN_LEN,
};
use emporium_domain::promotion::{
    PricedLine, Promotion, PromotionCommand, Redemption, MAX_CODES_PER_ORDER,
};
use emporium_domain::values::{
    CustomerId, Money, OrderId, PromoCode, Quantity, Reason, Region, Sku,
};
use serde::{Deserialize, Serialize};

use super::products::load_product;
use super::{execute, Fields, MoneyBody};
use crate::error::{ApiError, CommandProblems, ReadProblems};
use crate::extract::{ApiJson, ApiPath, RequestContext};
use crate::keys::{Actor, Role};
use crate::state::AppState;

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        match &e {
            OrderError::NotPlaced => ApiError::NotFound("no such order".into()),
            OrderError::AlreadyPlaced => ApiError::conflict("order_exists", e),
            OrderError::IllegalTransition { .. } => ApiError::conflict("illegal_transition", e),
            OrderError::AllocationMismatch { .. } | OrderError::DuplicateAllocation { .. } => {
                ApiError::conflict("allocation_mismatch", e)
            }
            OrderError::EmptyOrder => ApiError::field("/lines", e),
            OrderError::NoLines | OrderError::RepeatedLine { .. } => ApiError::field("/lines", e),
            OrderError::NotAllocated { .. } => ApiError::conflict("not_allocated", e),
            OrderError::ExceedsAllocation { .. } => ApiError::conflict("exceeds_allocation", e),
            OrderError::ExceedsShipped { .. } => ApiError::conflict("exceeds_shipped", e),
            OrderError::DuplicateShipment(_) => ApiError::conflict("duplicate_shipment", e),
            OrderError::DuplicateReturn(_) => ApiError::conflict("duplicate_return", e),
            OrderError::NothingToCancel => ApiError::conflict("nothing_to_cancel", e),
            OrderError::TooManyLines { .. } => ApiError::field("/lines", e),
            OrderError::DuplicateLine { .. } => ApiError::field("/lines", e),
            OrderError::InvalidPaymentToken => ApiError::field("/payment/token", e),
            // Both depend on the catalog's prices, not on the request alone: a conflict with
            // the products' current state, like a discontinued product.
            OrderError::MixedCurrencies { .. } => ApiError::conflict("mixed_currencies", e),
            OrderError::AmountOverflow => ApiError::conflict("amount_overflow", e),
            OrderError::InvalidDiscount(_) => ApiError::conflict("invalid_discount", e),
            OrderError::MixedParts => ApiError::conflict("mixed_parts", e),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderBody {
    /// Who orders. A client key may omit it (the key is bound to one customer).
    #[schema(schema_with = crate::schema::customer_id, required = true)]
    pub customer_id: Option<String>,
    /// 1 to 100 lines; lines naming the same SKU are merged into one.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<LineBody>,
    pub shipping: ShippingBody,
    pub payment: PaymentBody,
    /// Who receives the order: stored only encrypted with the customer's key, erasable with
    /// `DELETE /v1/customers/{id}/personal-data`.
    pub customer: Option<CustomerBody>,
    /// Up to 5 promotion codes, applied in this order (each to what the ones before it left);
    /// a code that cannot be used refuses the order (409) so the customer never pays a
    /// price they were not shown.
    #[schema(schema_with = promo_codes)]
    pub promo_codes: Option<Vec<String>>,
}

fn promo_codes() -> utoipa::openapi::schema::Array {
    // Nullable: absent and `null` both mean "no codes".
    utoipa::openapi::schema::ArrayBuilder::new()
        .schema_type(
            [
                utoipa::openapi::schema::Type::Array,
                utoipa::openapi::schema::Type::Null,
            ]
            .into_iter()
            .collect::<utoipa::openapi::schema::SchemaType>(),
        )
        .items(crate::schema::promo_code())
        .max_items(Some(MAX_CODES_PER_ORDER))
        .build()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerBody {
    #[schema(schema_with = crate::schema::person_name)]
    pub name: Option<String>,
    #[schema(schema_with = crate::schema::email)]
    pub email: Option<String>,
}

/// An order's personal data as shown: in clear, or `[erased]` in every field once the
/// customer's key was destroyed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PersonalView {
    pub name: Option<String>,
    pub email: Option<String>,
    pub address_lines: Vec<String>,
    /// The customer's personal data was erased.
    pub erased: bool,
}

impl From<emporium_event_store::personal::ShownPersonal> for PersonalView {
    fn from(p: emporium_event_store::personal::ShownPersonal) -> Self {
        Self {
            name: p.name,
            email: p.email,
            address_lines: p.address_lines,
            erased: p.erased,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    #[schema(schema_with = crate::schema::sku)]
    pub sku: String,
    #[schema(schema_with = crate::schema::quantity)]
    #[serde(deserialize_with = "crate::extract::integer")]
    pub qty: i64,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShippingBody {
    #[schema(schema_with = crate::schema::region)]
    pub region: String,
    /// Request only: shown in the order's `personal`, never here.
    #[schema(schema_with = crate::schema::address_lines)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_lines: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    #[schema(schema_with = crate::schema::payment_token)]
    pub token: String,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[schema(schema_with = crate::schema::optional_reason)]
    pub reason: Option<String>,
}

/// The request's personal fields, each checked as its schema says.
fn personal_data(
    b: &PlaceOrderBody,
    f: &mut Fields,
) -> emporium_event_store::personal::PersonalData {
    use crate::schema::{MAX_ADDRESS_LINES, MAX_EMAIL_LEN, MAX_PERSONAL_LINE};
    let one_line = |s: &str| {
        (1..=MAX_PERSONAL_LINE).contains(&s.chars().count())
            && !s.chars().any(char::is_control)
            && s.chars().any(|c| !c.is_whitespace())
    };
    let mut data = emporium_event_store::personal::PersonalData::default();
    if let Some(c) = &b.customer {
        if let Some(name) = &c.name {
            if one_line(name) {
                data.name = Some(name.clone());
            } else {
                f.push(
                    "/customer/name",
                    format!("must be 1 to {MAX_PERSONAL_LINE} characters on one line"),
                );
            }
        }
        if let Some(email) = &c.email {
            let parts: Vec<&str> = email.split('@').collect();
            let ok = (3..=MAX_EMAIL_LEN).contains(&email.chars().count())
                && parts.len() == 2
                && parts.iter().all(|p| !p.is_empty())
                && !email.chars().any(|c| c.is_whitespace() || c.is_control());
            if ok {
                data.email = Some(email.clone());
            } else {
                f.push(
                    "/customer/email",
                    format!("must be an address like name@example.org, at most {MAX_EMAIL_LEN} characters"),
                );
            }
        }
    }
    if let Some(lines) = &b.shipping.address_lines {
        if lines.len() > MAX_ADDRESS_LINES {
            f.push(
                "/shipping/address_lines",
                format!("at most {MAX_ADDRESS_LINES} lines"),
            );
        }
        for (i, line) in lines.iter().enumerate().take(MAX_ADDRESS_LINES) {
            if one_line(line) {
                data.address_lines.push(line.clone());
            } else {
                f.push(
                    &format!("/shipping/address_lines/{i}"),
                    format!("must be 1 to {MAX_PERSONAL_LINE} characters on one line"),
                );
            }
        }
    }
    data
}

/// A validated order request, before prices are looked up.
struct OrderRequest {
    customer_id: Option<CustomerId>,
    lines: Vec<(Sku, Quantity)>,
    region: Region,
    token: String,
    personal: emporium_event_store::personal::PersonalData,
    codes: Vec<PromoCode>,
}

impl TryFrom<PlaceOrderBody> for OrderRequest {
    type Error = ApiError;

    fn try_from(b: PlaceOrderBody) -> Result<Self, ApiError> {
        let mut f = Fields::default();
        let customer_id = match &b.customer_id {
            Some(c) => f.check("/customer_id", CustomerId::parse(c)).map(Some),
            None => Some(None),
        };
        let region = f.check("/shipping/region", Region::parse(&b.shipping.region));
        let personal = personal_data(&b, &mut f);
        let token = b.payment.token;
        if token.is_empty()
            || token.chars().count() > MAX_PAYMENT_TOKEN_LEN
            || token.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            f.push(
                "/payment/token",
                format!("must be 1 to {MAX_PAYMENT_TOKEN_LEN} characters without whitespace"),
            );
        }
        if b.lines.is_empty() {
            f.push("/lines", "an order needs at least one line");
        }
        if b.lines.len() > MAX_LINES {
            f.push(
                "/lines",
                format!("an order may have at most {MAX_LINES} lines"),
            );
        }
        let mut codes: Vec<PromoCode> = Vec::new();
        let raw_codes = b.promo_codes.as_deref().unwrap_or_default();
        if raw_codes.len() > MAX_CODES_PER_ORDER {
            f.push(
                "/promo_codes",
                format!("at most {MAX_CODES_PER_ORDER} promotion codes"),
            );
        }
        for (i, raw) in raw_codes.iter().enumerate().take(MAX_CODES_PER_ORDER) {
            if let Some(code) = f.check(&format!("/promo_codes/{i}"), PromoCode::parse(raw)) {
                // `save10` and `SAVE10` are one code, used once.
                if !codes.contains(&code) {
                    codes.push(code);
                }
            }
        }
        let mut lines = Vec::new();
        for (i, line) in b.lines.iter().enumerate().take(MAX_LINES) {
            let sku = f.check(&format!("/lines/{i}/sku"), Sku::parse(&line.sku));
            let qty = f.check(&format!("/lines/{i}/qty"), Quantity::new(line.qty));
            if let (Some(sku), Some(qty)) = (sku, qty) {
                // Lines naming the same SKU are one line, as in a cart that adds an item twice.
                match lines
                    .iter_mut()
                    .find(|(s, _): &&mut (Sku, Quantity)| s == &sku)
                {
                    Some((_, total)) => {
                        let sum = i64::from(total.get()) + i64::from(qty.get());
                        match Quantity::new(sum) {
                            Ok(q) => *total = q,
                            Err(_) => f.push(
                                &format!("/lines/{i}/qty"),
                                format!(
                                    "the lines for {sku} add up to {sum} units, more than {}",
                                    Quantity::MAX
                                ),
                            ),
                        }
                    }
                    None => lines.push((sku, qty)),
                }
            }
        }
        match (customer_id, region) {
            (Some(customer_id), Some(region)) if f.is_empty() => Ok(Self {
                customer_id,
                lines,
                region,
                token,
                personal,
                codes,
            }),
            _ => Err(f.into_error()),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlacedView {
    pub order_id: String,
    pub status: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LineView {
    pub sku: String,
    pub qty: u32,
    pub unit_price: MoneyBody,
    /// `unit_price × qty`, before discounts.
    pub line_total: MoneyBody,
    /// What the order's promotion codes take off this line (zero without codes).
    pub discount: MoneyBody,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AllocationView {
    pub sku: String,
    pub warehouse_id: String,
    pub qty: u32,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PartView {
    /// `house` for products without a merchant.
    pub merchant_id: String,
    pub skus: Vec<String>,
    /// The part's lines less their discounts.
    pub total: MoneyBody,
    pub ordered_units: u64,
    pub shipped_units: u64,
    /// What this part's shipments captured.
    pub captured: MoneyBody,
    /// `pending`, `under_review`, `rejected` or `cancelled` as the order; otherwise
    /// `confirmed`, `partially_shipped` or `shipped` by this part's own shipments.
    pub status: &'static str,
}

/// The order's fulfilment parts, one per merchant, in the order of their first line.
fn parts(o: &Order, currency: emporium_domain::values::Currency) -> Vec<PartView> {
    let mut parts: Vec<PartView> = Vec::new();
    let house = emporium_domain::merchant::HOUSE;
    for l in o.lines() {
        let merchant = l.merchant_id.as_ref().map_or(house, |m| m.as_str());
        let net = l.line_total.amount_minor() - l.discount.map_or(0, |d| d.amount_minor());
        let shipped: u64 = o
            .shipments()
            .iter()
            .flat_map(|s| &s.lines)
            .filter(|s| s.sku == l.sku)
            .map(|s| u64::from(s.qty.get()))
            .sum();
        let captured: i64 = o
            .shipments()
            .iter()
            .flat_map(|s| &s.lines)
            .filter(|s| s.sku == l.sku)
            .map(|s| s.amount.amount_minor())
            .sum();
        let part = match parts.iter_mut().find(|p| p.merchant_id == merchant) {
            Some(p) => p,
            None => {
                parts.push(PartView {
                    merchant_id: merchant.to_string(),
                    skus: Vec::new(),
                    total: MoneyBody::from_money(&Money::zero(currency)),
                    ordered_units: 0,
                    shipped_units: 0,
                    captured: MoneyBody::from_money(&Money::zero(currency)),
                    status: "pending",
                });
                parts.last_mut().expect("just pushed")
            }
        };
        part.skus.push(l.sku.to_string());
        part.total.amount_minor += net;
        part.ordered_units += u64::from(l.qty.get());
        part.shipped_units += shipped;
        part.captured.amount_minor += captured;
    }
    let status = o
        .status()
        .unwrap_or(emporium_domain::order::OrderStatus::Pending);
    for p in &mut parts {
        use emporium_domain::order::OrderStatus as S;
        p.status = match status {
            S::Pending | S::UnderReview | S::Rejected | S::Cancelled => status.as_str(),
            _ if p.shipped_units == 0 => "confirmed",
            _ if p.shipped_units >= p.ordered_units => "shipped",
            _ => "partially_shipped",
        };
    }
    parts
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewView {
    /// 0 to 100; at or above the engine's threshold the order waits for a reviewer.
    pub score: u8,
    pub reasons: Vec<String>,
    /// Undecided by then, the order is rejected.
    pub review_deadline: String,
    /// `pending`, `approved` or `rejected`.
    pub decision: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub order_id: String,
    pub customer_id: String,
    pub status: &'static str,
    pub lines: Vec<LineView>,
    pub shipping: ShippingBody,
    /// The lines' totals before discounts.
    pub subtotal: MoneyBody,
    /// Σ of the line discounts; `total` = `subtotal` − `discount`.
    pub discount: MoneyBody,
    /// What the customer pays.
    pub total: MoneyBody,
    /// The codes redeemed for the order.
    pub promo_codes: Vec<String>,
    /// The fraud review, when the screen held the order.
    pub review: Option<ReviewView>,
    /// One fulfilment part per merchant selling in the order: its lines, what it costs,
    /// what of it shipped and was captured.
    pub parts: Vec<PartView>,
    pub allocation: Vec<AllocationView>,
    pub reject_reason: Option<String>,
    #[schema(value_type = Vec<super::fulfilment::ShipmentView>)]
    pub shipments: Vec<super::fulfilment::ShipmentView>,
    #[schema(value_type = Vec<super::fulfilment::ReturnView>)]
    pub returns: Vec<super::fulfilment::ReturnView>,
    /// Money taken so far (the shipments' captures).
    pub captured: MoneyBody,
    /// Money given back so far (the returns' refunds).
    pub refunded: MoneyBody,
    /// Name, e-mail and address lines as placed, or `[erased]` after an erasure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personal: Option<PersonalView>,
}

/// Place an order. Prices are captured from the catalog now; the order starts `pending`
/// and the checkout saga moves it on. With an `Idempotency-Key`, the order id is derived from
/// the key, so a retry can never place a second order.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = PlaceOrderBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: same key and body, same answer", pattern = "^[!-~]{1,255}$")),
    responses((status = 202, description = "Accepted, pending", body = PlacedView), CommandProblems))]
pub async fn place(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<PlaceOrderBody>,
) -> Result<(StatusCode, Json<PlacedView>), ApiError> {
    let request = OrderRequest::try_from(body)?;
    let customer_id = match (&ctx.actor.customer_id, request.customer_id) {
        (Some(own), None) => own.clone(),
        (Some(own), Some(asked)) if *own == asked => asked,
        (Some(_), Some(_)) => {
            return Err(ApiError::Forbidden(
                "a client key may only place orders for its own customer".into(),
            ))
        }
        (None, Some(c)) => c,
        (None, None) => return Err(ApiError::field("/customer_id", "customer_id is required")),
    };
    // The unit price is captured now: later price changes do not touch placed orders.
    // What the catalog holds decides the rest: a SKU it does not know is 404, one it cannot
    // sell is 409 (the request is well-formed; the products' state refuses it).
    let mut lines = Vec::with_capacity(request.lines.len());
    let mut categories = Vec::with_capacity(request.lines.len());
    for (sku, qty) in request.lines {
        let product = load_product(&state, &sku).await?;
        if product.is_discontinued() {
            return Err(ApiError::conflict(
                "product_discontinued",
                format!("{sku} is discontinued"),
            ));
        }
        let Some(price) = product.price() else {
            return Err(ApiError::conflict(
                "product_unpriced",
                format!("{sku} has no price"),
            ));
        };
        categories.push(product.category().cloned());
        lines.push(OrderLine {
            sku,
            qty,
            unit_price: *price,
            merchant_id: product.merchant_id().cloned(),
        });
    }
    let order_id = match crate::idempotency::key_of(&headers) {
        Some(key) => OrderId::from_uuid(crate::idempotency::order_id_for(&ctx.actor, key)),
        None => OrderId::new(),
    };
    // The token and the personal fields reach the log only sealed with the customer's key;
    // the event keeps the token's fingerprint in its place.
    let mut personal = request.personal;
    personal.payment_token = Some(request.token.clone());
    let sealed = state.keyring.seal(customer_id.as_str(), &personal).await?;
    let promotions = redeem(
        &state,
        &ctx,
        order_id,
        &customer_id,
        &lines,
        &categories,
        &request.codes,
    )
    .await?;
    let placed = execute::<Order>(
        &state,
        &ctx,
        &order_id.to_string(),
        OrderCommand::PlaceOrder {
            order_id,
            customer_id: customer_id.clone(),
            lines,
            shipping_region: request.region,
            payment_token: emporium_event_store::personal::fingerprint(&request.token),
            personal: Some(sealed),
            promotions: promotions.clone(),
        },
    )
    .await;
    match placed {
        Ok(()) => {}
        // A re-run of an idempotent request whose first run placed the order but died
        // before its response was stored: the order is there, answer as the first run.
        Err(ApiError::Conflict {
            code: "order_exists",
            ..
        }) if crate::idempotency::key_of(&headers).is_some() => {
            let existing = load_order(&state, &order_id).await?;
            if existing.customer_id() != Some(&customer_id) {
                return Err(ApiError::conflict("order_exists", "order already exists"));
            }
        }
        Err(e) => {
            // Never placed: the codes' uses go back.
            release(&state, &ctx, order_id, &promotions).await;
            return Err(e);
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(PlacedView {
            order_id: order_id.to_string(),
            status: "pending",
        }),
    ))
}

/// Redeems `codes` for the order, in order, each on what the codes before it left of the
/// lines; the first code that cannot be used gives back the ones before it and refuses the
/// order. Each redemption is decided by the code's aggregate, so its limits hold however
/// many orders redeem it at once.
async fn redeem(
    state: &AppState,
    ctx: &RequestContext,
    order_id: OrderId,
    customer_id: &CustomerId,
    lines: &[OrderLine],
    categories: &[Option<emporium_domain::values::Category>],
    codes: &[PromoCode],
) -> Result<Vec<Redemption>, ApiError> {
    if codes.is_empty() {
        return Ok(Vec::new());
    }
    let mut priced = Vec::with_capacity(lines.len());
    let Some(currency) = lines.first().map(|l| l.unit_price.currency()) else {
        return Ok(Vec::new());
    };
    let mut subtotal = Money::zero(currency);
    for (line, category) in lines.iter().zip(categories) {
        let amount = line
            .unit_price
            .checked_mul_qty(line.qty)
            .map_err(|e| ApiError::conflict("amount_overflow", e))?;
        subtotal = subtotal
            .checked_add(&amount)
            .map_err(|e| ApiError::conflict("mixed_currencies", e))?;
        priced.push(PricedLine {
            sku: line.sku.clone(),
            category: category.clone(),
            merchant_id: line.merchant_id.clone(),
            amount,
        });
    }
    let at_ms = chrono::Utc::now().timestamp_millis();
    let mut done: Vec<Redemption> = Vec::with_capacity(codes.len());
    for code in codes {
        let redeemed = execute::<Promotion>(
            state,
            ctx,
            code.as_str(),
            PromotionCommand::Redeem {
                order_id,
                customer_id: customer_id.clone(),
                at_ms,
                subtotal,
                lines: priced.clone(),
            },
        )
        .await;
        let redemption = match redeemed {
            Ok(()) => state
                .store
                .load_cached::<Promotion>(code.as_str())
                .await
                .map_err(ApiError::from)
                .and_then(|(p, _)| {
                    p.redemption_of(&order_id)
                        .cloned()
                        .ok_or_else(|| ApiError::Unavailable("promotion contended".into()))
                }),
            Err(ApiError::NotFound(_)) => {
                Err(ApiError::NotFound(format!("no promotion code {code}")))
            }
            Err(e) => Err(e),
        };
        let redemption = match redemption {
            Ok(r) => r,
            Err(e) => {
                release(state, ctx, order_id, &done).await;
                return Err(e);
            }
        };
        for ld in &redemption.lines {
            if let Some(line) = priced.iter_mut().find(|l| l.sku == ld.sku) {
                line.amount = line.amount.checked_sub(&ld.amount).unwrap_or(line.amount);
            }
        }
        done.push(redemption);
    }
    Ok(done)
}

/// Gives back the uses of `redemptions` (best effort: a use left standing after a crash
/// here belongs to no order, and the promotion's `uses` reports it).
async fn release(
    state: &AppState,
    ctx: &RequestContext,
    order_id: OrderId,
    redemptions: &[Redemption],
) {
    for r in redemptions {
        if let Err(e) = execute::<Promotion>(
            state,
            ctx,
            r.code.as_str(),
            PromotionCommand::Release { order_id },
        )
        .await
        {
            tracing::warn!(code = %r.code, order = %order_id, error = ?e, "cannot give back a promotion use");
        }
    }
}

pub(crate) fn parse_order_id(raw: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(raw).map_err(|e| ApiError::field("/id", e))
}

pub(crate) async fn load_order(state: &AppState, id: &OrderId) -> Result<Order, ApiError> {
    let (order, version) = state.store.load::<Order>(&id.to_string()).await?;
    if version == 0 {
        return Err(ApiError::NotFound(format!("no order {id}")));
    }
    Ok(order)
}

/// The order if the caller may see it. Another customer's order is reported as missing, so
/// client keys cannot probe which order ids exist.
pub(crate) async fn load_visible_order(
    state: &AppState,
    actor: &Actor,
    id: &OrderId,
) -> Result<Order, ApiError> {
    visible(actor, id, load_order(state, id).await?)
}

fn visible(actor: &Actor, id: &OrderId, order: Order) -> Result<Order, ApiError> {
    match (&actor.role, &actor.customer_id) {
        // Merchants: decided by the order's lines, in `merchant_view`.
        (Role::Merchant, _) => Ok(order),
        (Role::Client, Some(own)) if order.customer_id() == Some(own) => Ok(order),
        (Role::Client, _) => Err(ApiError::NotFound(format!("no order {id}"))),
        _ => Ok(order),
    }
}

/// The order as clients see it, with the money its payment has captured and refunded.
pub(crate) async fn full_view(
    state: &AppState,
    id: &OrderId,
    o: &Order,
) -> Result<OrderView, ApiError> {
    full_view_at(state, id, o, None).await
}

/// [`full_view`] with the payment as it was at `at`.
async fn full_view_at(
    state: &AppState,
    id: &OrderId,
    o: &Order,
    at: Option<emporium_event_store::AsOf>,
) -> Result<OrderView, ApiError> {
    let (payment, _) =
        super::load_at::<emporium_domain::payment::Payment>(state, &id.to_string(), at).await?;
    let mut v = view(id, o)?;
    if let (Some(sealed), Some(customer)) = (o.personal(), o.customer_id()) {
        v.personal = Some(state.keyring.show(customer.as_str(), sealed).await?.into());
    }
    if let Some(c) = payment.captured() {
        v.captured = MoneyBody::from_money(&c);
    }
    if let Some(r) = payment.refunded() {
        v.refunded = MoneyBody::from_money(&r);
    }
    Ok(v)
}

fn view(id: &OrderId, o: &Order) -> Result<OrderView, ApiError> {
    let (Some(customer_id), Some(total), Some(region)) =
        (o.customer_id(), o.total(), o.shipping_region())
    else {
        return Err(ApiError::Internal("placed order without details".into()));
    };
    Ok(OrderView {
        order_id: id.to_string(),
        customer_id: customer_id.to_string(),
        status: o.status().map(|s| s.as_str()).unwrap_or("pending"),
        lines: o
            .lines()
            .iter()
            .map(|l| LineView {
                sku: l.sku.to_string(),
                qty: l.qty.get(),
                unit_price: MoneyBody::from_money(&l.unit_price),
                line_total: MoneyBody::from_money(&l.line_total),
                discount: MoneyBody::from_money(
                    &l.discount.unwrap_or(Money::zero(l.line_total.currency())),
                ),
            })
            .collect(),
        shipping: ShippingBody {
            region: region.to_string(),
            address_lines: None,
        },
        subtotal: MoneyBody::from_money(
            &total
                .checked_add(o.discount().unwrap_or(&Money::zero(total.currency())))
                .unwrap_or(*total),
        ),
        discount: MoneyBody::from_money(o.discount().unwrap_or(&Money::zero(total.currency()))),
        total: MoneyBody::from_money(total),
        promo_codes: o.promotions().iter().map(|p| p.code.to_string()).collect(),
        review: o.review().map(|r| ReviewView {
            score: r.score,
            reasons: r.reasons.iter().map(ToString::to_string).collect(),
            review_deadline: chrono::DateTime::from_timestamp_millis(r.review_deadline_ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            decision: match r.approved {
                None => "pending",
                Some(true) => "approved",
                Some(false) => "rejected",
            },
        }),
        parts: parts(o, total.currency()),
        allocation: o
            .allocation()
            .iter()
            .map(|a| AllocationView {
                sku: a.sku.to_string(),
                warehouse_id: a.warehouse_id.to_string(),
                qty: a.qty.get(),
            })
            .collect(),
        reject_reason: o.reject_reason().map(ToString::to_string),
        shipments: o
            .shipments()
            .iter()
            .map(|s| super::fulfilment::ShipmentView::of(id, s))
            .collect(),
        returns: o
            .returns()
            .iter()
            .map(|r| super::fulfilment::ReturnView::of(id, r))
            .collect(),
        captured: MoneyBody::from_money(&Money::zero(total.currency())),
        refunded: MoneyBody::from_money(&Money::zero(total.currency())),
        personal: None,
    })
}

/// Read an order: status, lines, allocation, total, reject reason, shipments, returns and
/// money; with `as_of`, as it was then (its payment too).
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "Order id (UUID)", format = Uuid), super::AsOfQuery),
    responses((status = 200, description = "The order", body = OrderView), ReadProblems))]
pub async fn get(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiPath(id): ApiPath<String>,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<super::AsOfQuery>,
) -> Result<Json<OrderView>, ApiError> {
    let id = parse_order_id(&id)?;
    let at = q.point()?;
    let order = match at {
        None => load_visible_order(&state, &ctx.actor, &id).await?,
        Some(_) => {
            let (order, version) = super::load_at::<Order>(&state, &id.to_string(), at).await?;
            if version == 0 {
                return Err(ApiError::NotFound(format!("no order {id} at that point")));
            }
            visible(&ctx.actor, &id, order)?
        }
    };
    let view = full_view_at(&state, &id, &order, at).await?;
    match &ctx.actor.merchant_id {
        Some(merchant) if ctx.actor.role == Role::Merchant => {
            Ok(Json(merchant_view(&state, merchant, &order, view).await?))
        }
        _ => Ok(Json(view)),
    }
}

/// The order as `merchant` may see it: only its own lines (and their allocation, shipments
/// and returns), its part's sums, no personal data and no fraud review. An order without
/// its products is reported missing.
async fn merchant_view(
    state: &AppState,
    merchant: &emporium_domain::values::MerchantId,
    order: &Order,
    mut v: OrderView,
) -> Result<OrderView, ApiError> {
    let mut own = Vec::new();
    for line in order.lines() {
        let (p, _) = state
            .store
            .load_cached::<emporium_domain::Product>(line.sku.as_str())
            .await?;
        if p.merchant_id() == Some(merchant) {
            own.push(line.sku.to_string());
        }
    }
    if own.is_empty() {
        return Err(ApiError::NotFound(format!("no order {}", v.order_id)));
    }
    let mine = |sku: &String| own.contains(sku);
    v.lines.retain(|l| mine(&l.sku));
    v.allocation.retain(|a| mine(&a.sku));
    for s in &mut v.shipments {
        s.lines.retain(|l| mine(&l.sku));
    }
    v.shipments.retain(|s| !s.lines.is_empty());
    for r in &mut v.returns {
        r.lines.retain(|l| mine(&l.sku));
    }
    v.returns.retain(|r| !r.lines.is_empty());
    let sum = |amounts: &mut dyn Iterator<Item = i64>| amounts.sum::<i64>();
    let currency = v.total.currency.clone();
    let money = |amount_minor: i64| MoneyBody {
        amount_minor,
        currency: currency.clone(),
    };
    let subtotal = sum(&mut v.lines.iter().map(|l| l.line_total.amount_minor));
    let discount = sum(&mut v.lines.iter().map(|l| l.discount.amount_minor));
    v.subtotal = money(subtotal);
    v.discount = money(discount);
    v.total = money(subtotal - discount);
    for s in &mut v.shipments {
        s.amount = money(sum(&mut s.lines.iter().map(|l| l.amount.amount_minor)));
    }
    for r in &mut v.returns {
        r.amount = money(sum(&mut r.lines.iter().map(|l| l.amount.amount_minor)));
    }
    v.captured = money(sum(&mut v.shipments.iter().map(|s| s.amount.amount_minor)));
    v.refunded = money(sum(&mut v.returns.iter().map(|r| r.amount.amount_minor)));
    v.parts.retain(|p| p.merchant_id == merchant.as_str());
    v.personal = None;
    v.review = None;
    Ok(v)
}

/// The payment of an order: authorised, captured, refunded and voided amounts; with
/// `as_of`, as it was then.
#[utoipa::path(get, path = "/v1/orders/{id}/payment", tag = "orders",
    params(("id" = String, Path, description = "Order id (UUID)", format = Uuid), super::AsOfQuery),
    responses((status = 200, description = "The payment", body = PaymentView), ReadProblems))]
pub async fn payment(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiPath(id): ApiPath<String>,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<super::AsOfQuery>,
) -> Result<Json<PaymentView>, ApiError> {
    let id = parse_order_id(&id)?;
    let at = q.point()?;
    // Visibility follows the order's (a client sees only its own).
    load_visible_order(&state, &ctx.actor, &id).await?;
    let (p, version) =
        super::load_at::<emporium_domain::payment::Payment>(&state, &id.to_string(), at).await?;
    // Before its authorization a payment is `new`, with no amounts.
    let money = |m: Option<Money>| m.map(|m| MoneyBody::from_money(&m));
    Ok(Json(PaymentView {
        order_id: id.to_string(),
        status: p.status().as_str(),
        authorized: money(p.authorized()),
        captured: money(p.captured()),
        refunded: money(p.refunded()),
        version: version as i64,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    pub order_id: String,
    /// `new`, `authorized` or `voided`.
    pub status: &'static str,
    pub authorized: Option<MoneyBody>,
    pub captured: Option<MoneyBody>,
    pub refunded: Option<MoneyBody>,
    /// Events of the payment folded into this view.
    pub version: i64,
}

/// Cancel an order (pending or confirmed): releases its stock and voids its payment.
/// The body is optional: `{"reason": "..."}`.
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", request_body(content = Option<CancelBody>),
    params(("id" = String, Path, description = "Order id (UUID)", format = Uuid)),
    responses((status = 200, description = "Cancelled", body = OrderView), CommandProblems))]
pub async fn cancel(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Result<Json<OrderView>, ApiError> {
    let id = parse_order_id(&id)?;
    // The body is optional: empty or `null` means "no reason given".
    let body: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        serde_json::from_slice::<Option<CancelBody>>(&body)
            .map_err(|e| ApiError::field("", format!("invalid cancel body: {e}")))?
            .unwrap_or_default()
    };
    let reason = match body.reason {
        Some(r) => Some(Reason::parse(&r).map_err(|e| ApiError::field("/reason", e))?),
        None => None,
    };
    load_visible_order(&state, &ctx.actor, &id).await?;
    execute::<Order>(
        &state,
        &ctx,
        &id.to_string(),
        OrderCommand::CancelOrder { reason },
    )
    .await?;
    // The saga gives back what the order held (stock, payment) from the `OrderCancelled`
    // event, retrying until done, also after a crash right here.
    let order = load_order(&state, &id).await?;
    Ok(Json(full_view(&state, &id, &order).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    pub decision: ReviewDecision,
    /// Why (shown in the timeline; on a rejection, in the reject reason).
    #[schema(schema_with = crate::schema::optional_reason)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReviewDecision {
    Approve,
    Reject,
}

/// Decide a fraud review: `approve` lets the checkout go on (payment, confirmation);
/// `reject` rejects the order, and the saga gives back its stock and voids its payment.
/// Only for orders `under_review`. The decision is in the timeline with the reviewer's key.
#[utoipa::path(post, path = "/v1/orders/{id}/review", tag = "orders", request_body = ReviewBody,
    params(("id" = String, Path, description = "Order id (UUID)", format = Uuid)),
    responses((status = 200, description = "Decided", body = OrderView), CommandProblems))]
pub async fn review(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReviewBody>,
) -> Result<Json<OrderView>, ApiError> {
    let id = parse_order_id(&id)?;
    let note = match body.note {
        Some(r) => Some(Reason::parse(&r).map_err(|e| ApiError::field("/note", e))?),
        None => None,
    };
    load_order(&state, &id).await?;
    execute::<Order>(
        &state,
        &ctx,
        &id.to_string(),
        OrderCommand::ReviewOrder {
            approve: matches!(body.decision, ReviewDecision::Approve),
            note,
        },
    )
    .await?;
    let order = load_order(&state, &id).await?;
    Ok(Json(full_view(&state, &id, &order).await?))
}
