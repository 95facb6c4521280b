//! OpenAPI schemas for request fields, mirroring the domain's value checks exactly.
//!
//! Clients and fuzzers (schemathesis in the test suite) generate requests from the published
//! document, so a field's schema must accept precisely what its domain type accepts: no
//! looser (a schema-valid request would be refused), no stricter (a refused value would be
//! documented as valid). Each function here names the domain rule it copies; a test in
//! `tests/tests/e2e/openapi.rs` checks samples against both.

use emporium_domain::inventory::MAX_ADJUSTMENT;
use emporium_domain::order::MAX_PAYMENT_TOKEN_LEN;
use emporium_domain::values::{Currency, Priority, Quantity, MAX_AMOUNT_MINOR};
use utoipa::openapi::schema::{
    AnyOfBuilder, KnownFormat, Object, ObjectBuilder, SchemaFormat, Type,
};
use utoipa::openapi::{RefOr, Schema};

/// `Sku`, `WarehouseId`, `CustomerId`: 1 to 64 of `[A-Za-z0-9._-]`, starting alphanumeric.
pub const IDENT_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";
/// `Region`: 1 to 64 of `[a-z0-9-]`, starting with a lowercase letter or digit.
pub const REGION_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,63}$";
/// Largest label of an API key, in characters.
pub const MAX_LABEL_LEN: usize = 200;

/// A single-line text the domain trims: no control characters, at least one character that
/// is not white space.
const LINE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// A trimmed text where `\n` and `\t` are allowed.
const NOTE: &str = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*$";
/// A verbatim text where `\n` and `\t` are allowed (may be empty).
const VERBATIM: &str = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*$";
/// Free text without control characters (may be empty).
const PLAIN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

fn string(min: usize, max: usize, pattern: &str, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .description(Some(description))
        .build()
}

fn integer(min: i64, max: i64, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min))
        .maximum(Some(max))
        .description(Some(description))
        .build()
}

/// `Sku`.
pub fn sku() -> Object {
    string(1, 64, IDENT_PATTERN, "Product SKU")
}

/// `PromoCode`: 2 to 32 of `[A-Za-z0-9_-]`, starting alphanumeric (any case; kept upper case).
pub fn promo_code() -> Object {
    string(
        2,
        emporium_domain::values::PROMO_CODE_MAX,
        "^[A-Za-z0-9][A-Za-z0-9_-]{1,31}$",
        "Promotion code (case-insensitive)",
    )
}

/// `MerchantId`: as `IDENT_PATTERN` (`house` is the built-in merchant).
pub fn merchant_id() -> Object {
    string(1, 64, IDENT_PATTERN, "Merchant id")
}

/// An optional `MerchantId` (null: the house).
pub fn optional_merchant_id() -> Object {
    let mut o = merchant_id();
    o.schema_type = [Type::String, Type::Null].into_iter().collect();
    o
}

/// An optional webhook URL (null: none).
pub fn optional_webhook_url() -> Object {
    let mut o = webhook_url();
    o.schema_type = [Type::String, Type::Null].into_iter().collect();
    o
}

/// A webhook URL, as `merchant::valid_webhook_url`: `http(s)://`, then no `/` first, no
/// white space (Rust's `char::is_whitespace`) or control characters; at most 2048.
pub fn webhook_url() -> Object {
    const NOT: &str = "\\t-\\r \\u0000-\\u001f\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
    string(
        8,
        emporium_domain::merchant::MAX_WEBHOOK_URL,
        &format!("^https?://[^/{NOT}][^{NOT}]*$"),
        "Where order notifications are POSTed, signed with HMAC-SHA256",
    )
}

/// `WarehouseId`.
pub fn warehouse_id() -> Object {
    string(1, 64, IDENT_PATTERN, "Warehouse id")
}

/// `CustomerId`.
pub fn customer_id() -> Object {
    string(1, 64, IDENT_PATTERN, "Customer id")
}

/// `Region`.
pub fn region() -> Object {
    string(1, 64, REGION_PATTERN, "Shipping region such as `eu-west`")
}

/// `Title`: trimmed, 1 to 200 characters, one line.
pub fn title() -> Object {
    string(1, 200, LINE, "Product title, one line")
}

/// `Category`: trimmed, 1 to 100 characters, one line.
pub fn category() -> Object {
    string(1, 100, LINE, "Product category, one line")
}

/// `Description`: verbatim, 0 to 5000 characters; line breaks and tabs allowed.
pub fn description() -> Object {
    string(
        0,
        5000,
        VERBATIM,
        "Product description; line breaks and tabs allowed",
    )
}

/// `WarehouseName`: trimmed, 1 to 200 characters, one line.
pub fn warehouse_name() -> Object {
    string(1, 200, LINE, "Warehouse display name, one line")
}

/// `Reason`: trimmed, 1 to 500 characters; line breaks and tabs allowed.
pub fn reason() -> Object {
    string(1, 500, NOTE, "Why; line breaks and tabs allowed")
}

/// An optional `Reason`.
pub fn optional_reason() -> Object {
    let mut o = reason();
    o.schema_type = [Type::String, Type::Null].into_iter().collect();
    o
}

/// An API key's label: 0 to 200 characters without control characters.
pub fn label() -> Object {
    string(
        0,
        MAX_LABEL_LEN,
        PLAIN,
        "Free label for people, e.g. who holds the key",
    )
}

/// The sandbox payment token: 1 to 256 characters, no white space or control characters.
pub fn payment_token() -> Object {
    let pattern = format!("^[^\\s\\u0000-\\u001f\\u007f-\\u009f]{{1,{MAX_PAYMENT_TOKEN_LEN}}}$");
    string(1, MAX_PAYMENT_TOKEN_LEN, &pattern, "Payment method token")
}

/// Most characters of a customer's name or of one address line.
pub const MAX_PERSONAL_LINE: usize = 200;
/// Most characters of an e-mail address (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Most shipping address lines.
pub const MAX_ADDRESS_LINES: usize = 5;
const EMAIL: &str =
    "^[^\\s@\\u0000-\\u001f\\u007f-\\u009f]+@[^\\s@\\u0000-\\u001f\\u007f-\\u009f]+$";

/// A customer's name: 1 to 200 characters, one line. Stored only encrypted.
pub fn person_name() -> Object {
    string(
        1,
        MAX_PERSONAL_LINE,
        LINE,
        "Customer name (personal data, erasable)",
    )
}

/// An e-mail address: one `@` between two non-empty parts, no spaces, 3 to 254 characters.
pub fn email() -> Object {
    string(
        3,
        MAX_EMAIL_LEN,
        EMAIL,
        "E-mail address (personal data, erasable)",
    )
}

/// Shipping address lines: up to 5, each 1 to 200 characters on one line.
pub fn address_lines() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(string(1, MAX_PERSONAL_LINE, LINE, "One address line"))
        .max_items(Some(MAX_ADDRESS_LINES))
        .description(Some("Shipping address lines (personal data, erasable)"))
        .build()
}

/// `Quantity`.
pub fn quantity() -> Object {
    integer(1, i64::from(Quantity::MAX), "Units, 1 to 1,000,000")
}

/// `Priority`.
pub fn priority() -> Object {
    integer(0, i64::from(Priority::MAX), "0 to 1000; lower is preferred")
}

/// A money amount in minor units.
pub fn amount_minor() -> Object {
    integer(
        0,
        MAX_AMOUNT_MINOR,
        "Integer minor units (cents): 1999 is 19.99 EUR",
    )
}

/// `Currency`: the active ISO 4217 codes the domain accepts.
pub fn currency() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(Currency::all().map(|c| c.as_str())))
        .description(Some("Active ISO 4217 alphabetic code, upper case"))
        .build()
}

/// `as_of`: a feed position (digits) or an RFC 3339 time.
pub fn as_of() -> RefOr<Schema> {
    AnyOfBuilder::new()
        .item(string(1, 18, "^[0-9]{1,18}$", "A feed position"))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .description(Some("An RFC 3339 time"))
                .build(),
        )
        .description(Some(
            "See it as it was: after the events at or below this feed position, or recorded \
             at or before this time",
        ))
        .build()
        .into_ref()
}

/// A stock adjustment: non-zero, at most `MAX_ADJUSTMENT` either way.
pub fn adjustment() -> RefOr<Schema> {
    AnyOfBuilder::new()
        .item(integer(-MAX_ADJUSTMENT, -1, "Units taken off"))
        .item(integer(1, MAX_ADJUSTMENT, "Units added"))
        .description(Some("Signed change of on-hand units, never 0"))
        .build()
        .into_ref()
}

/// A composite schema as a field or body schema.
pub(crate) trait IntoRef {
    fn into_ref(self) -> RefOr<Schema>;
}

impl<T: Into<Schema>> IntoRef for T {
    fn into_ref(self) -> RefOr<Schema> {
        RefOr::T(self.into())
    }
}
