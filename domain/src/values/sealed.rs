//! Personal data as the log stores it: encrypted, so that destroying one key erases it from
//! every event without rewriting any (crypto-shredding; docs/audit.md). The domain only
//! carries it; the event store's `personal` module encrypts and decrypts.

use serde::{Deserialize, Serialize};

/// An AEAD ciphertext and what is needed to open it with its customer's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedData {
    /// Which of the customer's keys sealed it.
    pub key_id: String,
    /// Hex of the 12-byte nonce.
    pub nonce: String,
    /// Hex of the ciphertext with its authentication tag.
    pub ciphertext: String,
}
