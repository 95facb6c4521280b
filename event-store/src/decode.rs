//! Where a stored row becomes an event, once, for every read path (feed, timeline, export,
//! relay, bus): the [`Envelope`] generic over its payload, the one row decoder, and the
//! [`Upcasters`] that turn an older stored shape into today's domain event.
//!
//! # Typed decoding
//! [`Upcasters::decode`] gives an `Envelope<A::Event>` for aggregate `A`, and
//! [`Upcasters::decode_any`] an `Envelope<Event>` (the domain's union) for any aggregate.
//! Both dispatch on the stored `event_version`: at the current version (the event enum's
//! [`EventSchema`]) the payload deserialises straight into the enum; at an older one the
//! upcasters registered for that event type and version run in a chain until the current
//! version is reached. An unknown aggregate type, event type or version, or a payload that
//! does not fit its type, is a [`DecodeError`] naming the event: never a default.
//!
//! A decoded envelope carries the version of the payload it holds (today's), not the
//! stored one.
//!
//! This module is the only place outside the domain's own `event_type()` that compares
//! event type names.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use emporium_domain::{
    Checkout, Event, EventSchema, Merchant, Order, Payment, Product, Promotion, StockItem,
    Warehouse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use crate::metadata::EventMetadata;
use crate::StoreError;

/// One stored event with its place in the feed. `P` is the payload: stored JSON
/// ([`FeedEvent`]), JSON text left unparsed ([`RawFeedEvent`]), or a domain event.
/// Serialised, it is the JSON of every NATS message and `GET /v1/events` item (see
/// docs/events.md): a contract, so fields are only ever added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P> {
    /// Gap-free position in commit order; the cursor clients pass back as `after`. 0 for an
    /// event read by aggregate before the sequencer stamped it.
    pub position: i64,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: P,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
}

/// An event whose payload is the stored JSON.
pub type FeedEvent = Envelope<Value>;
/// An event whose payload stays the stored JSON text: forwarded without being parsed into
/// a tree and printed again.
pub type RawFeedEvent = Envelope<Box<RawValue>>;

impl<P> Envelope<P> {
    /// The same envelope around another payload.
    pub fn map<Q>(self, f: impl FnOnce(P) -> Q) -> Envelope<Q> {
        Envelope {
            position: self.position,
            event_id: self.event_id,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
            event_version: self.event_version,
            payload: f(self.payload),
            metadata: self.metadata,
            recorded_at: self.recorded_at,
        }
    }

    fn with_payload<Q>(&self, payload: Q, version: &str) -> Envelope<Q> {
        Envelope {
            position: self.position,
            event_id: self.event_id,
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            sequence: self.sequence,
            event_type: self.event_type.clone(),
            event_version: version.to_string(),
            payload,
            metadata: self.metadata.clone(),
            recorded_at: self.recorded_at,
        }
    }

    /// Names the event in error messages.
    fn describe(&self) -> String {
        format!(
            "{} {}/{} #{} (feed position {}) v{}",
            self.event_type,
            self.aggregate_type,
            self.aggregate_id,
            self.sequence,
            self.position,
            self.event_version
        )
    }
}

/// Stored payload representations a typed decoder can read.
pub trait StoredPayload {
    fn parse<T: DeserializeOwned>(&self) -> serde_json::Result<T>;
    fn to_value(&self) -> serde_json::Result<Value>;
    /// From the stored column text.
    fn from_text(text: String) -> serde_json::Result<Self>
    where
        Self: Sized;
}

impl StoredPayload for Value {
    fn parse<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        T::deserialize(self)
    }
    fn to_value(&self) -> serde_json::Result<Value> {
        Ok(self.clone())
    }
    fn from_text(text: String) -> serde_json::Result<Self> {
        serde_json::from_str(&text)
    }
}

impl StoredPayload for Box<RawValue> {
    fn parse<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.get())
    }
    fn to_value(&self) -> serde_json::Result<Value> {
        serde_json::from_str(self.get())
    }
    fn from_text(text: String) -> serde_json::Result<Self> {
        RawValue::from_string(text)
    }
}

/// Why a stored event could not become a domain event. Every variant names the event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event {event}: unknown aggregate type")]
    UnknownAggregate { event: String },
    #[error("event {event}: unknown event type for this aggregate")]
    UnknownType { event: String },
    #[error("event {event}: no upcaster from version {version} (current version {current})")]
    UnknownVersion {
        event: String,
        version: String,
        current: String,
    },
    #[error("event {event}: upcaster from version {version} failed: {reason}")]
    Upcast {
        event: String,
        version: String,
        reason: String,
    },
    #[error("event {event}: payload does not fit the event type: {reason}")]
    Payload { event: String, reason: String },
}

impl From<DecodeError> for StoreError {
    fn from(e: DecodeError) -> Self {
        StoreError::Decode(e.to_string())
    }
}

/// Turns the stored JSON of one event type at one version into the next version's.
pub type UpcastFn = fn(Value) -> Result<Value, String>;

/// One step of an event type's history: payloads stored at `from_version` become
/// `to_version` payloads.
#[derive(Clone, Copy)]
pub struct Upcaster {
    pub aggregate_type: &'static str,
    pub event_type: &'static str,
    pub from_version: &'static str,
    pub to_version: &'static str,
    pub upcast: UpcastFn,
}

impl std::fmt::Debug for Upcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Upcaster({}/{} {} -> {})",
            self.aggregate_type, self.event_type, self.from_version, self.to_version
        )
    }
}

/// Longest upcaster chain followed before giving up (a cycle is a registration bug).
const MAX_CHAIN: usize = 32;

/// The upcasters of every event type, by (aggregate type, event type, stored version).
/// Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Upcasters {
    steps: Arc<HashMap<(String, String, String), Upcaster>>,
}

/// The current version of `event_type` on `aggregate_type`, from the domain's schemas.
pub fn current_version(aggregate_type: &str, event_type: &str) -> Option<&'static str> {
    fn of<A>(event_type: &str) -> Option<&'static str>
    where
        A: Aggregate,
        A::Event: EventSchema,
    {
        A::Event::current_version(event_type)
    }
    match aggregate_type {
        t if t == Product::TYPE => of::<Product>(event_type),
        t if t == Warehouse::TYPE => of::<Warehouse>(event_type),
        t if t == StockItem::TYPE => of::<StockItem>(event_type),
        t if t == Order::TYPE => of::<Order>(event_type),
        t if t == Payment::TYPE => of::<Payment>(event_type),
        t if t == Checkout::TYPE => of::<Checkout>(event_type),
        t if t == Promotion::TYPE => of::<Promotion>(event_type),
        t if t == Merchant::TYPE => of::<Merchant>(event_type),
        _ => None,
    }
}

impl Upcasters {
    /// The engine's own upcasters: every shape change of a domain event since the first
    /// release. None yet: every event type is at its first version.
    pub fn engine() -> Self {
        Self::default()
    }

    /// Adds a step. A later step for the same (type, version) replaces an earlier one.
    #[must_use]
    pub fn with(mut self, step: Upcaster) -> Self {
        Arc::make_mut(&mut self.steps).insert(
            (
                step.aggregate_type.to_string(),
                step.event_type.to_string(),
                step.from_version.to_string(),
            ),
            step,
        );
        self
    }

    /// Runs the chain from the stored version to `current`.
    fn upcast_to<P>(
        &self,
        e: &Envelope<P>,
        current: &str,
        mut payload: Value,
    ) -> Result<Value, DecodeError> {
        let mut version = e.event_version.clone();
        for _ in 0..MAX_CHAIN {
            if version == current {
                return Ok(payload);
            }
            let Some(step) = self.steps.get(&(
                e.aggregate_type.clone(),
                e.event_type.clone(),
                version.clone(),
            )) else {
                break;
            };
            payload = (step.upcast)(payload).map_err(|reason| DecodeError::Upcast {
                event: e.describe(),
                version: version.clone(),
                reason,
            })?;
            version = step.to_version.to_string();
        }
        Err(DecodeError::UnknownVersion {
            event: e.describe(),
            version: e.event_version.clone(),
            current: current.to_string(),
        })
    }

    /// The event as aggregate `A`'s event enum, upcast to today's shape.
    pub fn decode<A, P>(&self, e: &Envelope<P>) -> Result<Envelope<A::Event>, DecodeError>
    where
        A: Aggregate,
        A::Event: EventSchema,
        P: StoredPayload,
    {
        if e.aggregate_type != A::TYPE {
            return Err(DecodeError::UnknownAggregate {
                event: e.describe(),
            });
        }
        let Some(current) = A::Event::current_version(&e.event_type) else {
            return Err(DecodeError::UnknownType {
                event: e.describe(),
            });
        };
        let payload_error = |reason: String| DecodeError::Payload {
            event: e.describe(),
            reason,
        };
        let event: A::Event = if e.event_version == current {
            e.payload
                .parse()
                .map_err(|x| payload_error(x.to_string()))?
        } else {
            let stored = e
                .payload
                .to_value()
                .map_err(|x| payload_error(x.to_string()))?;
            let value = self.upcast_to(e, current, stored)?;
            serde_json::from_value(value).map_err(|x| payload_error(x.to_string()))?
        };
        // The payload's variant must be the one the row says it is.
        if event.event_type() != e.event_type {
            return Err(payload_error(format!(
                "the payload is a {}",
                event.event_type()
            )));
        }
        Ok(e.with_payload(event, current))
    }

    /// The event as the domain's [`Event`] union, whatever its aggregate.
    pub fn decode_any<P: StoredPayload>(
        &self,
        e: &Envelope<P>,
    ) -> Result<Envelope<Event>, DecodeError> {
        let t = e.aggregate_type.as_str();
        if t == Product::TYPE {
            Ok(self.decode::<Product, P>(e)?.map(Event::Product))
        } else if t == Warehouse::TYPE {
            Ok(self.decode::<Warehouse, P>(e)?.map(Event::Warehouse))
        } else if t == StockItem::TYPE {
            Ok(self.decode::<StockItem, P>(e)?.map(Event::StockItem))
        } else if t == Order::TYPE {
            Ok(self.decode::<Order, P>(e)?.map(Event::Order))
        } else if t == Payment::TYPE {
            Ok(self.decode::<Payment, P>(e)?.map(Event::Payment))
        } else if t == Checkout::TYPE {
            Ok(self.decode::<Checkout, P>(e)?.map(Event::Checkout))
        } else if t == Promotion::TYPE {
            Ok(self.decode::<Promotion, P>(e)?.map(Event::Promotion))
        } else if t == Merchant::TYPE {
            Ok(self.decode::<Merchant, P>(e)?.map(Event::Merchant))
        } else {
            Err(DecodeError::UnknownAggregate {
                event: e.describe(),
            })
        }
    }

    /// The event with its payload in today's shape, as JSON text: unchanged (not even
    /// parsed) when stored at the current version, else upcast and re-encoded from the
    /// typed event. For readers that pass JSON on (export, timeline, `GET /v1/events`).
    pub fn upgrade(&self, e: RawFeedEvent) -> Result<RawFeedEvent, DecodeError> {
        let Some(current) = current_version(&e.aggregate_type, &e.event_type) else {
            // The typed decoder says which: an unknown aggregate or an unknown event type.
            return Err(self
                .decode_any(&e)
                .err()
                .unwrap_or(DecodeError::UnknownType {
                    event: e.describe(),
                }));
        };
        if e.event_version == current {
            return Ok(e);
        }
        let typed = self.decode_any(&e)?;
        let text = event_json(&typed.payload).map_err(|x| DecodeError::Payload {
            event: e.describe(),
            reason: x.to_string(),
        })?;
        let raw = RawValue::from_string(text).map_err(|x| DecodeError::Payload {
            event: e.describe(),
            reason: x.to_string(),
        })?;
        Ok(e.with_payload(raw, current))
    }

    /// The same as [`Upcasters::upgrade`] for a parsed payload.
    pub fn upgrade_value(&self, e: FeedEvent) -> Result<FeedEvent, DecodeError> {
        let Some(current) = current_version(&e.aggregate_type, &e.event_type) else {
            return Err(DecodeError::UnknownType {
                event: e.describe(),
            });
        };
        if e.event_version == current {
            return Ok(e);
        }
        let typed = self.decode_any(&e)?;
        let value = event_value(&typed.payload).map_err(|x| DecodeError::Payload {
            event: e.describe(),
            reason: x.to_string(),
        })?;
        Ok(e.with_payload(value, current))
    }

    /// cqrs-es upcasters for aggregate `A`, so loading an aggregate sees old events in
    /// today's shape too.
    pub(crate) fn for_aggregate<A: Aggregate>(&self) -> Vec<Box<dyn EventUpcaster>> {
        self.steps
            .values()
            .filter(|s| s.aggregate_type == A::TYPE)
            .map(|s| Box::new(CqrsUpcaster(*s)) as Box<dyn EventUpcaster>)
            .collect()
    }
}

fn event_json(e: &Event) -> serde_json::Result<String> {
    match e {
        Event::Product(e) => serde_json::to_string(e),
        Event::Warehouse(e) => serde_json::to_string(e),
        Event::StockItem(e) => serde_json::to_string(e),
        Event::Order(e) => serde_json::to_string(e),
        Event::Payment(e) => serde_json::to_string(e),
        Event::Checkout(e) => serde_json::to_string(e),
        Event::Promotion(e) => serde_json::to_string(e),
        Event::Merchant(e) => serde_json::to_string(e),
    }
}

fn event_value(e: &Event) -> serde_json::Result<Value> {
    match e {
        Event::Product(e) => serde_json::to_value(e),
        Event::Warehouse(e) => serde_json::to_value(e),
        Event::StockItem(e) => serde_json::to_value(e),
        Event::Order(e) => serde_json::to_value(e),
        Event::Payment(e) => serde_json::to_value(e),
        Event::Checkout(e) => serde_json::to_value(e),
        Event::Promotion(e) => serde_json::to_value(e),
        Event::Merchant(e) => serde_json::to_value(e),
    }
}

/// One of our upcasters as cqrs-es wants it when loading aggregates. A failing step leaves
/// the payload as stored, so deserialising it fails loudly instead of loading a default.
struct CqrsUpcaster(Upcaster);

impl EventUpcaster for CqrsUpcaster {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == self.0.event_type && event_version == self.0.from_version
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Ok(v) = (self.0.upcast)(event.payload.clone()) {
            event.payload = v;
            event.event_version = self.0.to_version.to_string();
        }
        event
    }
}

// ---------------------------------------------------------------------------------------------
// The row decoder
// ---------------------------------------------------------------------------------------------

/// The columns every read of events selects, in this order, on Postgres: the payload as
/// JSON text (never a jsonb tree), the metadata fields picked out by the database (a missing
/// or non-string field is '').
#[macro_export]
#[doc(hidden)]
macro_rules! pg_event_columns {
    () => {
        "feed_position, event_id, aggregate_type, aggregate_id, sequence, event_type, \
         event_version, payload::text AS payload, \
         CASE WHEN jsonb_typeof(metadata -> 'actor') = 'string' \
              THEN metadata ->> 'actor' ELSE '' END AS actor, \
         CASE WHEN jsonb_typeof(metadata -> 'request_id') = 'string' \
              THEN metadata ->> 'request_id' ELSE '' END AS request_id, \
         CASE WHEN jsonb_typeof(metadata -> 'correlation_id') = 'string' \
              THEN metadata ->> 'correlation_id' ELSE '' END AS correlation_id, \
         CASE WHEN jsonb_typeof(metadata -> 'causation_id') = 'string' \
              THEN metadata ->> 'causation_id' ELSE '' END AS causation_id, \
         recorded_at"
    };
}

/// The same columns on the embedded store.
#[macro_export]
#[doc(hidden)]
macro_rules! sqlite_event_columns {
    () => {
        "feed_position, event_id, aggregate_type, aggregate_id, sequence, event_type, \
         event_version, payload, \
         CASE WHEN json_type(metadata, '$.actor') = 'text' \
              THEN json_extract(metadata, '$.actor') ELSE '' END AS actor, \
         CASE WHEN json_type(metadata, '$.request_id') = 'text' \
              THEN json_extract(metadata, '$.request_id') ELSE '' END AS request_id, \
         CASE WHEN json_type(metadata, '$.correlation_id') = 'text' \
              THEN json_extract(metadata, '$.correlation_id') ELSE '' END AS correlation_id, \
         CASE WHEN json_type(metadata, '$.causation_id') = 'text' \
              THEN json_extract(metadata, '$.causation_id') ELSE '' END AS causation_id, \
         recorded_at"
    };
}

/// The two columns whose stored types differ per backend (uuid / text, timestamptz / text).
pub(crate) trait BackendRow: Row {
    fn event_id(&self) -> Result<Uuid, StoreError>;
    fn recorded_at(&self) -> Result<DateTime<Utc>, StoreError>;
}

impl BackendRow for sqlx::postgres::PgRow {
    fn event_id(&self) -> Result<Uuid, StoreError> {
        Ok(self.try_get(1)?)
    }
    fn recorded_at(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(self.try_get(12)?)
    }
}

impl BackendRow for sqlx::sqlite::SqliteRow {
    fn event_id(&self) -> Result<Uuid, StoreError> {
        let s: &str = self.try_get(1)?;
        Uuid::parse_str(s).map_err(|e| StoreError::Decode(format!("event_id: {e}")))
    }
    fn recorded_at(&self) -> Result<DateTime<Utc>, StoreError> {
        let s: &str = self.try_get(12)?;
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| StoreError::Decode(format!("recorded_at: {e}")))
    }
}

/// One row of the event columns (see [`pg_event_columns`]) as an envelope. The only place
/// a stored row is read.
pub(crate) fn row<R, P>(row: &R) -> Result<Envelope<P>, StoreError>
where
    R: BackendRow,
    P: StoredPayload,
    usize: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let payload: String = row.try_get(7)?;
    let position: Option<i64> = row.try_get(0)?;
    Ok(Envelope {
        position: position.unwrap_or(0),
        event_id: row.event_id()?,
        aggregate_type: row.try_get(2)?,
        aggregate_id: row.try_get(3)?,
        sequence: row.try_get(4)?,
        event_type: row.try_get(5)?,
        event_version: row.try_get(6)?,
        payload: P::from_text(payload).map_err(|e| StoreError::Decode(format!("payload: {e}")))?,
        metadata: EventMetadata {
            actor: row.try_get(8)?,
            request_id: row.try_get(9)?,
            correlation_id: row.try_get(10)?,
            causation_id: row.try_get(11)?,
            // Kept in the row for take-overs (`Store::applied_with_key`), not served.
            idempotency_key: None,
        },
        recorded_at: row.recorded_at()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(event_type: &str, version: &str, payload: Value) -> FeedEvent {
        Envelope {
            position: 7,
            event_id: Uuid::nil(),
            aggregate_type: "StockItem".into(),
            aggregate_id: "W1:SKU-1".into(),
            sequence: 1,
            event_type: event_type.into(),
            event_version: version.into(),
            payload,
            metadata: EventMetadata::system("test"),
            recorded_at: Utc::now(),
        }
    }

    fn received(qty_key: &str) -> Value {
        serde_json::json!({"StockReceived": {"warehouse_id": "W1", "sku": "SKU-1", qty_key: 5,
            "on_hand": 5, "reserved": 0, "available": 5}})
    }

    fn rename_quantity(mut v: Value) -> Result<Value, String> {
        let body = v
            .get_mut("StockReceived")
            .and_then(Value::as_object_mut)
            .ok_or("not a StockReceived")?;
        let q = body.remove("quantity").ok_or("no quantity")?;
        body.insert("qty".into(), q);
        Ok(v)
    }

    const STEP: Upcaster = Upcaster {
        aggregate_type: "StockItem",
        event_type: "StockReceived",
        from_version: "0.9",
        to_version: "1.0",
        upcast: rename_quantity,
    };

    #[test]
    fn an_old_version_is_upcast_and_a_current_one_read_as_is() {
        let u = Upcasters::engine().with(STEP);
        let old = u
            .decode::<StockItem, _>(&stored("StockReceived", "0.9", received("quantity")))
            .unwrap();
        let new = u
            .decode::<StockItem, _>(&stored("StockReceived", "1.0", received("qty")))
            .unwrap();
        assert_eq!(old.payload, new.payload);
        assert_eq!(old.event_version, "1.0");
    }

    #[test]
    fn unknown_versions_types_and_shapes_are_errors_that_name_the_event() {
        let u = Upcasters::engine();
        let e = u
            .decode_any(&stored("StockReceived", "0.9", received("quantity")))
            .unwrap_err();
        assert!(matches!(e, DecodeError::UnknownVersion { .. }));
        assert!(e
            .to_string()
            .contains("StockReceived StockItem/W1:SKU-1 #1"));
        let e = u
            .decode_any(&stored("StockVanished", "1.0", received("qty")))
            .unwrap_err();
        assert!(matches!(e, DecodeError::UnknownType { .. }), "{e}");
        let e = u
            .decode_any(&stored("StockReceived", "1.0", received("quantity")))
            .unwrap_err();
        assert!(matches!(e, DecodeError::Payload { .. }), "{e}");
        let e = u
            .decode_any(&stored("StockAdjusted", "1.0", received("qty")))
            .unwrap_err();
        assert!(
            e.to_string().contains("the payload is a StockReceived"),
            "{e}"
        );
    }

    #[test]
    fn upgrade_rewrites_only_old_payloads() {
        let u = Upcasters::engine().with(STEP);
        let raw = |v: Value| {
            stored("StockReceived", "0.9", v).map(|p| RawValue::from_string(p.to_string()).unwrap())
        };
        let up = u.upgrade(raw(received("quantity"))).unwrap();
        assert_eq!(up.event_version, "1.0");
        let v: Value = serde_json::from_str(up.payload.get()).unwrap();
        assert_eq!(v["StockReceived"]["qty"], 5);
        let mut current = raw(received("qty"));
        current.event_version = "1.0".into();
        let text = current.payload.get().to_string();
        assert_eq!(u.upgrade(current).unwrap().payload.get(), text);
    }
}
