//! Metadata every stored event carries: who caused it and within which request and flow.
//!
//! Auditors follow `correlation_id` across aggregates (one order's whole story) and
//! `causation_id` to the message that directly caused an event. The gateway fills these
//! from the request; sagas copy the correlation id and set the causation id to the event
//! they react to.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The metadata of one command's events, stored as the `metadata` JSON of each row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The API key id (or `system:<component>`) that issued the command.
    pub actor: String,
    /// The HTTP request id (`X-Request-Id`), or a generated one for internal commands.
    pub request_id: String,
    /// Shared by every event of one business flow (an order's checkout).
    pub correlation_id: String,
    /// The id of the request or event that caused this command.
    pub causation_id: String,
    /// The client's `Idempotency-Key`, when the command came with one: a retry that takes
    /// over an abandoned claim looks for it to tell whether the command was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl EventMetadata {
    /// Metadata for a command that starts a new flow: correlation and causation are the
    /// request itself.
    pub fn for_request(actor: impl Into<String>, request_id: impl Into<String>) -> Self {
        let request_id = request_id.into();
        Self {
            actor: actor.into(),
            correlation_id: request_id.clone(),
            causation_id: request_id.clone(),
            request_id,
            idempotency_key: None,
        }
    }

    /// Metadata for internal work (seeding, benchmarks, sagas without a request).
    pub fn system(component: &str) -> Self {
        Self::for_request(format!("system:{component}"), Uuid::new_v4().to_string())
    }

    /// Keeps the flow but records a different direct cause.
    #[must_use]
    pub fn caused_by(mut self, causation_id: impl Into<String>) -> Self {
        self.causation_id = causation_id.into();
        self
    }

    /// Keeps the cause but joins an existing flow.
    #[must_use]
    pub fn correlated_with(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = correlation_id.into();
        self
    }

    /// Records the client's idempotency key with the events.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The map shape cqrs-es carries to the repository.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("actor".to_string(), self.actor.clone()),
            ("request_id".to_string(), self.request_id.clone()),
            ("correlation_id".to_string(), self.correlation_id.clone()),
            ("causation_id".to_string(), self.causation_id.clone()),
        ]);
        if let Some(k) = &self.idempotency_key {
            map.insert("idempotency_key".to_string(), k.clone());
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_the_stored_map() {
        let m = EventMetadata::for_request("key_1", "req-1").caused_by("evt-9");
        let json = serde_json::to_value(m.to_map()).unwrap();
        assert_eq!(serde_json::from_value::<EventMetadata>(json).unwrap(), m);
        assert_eq!(m.correlation_id, "req-1");
        assert_eq!(m.causation_id, "evt-9");
    }
}
