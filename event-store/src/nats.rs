//! Names on NATS: subjects, stream and consumer names all derive from one prefix
//! (`EMPORIUM_NATS_PREFIX`, default `emporium`), so several engines or tests share a server.

/// Subjects and names for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsNames {
    prefix: String,
}

impl NatsNames {
    /// `prefix` must be a valid subject token sequence (letters, digits, `-`, `_`, `.`).
    pub fn new(prefix: &str) -> Self {
        let cleaned: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let cleaned = cleaned.trim_matches('.').to_string();
        Self {
            prefix: if cleaned.is_empty() {
                "emporium".into()
            } else {
                cleaned
            },
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The events stream: `EMPORIUM_EVENTS` for prefix `emporium`.
    pub fn stream(&self) -> String {
        format!("{}_EVENTS", token_name(&self.prefix))
    }

    /// Dead letters of NATS subscribers: `EMPORIUM_DLQ`.
    pub fn dlq_stream(&self) -> String {
        format!("{}_DLQ", token_name(&self.prefix))
    }

    /// Order notifications (docs/events.md): `EMPORIUM_NOTIFICATIONS`.
    pub fn notifications_stream(&self) -> String {
        format!("{}_NOTIFICATIONS", token_name(&self.prefix))
    }

    /// The notification of an order reaching `status`: `emporium.notifications.order.confirmed`.
    pub fn notification_subject(&self, subject: &str) -> String {
        format!("{}.notifications.{subject}", self.prefix)
    }

    /// Everything the notifications stream captures: `emporium.notifications.>`.
    pub fn notifications_wildcard(&self) -> String {
        format!("{}.notifications.>", self.prefix)
    }

    /// Everything the events stream captures: `emporium.events.>`.
    pub fn events_wildcard(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// All events of one aggregate type: `emporium.events.Order.>`.
    pub fn aggregate_type_wildcard(&self, aggregate_type: &str) -> String {
        format!("{}.events.{}.>", self.prefix, encode_token(aggregate_type))
    }

    /// One aggregate's subject: `emporium.events.<type>.<id>`, so per-subject order is the
    /// aggregate's sequence order.
    pub fn subject(&self, aggregate_type: &str, aggregate_id: &str) -> String {
        format!(
            "{}.events.{}.{}",
            self.prefix,
            encode_token(aggregate_type),
            encode_token(aggregate_id)
        )
    }

    pub fn dlq_subject(&self, consumer: &str) -> String {
        format!("{}.dlq.{}", self.prefix, encode_token(consumer))
    }

    pub fn dlq_wildcard(&self) -> String {
        format!("{}.dlq.>", self.prefix)
    }

    /// A durable consumer's name on the events stream.
    pub fn consumer(&self, name: &str) -> String {
        format!("{}_{}", token_name(&self.prefix), token_name(name))
    }
}

/// Stream and consumer names may not contain `.`, `*`, `>` or whitespace.
fn token_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// One subject token: `.`, `*`, `>`, `%`, whitespace and control characters are
/// percent-encoded, so an id like `A..B` cannot produce an empty token.
pub fn encode_token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '.' | '*' | '>' | '%' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_whitespace() || c.is_control() => {
                for b in c.to_string().bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_encode_awkward_ids_into_one_token() {
        let n = NatsNames::new("shop-1");
        assert_eq!(
            n.subject("StockItem", "wh-1:SKU.A..B"),
            "shop-1.events.StockItem.wh-1:SKU%2EA%2E%2EB"
        );
        assert_eq!(n.stream(), "SHOP-1_EVENTS");
        assert_eq!(n.consumer("checkout"), "SHOP-1_CHECKOUT");
        assert_eq!(n.events_wildcard(), "shop-1.events.>");
        assert_eq!(encode_token("a b*>%"), "a%20b%2A%3E%25");
    }

    #[test]
    fn a_bad_prefix_is_cleaned_not_trusted() {
        assert_eq!(NatsNames::new("a b>").prefix(), "a_b_");
        assert_eq!(NatsNames::new("").prefix(), "emporium");
    }
}
