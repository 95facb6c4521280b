//! Tamper evidence for the event log: seals, verification, signed digests and inclusion
//! proofs (docs/audit.md explains them to auditors; docs/adr/0014-tamper-evident-log.md
//! says why they are built this way).
//!
//! - **Seals.** Every event is sealed in the append statement itself:
//!   `chain_hash = SHA-256(previous seal of the same stream, or 32 zero bytes ‖ feed position
//!   ‖ SHA-256(canonical bytes))`. The position is sealed, so an edited, moved or swapped row
//!   no longer matches its seal, and a deleted row leaves a gap in positions or sequences.
//!   Postgres computes it in `emporium_append` (a migration); the embedded store in the
//!   append's write transaction ([`crate::repository`]). Both follow [`canonical`].
//! - **Digests.** [`Auditor::digest`] signs, with an Ed25519 key kept in a file, the Merkle
//!   root over the seals of positions 1..n; the digests are kept in `audit_digests` and
//!   published by the engine to a directory and a NATS subject.
//! - **Verification.** [`Auditor::verify`] walks the log and reports the first broken
//!   position and why; [`Auditor::proofs`] gives inclusion proofs of events against the
//!   latest digest, and [`verify_proof_document`] checks them offline.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rs_merkle::{Hasher, MerkleTree};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::Row;

use crate::{Db, StoreError};

/// The previous seal of a stream's first event.
pub const GENESIS: [u8; 32] = [0; 32];
/// First line of every event's canonical bytes.
pub const CANONICAL_VERSION: &str = "emporium-event-v1";
/// First line of every digest's signed message.
pub const DIGEST_VERSION: &str = "emporium-digest-v1";
/// Rows read per query while walking the log.
const PAGE: i64 = 5_000;
/// Problems a report lists at most (the first one is what matters).
const MAX_PROBLEMS: usize = 100;

/// The canonical bytes of one event (docs/audit.md): fields joined by `\n`, the time in
/// microseconds since the Unix epoch, payload and metadata as [`canonical_json`].
#[allow(clippy::too_many_arguments)]
pub fn canonical(
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    event_version: &str,
    event_id: &str,
    recorded_at_micros: i64,
    payload: &str,
    metadata: &str,
) -> String {
    format!(
        "{CANONICAL_VERSION}\n{aggregate_type}\n{aggregate_id}\n{sequence}\n\
         {event_type}\n{event_version}\n{event_id}\n{recorded_at_micros}\n{payload}\n{metadata}"
    )
}

/// An event's seal: `SHA-256(prev ‖ position as 8 bytes big-endian ‖ SHA-256(canonical))`.
pub fn seal(prev: &[u8; 32], position: i64, canonical: &[u8]) -> [u8; 32] {
    chain(prev, position, &content_hash(canonical))
}

/// `SHA-256(canonical)`: what the engine computes per event before its append.
pub fn content_hash(canonical: &[u8]) -> [u8; 32] {
    Sha256::digest(canonical).into()
}

/// `SHA-256(prev ‖ position as 8 bytes big-endian ‖ content)`.
pub fn chain(prev: &[u8; 32], position: i64, content: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(position.to_be_bytes());
    h.update(content);
    h.finalize().into()
}

/// JSON in the one form seals cover (docs/audit.md): no whitespace, object keys sorted by
/// code point at every level, strings and numbers as serde_json writes them. Whatever order
/// or spacing a database keeps a document in, parsing and writing it this way gives the same
/// text.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut Vec<u8>) {
        use serde_json::Value;
        match v {
            Value::Object(map) => {
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                members.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (i, (k, item)) in members.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    // Writing a string or a scalar into a Vec cannot fail.
                    let _ = serde_json::to_writer(&mut *out, k);
                    out.push(b':');
                    write(item, out);
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            scalar => {
                let _ = serde_json::to_writer(&mut *out, scalar);
            }
        }
    }
    let mut out = Vec::with_capacity(256);
    write(value, &mut out);
    // serde_json writes UTF-8 only.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod canonical_tests {
    use super::canonical_json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_drops_spaces() {
        let a: serde_json::Value = serde_json::from_str(
            r#"{"b": {"z": 1, "a": [2, {"y": "é\n", "x": null}]}, "a": true}"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":true,"b":{"a":[2,{"x":null,"y":"é\n"}],"z":1}}"#
        );
        // The same document as Postgres jsonb renders it gives the same bytes.
        let b: serde_json::Value = serde_json::from_str(
            r#"{"a": true, "b": {"a": [2, {"x": null, "y": "é\n"}], "z": 1}}"#,
        )
        .unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }
}

/// [`canonical_json`] of JSON text (as a database returns it).
pub fn canonical_json_text(text: &str) -> Result<String, StoreError> {
    serde_json::from_str::<serde_json::Value>(text)
        .map(|v| canonical_json(&v))
        .map_err(|e| StoreError::Decode(format!("stored JSON: {e}")))
}

/// The Merkle leaf of a seal: `SHA-256(0x00 ‖ seal)`.
pub fn leaf(seal: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(seal);
    h.finalize().into()
}

/// An inner Merkle node: `SHA-256(0x01 ‖ left ‖ right)`. The distinct prefixes keep a leaf
/// from ever passing for an inner node.
pub fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// rs_merkle's tree with our node hashing; a node without a right sibling moves up as it is.
#[derive(Clone)]
pub struct AuditHasher;

impl Hasher for AuditHasher {
    type Hash = [u8; 32];

    fn hash(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    fn concat_and_hash(left: &[u8; 32], right: Option<&[u8; 32]>) -> [u8; 32] {
        match right {
            Some(right) => node(left, right),
            None => *left,
        }
    }
}

/// The root reached from `leaf` at `index` of `count` leaves through `path` (the siblings
/// from the bottom up, a level without a sibling contributing none): the procedure of
/// docs/audit.md, written without the tree library so that it checks that library too.
pub fn root_from_path(
    leaf: [u8; 32],
    index: usize,
    count: usize,
    path: &[[u8; 32]],
) -> Option<[u8; 32]> {
    if index >= count {
        return None;
    }
    let mut hash = leaf;
    let (mut i, mut width) = (index, count);
    let mut siblings = path.iter();
    while width > 1 {
        if i % 2 == 1 {
            hash = node(siblings.next()?, &hash);
        } else if i + 1 < width {
            hash = node(&hash, siblings.next()?);
        }
        i /= 2;
        width = width.div_ceil(2);
    }
    siblings.next().is_none().then_some(hash)
}

/// One stored event as its seal covers it.
#[derive(Debug, Clone)]
pub struct SealedRow {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub event_id: String,
    pub recorded_at_micros: i64,
    pub payload: String,
    pub metadata: String,
    pub chain_hash: Option<Vec<u8>>,
}

impl SealedRow {
    pub fn canonical(&self) -> String {
        canonical(
            &self.aggregate_type,
            &self.aggregate_id,
            self.sequence,
            &self.event_type,
            &self.event_version,
            &self.event_id,
            self.recorded_at_micros,
            &self.payload,
            &self.metadata,
        )
    }

    fn stored_seal(&self) -> Option<[u8; 32]> {
        self.chain_hash.as_deref().and_then(|h| h.try_into().ok())
    }
}

const PG_SEALED_COLUMNS: &str = "feed_position, aggregate_type, aggregate_id, sequence, \
    event_type, event_version, event_id::text, \
    (extract(epoch FROM recorded_at) * 1000000)::bigint, payload::text, metadata::text, chain_hash";
const SQLITE_SEALED_COLUMNS: &str = "feed_position, aggregate_type, aggregate_id, sequence, \
    event_type, event_version, event_id, recorded_at, payload, metadata, chain_hash";

/// A row of the sealed columns; the time is read per backend (column 7).
fn sealed<R>(row: &R, recorded_at_micros: i64) -> Result<SealedRow, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(SealedRow {
        position: row.try_get(0)?,
        aggregate_type: row.try_get(1)?,
        aggregate_id: row.try_get(2)?,
        sequence: row.try_get(3)?,
        event_type: row.try_get(4)?,
        event_version: row.try_get(5)?,
        event_id: row.try_get(6)?,
        recorded_at_micros,
        payload: canonical_json_text(&row.try_get::<String, _>(8)?)?,
        metadata: canonical_json_text(&row.try_get::<String, _>(9)?)?,
        chain_hash: row.try_get(10)?,
    })
}

fn pg_sealed(row: &sqlx::postgres::PgRow) -> Result<SealedRow, StoreError> {
    sealed(row, row.try_get(7)?)
}

fn sqlite_sealed(row: &sqlx::sqlite::SqliteRow) -> Result<SealedRow, StoreError> {
    let recorded_at: String = row.try_get(7)?;
    sealed(row, sqlite_micros(&recorded_at)?)
}

/// The embedded store keeps times as RFC 3339 text with milliseconds.
fn sqlite_micros(text: &str) -> Result<i64, StoreError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        .map_err(|e| StoreError::Decode(format!("recorded_at: {e}")))
}

/// The embedded store's time format, and the microseconds its seal names.
pub(crate) fn sqlite_now() -> (String, i64) {
    let now = chrono::Utc::now();
    let text = now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let micros = now.timestamp_millis() * 1000;
    (text, micros)
}

/// Up to [`PAGE`] rows after `after`, up to `to`, in feed order.
async fn read_page(db: &Db, after: i64, to: i64) -> Result<Vec<SealedRow>, StoreError> {
    match db {
        Db::Postgres(pool) => sqlx::query(&format!(
            "SELECT {PG_SEALED_COLUMNS} FROM events \
              WHERE feed_position > $1 AND feed_position <= $2 ORDER BY feed_position LIMIT $3"
        ))
        .bind(after)
        .bind(to)
        .bind(PAGE)
        .fetch_all(pool)
        .await?
        .iter()
        .map(pg_sealed)
        .collect(),
        Db::Sqlite(pool) => sqlx::query(&format!(
            "SELECT {SQLITE_SEALED_COLUMNS} FROM events \
              WHERE feed_position > ?1 AND feed_position <= ?2 ORDER BY feed_position LIMIT ?3"
        ))
        .bind(after)
        .bind(to)
        .bind(PAGE)
        .fetch_all(pool)
        .await?
        .iter()
        .map(sqlite_sealed)
        .collect(),
    }
}

/// The rows at these positions (those that exist).
async fn read_positions(db: &Db, positions: &[i64]) -> Result<Vec<SealedRow>, StoreError> {
    match db {
        Db::Postgres(pool) => sqlx::query(&format!(
            "SELECT {PG_SEALED_COLUMNS} FROM events \
              WHERE feed_position = ANY($1) ORDER BY feed_position"
        ))
        .bind(positions)
        .fetch_all(pool)
        .await?
        .iter()
        .map(pg_sealed)
        .collect(),
        Db::Sqlite(pool) => {
            let mut rows = Vec::with_capacity(positions.len());
            for p in positions {
                let row = sqlx::query(&format!(
                    "SELECT {SQLITE_SEALED_COLUMNS} FROM events WHERE feed_position = ?1"
                ))
                .bind(p)
                .fetch_optional(pool)
                .await?;
                if let Some(row) = row {
                    rows.push(sqlite_sealed(&row)?);
                }
            }
            Ok(rows)
        }
    }
}

/// The stored seal of a stream's event at `sequence` (None when absent or unsealed).
async fn stored_seal_of(
    db: &Db,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
) -> Result<Option<[u8; 32]>, StoreError> {
    let hash: Option<Option<Vec<u8>>> = crate::on_db!(db, pool => sqlx::query_scalar(&db.sql(
        "SELECT chain_hash FROM events \
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(sequence)
    .fetch_optional(pool)
    .await?);
    Ok(hash.flatten().and_then(|h| h.try_into().ok()))
}

/// The stored seal of a stream's event on the embedded store, inside the caller's write
/// transaction (genesis when absent or unsealed).
pub(crate) async fn sqlite_stored_seal(
    conn: &mut sqlx::SqliteConnection,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
) -> Result<[u8; 32], sqlx::Error> {
    let h: Option<Option<Vec<u8>>> = sqlx::query_scalar(
        "SELECT chain_hash FROM events \
          WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND sequence = ?3",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(sequence)
    .fetch_optional(conn)
    .await?;
    Ok(h.flatten()
        .and_then(|h| h.try_into().ok())
        .unwrap_or(GENESIS))
}

/// The seal a row's predecessor hands on: the stored seal of the stream's previous event.
async fn previous_seal(db: &Db, row: &SealedRow) -> Result<[u8; 32], StoreError> {
    if row.sequence <= 1 {
        return Ok(GENESIS);
    }
    Ok(
        stored_seal_of(db, &row.aggregate_type, &row.aggregate_id, row.sequence - 1)
            .await?
            .unwrap_or(GENESIS),
    )
}

async fn max_position(db: &Db) -> Result<i64, StoreError> {
    let max: Option<i64> = crate::on_db!(db, pool => sqlx::query_scalar(
        "SELECT MAX(feed_position) FROM events"
    )
    .fetch_one(pool)
    .await?);
    Ok(max.unwrap_or(0))
}

/// Seals the events written before sealing existed, in feed order, then drops the marker
/// table the sealing migration left (both backends; a no-op once done).
pub(crate) async fn backfill(db: &Db) -> Result<(), StoreError> {
    let pending: bool = match db {
        Db::Postgres(pool) => {
            sqlx::query_scalar("SELECT to_regclass('audit_backfill') IS NOT NULL")
                .fetch_one(pool)
                .await?
        }
        Db::Sqlite(pool) => sqlx::query_scalar::<_, String>(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'audit_backfill'",
        )
        .fetch_optional(pool)
        .await?
        .is_some(),
    };
    if !pending {
        return Ok(());
    }
    let mut last: HashMap<(String, String), [u8; 32]> = HashMap::new();
    let mut after = 0i64;
    let mut sealed = 0u64;
    loop {
        let rows: Vec<SealedRow> = match db {
            Db::Postgres(pool) => sqlx::query(&format!(
                "SELECT {PG_SEALED_COLUMNS} FROM events WHERE chain_hash IS NULL \
                   AND feed_position > $1 ORDER BY feed_position LIMIT $2"
            ))
            .bind(after)
            .bind(PAGE)
            .fetch_all(pool)
            .await?
            .iter()
            .map(pg_sealed)
            .collect::<Result<_, _>>()?,
            Db::Sqlite(pool) => sqlx::query(&format!(
                "SELECT {SQLITE_SEALED_COLUMNS} FROM events WHERE chain_hash IS NULL \
                   AND feed_position > ?1 ORDER BY feed_position LIMIT ?2"
            ))
            .bind(after)
            .bind(PAGE)
            .fetch_all(pool)
            .await?
            .iter()
            .map(sqlite_sealed)
            .collect::<Result<_, _>>()?,
        };
        let Some(end) = rows.last().map(|r| r.position) else {
            break;
        };
        after = end;
        for row in &rows {
            let key = (row.aggregate_type.clone(), row.aggregate_id.clone());
            let prev = match last.get(&key) {
                Some(h) => *h,
                None => previous_seal(db, row).await?,
            };
            let hash = seal(&prev, row.position, row.canonical().as_bytes());
            crate::on_db!(db, pool => sqlx::query(&db.sql(
                "UPDATE events SET chain_hash = $1 WHERE feed_position = $2",
            ))
            .bind(hash.to_vec())
            .bind(row.position)
            .execute(pool)
            .await
            .map(|_| ())?);
            last.insert(key, hash);
            sealed += 1;
        }
    }
    crate::on_db!(db, pool => sqlx::query("DROP TABLE IF EXISTS audit_backfill")
        .execute(pool)
        .await
        .map(|_| ())?);
    if sealed > 0 {
        tracing::info!(sealed, "sealed the events written before sealing");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Keys and digests
// ---------------------------------------------------------------------------------------------

/// Reads the Ed25519 signing key at `path` (64 hex characters, the secret seed), creating it
/// (readable by its owner only) and a `.pub` file beside it with the public key when missing.
pub fn load_or_create_signing_key(path: &Path) -> Result<SigningKey, StoreError> {
    let config = |e: std::io::Error| StoreError::Config(format!("{}: {e}", path.display()));
    if !path.exists() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(config)?;
        }
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                std::io::Write::write_all(&mut file, hex::encode(key.to_bytes()).as_bytes())
                    .map_err(config)?;
                std::fs::write(
                    public_key_path(path),
                    hex::encode(key.verifying_key().to_bytes()),
                )
                .map_err(config)?;
            }
            // Another engine created it first: read theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(config(e)),
        }
    }
    let text = std::fs::read_to_string(path).map_err(config)?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            StoreError::Config(format!(
                "{}: not an Ed25519 key (64 hex characters)",
                path.display()
            ))
        })?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Where the public key of a signing key file is written.
pub fn public_key_path(key_path: &Path) -> std::path::PathBuf {
    let mut name = key_path.as_os_str().to_owned();
    name.push(".pub");
    name.into()
}

/// Parses a public key given as 64 hex characters (a `.pub` file's content).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("a public key is 64 hex characters")?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

/// A signed statement that the log's positions 1..`position` have this Merkle root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDigest {
    pub version: String,
    pub position: i64,
    /// Hex of the Merkle root over the leaves of positions 1..position.
    pub root: String,
    pub created_at_ms: i64,
    /// Hex of the Ed25519 public key that signed it.
    pub public_key: String,
    /// Hex of the Ed25519 signature over [`SignedDigest::message`].
    pub signature: String,
}

impl SignedDigest {
    /// The bytes signed: `version \n position \n root-hex \n created_at_ms`.
    pub fn message(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.version, self.position, self.root, self.created_at_ms
        )
    }

    fn sign(position: i64, root: [u8; 32], key: &SigningKey) -> Self {
        let mut digest = Self {
            version: DIGEST_VERSION.to_string(),
            position,
            root: hex::encode(root),
            created_at_ms: chrono::Utc::now().timestamp_millis(),
            public_key: hex::encode(key.verifying_key().to_bytes()),
            signature: String::new(),
        };
        digest.signature = hex::encode(key.sign(digest.message().as_bytes()).to_bytes());
        digest
    }

    /// Checks the signature, against `trusted` when given (else the key the digest names,
    /// which proves only that the digest was not altered since it was signed).
    pub fn check_signature(&self, trusted: Option<&VerifyingKey>) -> Result<(), String> {
        let named = parse_public_key(&self.public_key)?;
        if let Some(trusted) = trusted {
            if trusted != &named {
                return Err("the digest was signed by another key than the trusted one".into());
            }
        }
        let signature: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the signature is not 128 hex characters")?;
        named
            .verify(
                self.message().as_bytes(),
                &Signature::from_bytes(&signature),
            )
            .map_err(|_| "the digest's signature does not verify".to_string())
    }

    fn root_bytes(&self) -> Option<[u8; 32]> {
        hex::decode(&self.root).ok().and_then(|b| b.try_into().ok())
    }
}

/// The proof that one event is in the log a digest signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventProof {
    pub position: i64,
    /// Hex of the seal this event's seal chains from.
    pub prev_hash: String,
    /// The event's canonical bytes (UTF-8).
    pub canonical: String,
    /// Hex of the seal, `SHA-256(prev ‖ position as 8 bytes ‖ SHA-256(canonical))`.
    pub chain_hash: String,
    /// Zero-based: `position - 1`.
    pub leaf_index: usize,
    pub leaf_count: usize,
    /// Hex of the sibling hashes from the leaf up (see docs/audit.md).
    pub path: Vec<String>,
}

/// A digest and proofs of events against it: what `?proof=true` returns and
/// `emporium verify-proof` checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofDocument {
    pub digest: SignedDigest,
    pub events: Vec<EventProof>,
}

impl ProofDocument {
    /// Reads a proof document from JSON: a timeline answered with `?proof=true` (its `proof`
    /// member) or the document alone.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum File {
            Timeline { proof: ProofDocument },
            Bare(ProofDocument),
        }
        Ok(match serde_json::from_str::<File>(text)? {
            File::Timeline { proof } => proof,
            File::Bare(doc) => doc,
        })
    }
}

/// Checks a proof document offline: the digest's signature by `key`, and for each event its
/// seal from its canonical bytes, its path to the signed root, and that events of one stream
/// chain from one another. Returns how many events were checked.
pub fn verify_proof_document(doc: &ProofDocument, key: &VerifyingKey) -> Result<usize, String> {
    doc.digest.check_signature(Some(key))?;
    let root = doc
        .digest
        .root_bytes()
        .ok_or("the digest's root is not 32 bytes of hex")?;
    let count = usize::try_from(doc.digest.position).map_err(|_| "bad digest position")?;
    let mut streams: HashMap<(String, String), (i64, String)> = HashMap::new();
    for e in &doc.events {
        let fail = |why: &str| format!("event at position {}: {why}", e.position);
        let lines: Vec<&str> = e.canonical.splitn(10, '\n').collect();
        if lines.len() != 10 || lines[0] != CANONICAL_VERSION {
            return Err(fail("its canonical bytes are not in the documented form"));
        }
        if e.leaf_index as i64 + 1 != e.position {
            return Err(fail("its leaf is not at its position"));
        }
        if e.leaf_count != count {
            return Err(fail("its proof is for another digest"));
        }
        let prev: [u8; 32] = hex::decode(&e.prev_hash)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| fail("prev_hash is not 32 bytes of hex"))?;
        let sealed = seal(&prev, e.position, e.canonical.as_bytes());
        if hex::encode(sealed) != e.chain_hash {
            return Err(fail("its seal does not match its canonical bytes"));
        }
        let path = e
            .path
            .iter()
            .map(|h| hex::decode(h).ok().and_then(|b| b.try_into().ok()))
            .collect::<Option<Vec<[u8; 32]>>>()
            .ok_or_else(|| fail("a path hash is not 32 bytes of hex"))?;
        if root_from_path(leaf(&sealed), e.leaf_index, count, &path) != Some(root) {
            return Err(fail("its path does not lead to the signed root"));
        }
        let stream = (lines[1].to_string(), lines[2].to_string());
        let sequence: i64 = lines[3].parse().map_err(|_| fail("bad sequence"))?;
        if let Some((last_seq, last_hash)) = streams.get(&stream) {
            if sequence == last_seq + 1 && &e.prev_hash != last_hash {
                return Err(fail("it does not chain from the stream's previous event"));
            }
        }
        streams.insert(stream, (sequence, e.chain_hash.clone()));
    }
    Ok(doc.events.len())
}

// ---------------------------------------------------------------------------------------------
// The auditor: digests, proofs, verification
// ---------------------------------------------------------------------------------------------

/// What [`Auditor::verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// No problem found.
    pub ok: bool,
    pub from: i64,
    pub to: i64,
    /// Rows checked.
    pub checked: u64,
    /// The first problem, by position.
    pub first_broken: Option<Problem>,
    /// Up to 100 problems in position order.
    pub problems: Vec<Problem>,
    /// The latest signed digest and whether the log still matches it.
    pub digest: Option<DigestCheck>,
}

/// One broken place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub position: i64,
    /// `missing`, `unsealed`, `out_of_order`, `seal_mismatch`, `digest_mismatch`,
    /// `digest_signature`.
    pub kind: String,
    pub detail: String,
}

/// The latest digest as verification saw it.
#[derive(Debug, Clone, Serialize)]
pub struct DigestCheck {
    pub position: i64,
    pub signature_valid: bool,
    /// None when the walk did not cover positions 1..position.
    pub root_matches: Option<bool>,
}

/// `audit_digests`: position, root, created_at_ms, public_key, signature.
type DigestRow = (i64, Vec<u8>, i64, Vec<u8>, Vec<u8>);

/// Digests, proofs and verification over one store.
pub struct Auditor {
    db: Db,
    /// Leaves of positions 1..len as this process first read them, and the tree of the
    /// latest digest it built or proved against.
    state: tokio::sync::Mutex<TreeState>,
}

#[derive(Default)]
struct TreeState {
    leaves: Vec<[u8; 32]>,
    tree: Option<(i64, Arc<MerkleTree<AuditHasher>>)>,
}

impl Auditor {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            state: tokio::sync::Mutex::new(TreeState::default()),
        }
    }

    /// Extends the cached leaves up to `upto` (or the log's end), stopping at a gap.
    async fn extend_leaves(
        &self,
        state: &mut TreeState,
        upto: Option<i64>,
    ) -> Result<(), StoreError> {
        let end = match upto {
            Some(p) => p,
            None => max_position(&self.db).await?,
        };
        while (state.leaves.len() as i64) < end {
            let after = state.leaves.len() as i64;
            let seals: Vec<(i64, Option<Vec<u8>>)> = crate::on_db!(&self.db, pool => sqlx::query_as(&self.db.sql(
                "SELECT feed_position, chain_hash FROM events \
                  WHERE feed_position > $1 AND feed_position <= $2 ORDER BY feed_position LIMIT $3",
            ))
            .bind(after)
            .bind(end)
            .bind(PAGE * 10)
            .fetch_all(pool)
            .await?);
            if seals.is_empty() {
                break;
            }
            for (position, hash) in seals {
                if position != state.leaves.len() as i64 + 1 {
                    // A gap: sign nothing beyond it.
                    return Ok(());
                }
                let hash: [u8; 32] = hash.and_then(|h| h.try_into().ok()).unwrap_or(GENESIS);
                state.leaves.push(leaf(&hash));
            }
        }
        Ok(())
    }

    /// Signs the Merkle root over positions 1..n (the log's current end) and stores it,
    /// unless the latest digest already covers n. Returns the new digest.
    pub async fn digest(&self, key: &SigningKey) -> Result<Option<SignedDigest>, StoreError> {
        let latest = self.latest_digest().await?;
        let mut state = self.state.lock().await;
        self.extend_leaves(&mut state, None).await?;
        let n = state.leaves.len() as i64;
        if n == 0 || latest.as_ref().is_some_and(|d| d.position >= n) {
            return Ok(None);
        }
        let tree = Arc::new(MerkleTree::<AuditHasher>::from_leaves(&state.leaves));
        let root = tree.root().unwrap_or(GENESIS);
        state.tree = Some((n, tree));
        drop(state);
        let digest = SignedDigest::sign(n, root, key);
        let signature = hex::decode(&digest.signature).unwrap_or_default();
        crate::on_db!(&self.db, pool => sqlx::query(&self.db.sql(
            "INSERT INTO audit_digests (position, root, created_at_ms, public_key, signature) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (position) DO NOTHING",
        ))
        .bind(n)
        .bind(root.to_vec())
        .bind(digest.created_at_ms)
        .bind(key.verifying_key().to_bytes().to_vec())
        .bind(signature)
        .execute(pool)
        .await
        .map(|_| ())?);
        metrics::gauge!("emporium_audit_digest_position").set(n as f64);
        Ok(Some(digest))
    }

    /// The digest covering the most positions, if any was signed.
    pub async fn latest_digest(&self) -> Result<Option<SignedDigest>, StoreError> {
        let row: Option<DigestRow> = crate::on_db!(&self.db, pool => sqlx::query_as(
            "SELECT position, root, created_at_ms, public_key, signature FROM audit_digests \
              ORDER BY position DESC LIMIT 1",
        )
        .fetch_optional(pool)
        .await?);
        Ok(row.map(
            |(position, root, created_at_ms, public_key, signature)| SignedDigest {
                version: DIGEST_VERSION.to_string(),
                position,
                root: hex::encode(root),
                created_at_ms,
                public_key: hex::encode(public_key),
                signature: hex::encode(signature),
            },
        ))
    }

    /// Inclusion proofs of the events at `positions` against the latest digest; events after
    /// it are left out (the next digest covers them). None when no digest was signed yet.
    pub async fn proofs(&self, positions: &[i64]) -> Result<Option<ProofDocument>, StoreError> {
        let Some(digest) = self.latest_digest().await? else {
            return Ok(None);
        };
        let n = digest.position;
        let tree = {
            let mut state = self.state.lock().await;
            match &state.tree {
                Some((p, tree)) if *p == n => tree.clone(),
                _ => {
                    self.extend_leaves(&mut state, Some(n)).await?;
                    let count = (state.leaves.len() as i64).min(n) as usize;
                    let tree = Arc::new(MerkleTree::<AuditHasher>::from_leaves(
                        &state.leaves[..count],
                    ));
                    state.tree = Some((n, tree.clone()));
                    tree
                }
            }
        };
        if tree.leaves_len() as i64 != n
            || tree.root().map(hex::encode) != Some(digest.root.clone())
        {
            return Err(StoreError::Tampered(format!(
                "the log no longer matches the digest at position {n}: run `emporium verify`"
            )));
        }
        let covered: Vec<i64> = positions
            .iter()
            .copied()
            .filter(|p| *p >= 1 && *p <= n)
            .collect();
        let mut events = Vec::with_capacity(covered.len());
        for row in read_positions(&self.db, &covered).await? {
            let prev = previous_seal(&self.db, &row).await?;
            let index = (row.position - 1) as usize;
            let path = tree.proof(&[index]);
            events.push(EventProof {
                position: row.position,
                prev_hash: hex::encode(prev),
                canonical: row.canonical(),
                chain_hash: row
                    .chain_hash
                    .as_deref()
                    .map(hex::encode)
                    .unwrap_or_default(),
                leaf_index: index,
                leaf_count: n as usize,
                path: path.proof_hashes().iter().map(hex::encode).collect(),
            });
        }
        Ok(Some(ProofDocument { digest, events }))
    }

    /// Walks positions `from..=to` (default: the whole log) and reports every place where
    /// the log differs from what was sealed and signed. `progress` is told the rows checked.
    pub async fn verify(
        &self,
        from: Option<i64>,
        to: Option<i64>,
        trusted: Option<&VerifyingKey>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<VerifyReport, StoreError> {
        let from = from.unwrap_or(1).max(1);
        let end = max_position(&self.db).await?;
        let to = to.unwrap_or(end);
        let digest = self.latest_digest().await?;
        let mut problems: Vec<Problem> = Vec::new();
        let push = |problems: &mut Vec<Problem>, position: i64, kind: &str, detail: String| {
            if problems.len() < MAX_PROBLEMS {
                problems.push(Problem {
                    position,
                    kind: kind.to_string(),
                    detail,
                });
            }
        };
        // Leaves are collected for the digest's root only on a walk from position 1.
        let want_leaves = digest
            .as_ref()
            .filter(|d| from == 1 && d.position <= to)
            .map(|d| d.position);
        let mut leaves: Vec<[u8; 32]> = Vec::new();
        let mut streams: HashMap<(String, String), (i64, [u8; 32])> = HashMap::new();
        let mut expected = from;
        let mut checked = 0u64;
        let mut after = from - 1;
        loop {
            let rows = read_page(&self.db, after, to).await?;
            let Some(last) = rows.last() else { break };
            after = last.position;
            for row in rows {
                if row.position > expected {
                    push(
                        &mut problems,
                        expected,
                        "missing",
                        format!(
                            "positions {expected}..{} are missing: rows were deleted or moved",
                            row.position - 1
                        ),
                    );
                    if let Some(n) = want_leaves {
                        // The gap's leaves cannot match: fill them so later leaves keep their places.
                        while (leaves.len() as i64) < (row.position - 1).min(n) {
                            leaves.push(leaf(&GENESIS));
                        }
                    }
                }
                expected = row.position + 1;
                checked += 1;
                let stored = row.stored_seal();
                if want_leaves.is_some_and(|n| row.position <= n) {
                    leaves.push(leaf(&stored.unwrap_or(GENESIS)));
                }
                let key = (row.aggregate_type.clone(), row.aggregate_id.clone());
                let prev = match streams.get(&key) {
                    Some((last_seq, last_hash)) if row.sequence == last_seq + 1 => Some(*last_hash),
                    Some((last_seq, _)) => {
                        push(
                            &mut problems,
                            row.position,
                            "out_of_order",
                            format!(
                                "{} {} sequence {} follows sequence {last_seq}: rows were moved, \
                                 deleted or inserted",
                                row.aggregate_type, row.aggregate_id, row.sequence
                            ),
                        );
                        None
                    }
                    None if row.sequence <= 1 => Some(GENESIS),
                    None if from > 1 => Some(previous_seal(&self.db, &row).await?),
                    None => {
                        push(
                            &mut problems,
                            row.position,
                            "out_of_order",
                            format!(
                                "{} {} starts at sequence {}: its earlier events were deleted",
                                row.aggregate_type, row.aggregate_id, row.sequence
                            ),
                        );
                        None
                    }
                };
                match (stored, prev) {
                    (None, _) => push(
                        &mut problems,
                        row.position,
                        "unsealed",
                        format!(
                            "{} {} sequence {} has no seal: it was not written by the engine's append",
                            row.aggregate_type, row.aggregate_id, row.sequence
                        ),
                    ),
                    (Some(stored), Some(prev)) => {
                        if seal(&prev, row.position, row.canonical().as_bytes()) != stored {
                            push(
                                &mut problems,
                                row.position,
                                "seal_mismatch",
                                format!(
                                    "{} {} sequence {} does not match its seal: its content, time, \
                                     identity or position was changed",
                                    row.aggregate_type, row.aggregate_id, row.sequence
                                ),
                            );
                        }
                    }
                    (Some(_), None) => {}
                }
                streams.insert(key, (row.sequence, stored.unwrap_or(GENESIS)));
                if checked.is_multiple_of(10_000) {
                    progress(checked);
                }
            }
        }
        progress(checked);
        let walked_to = expected - 1;
        let digest_check = match &digest {
            None => None,
            Some(d) => {
                let signature = d.check_signature(trusted);
                if let Err(why) = &signature {
                    push(&mut problems, d.position, "digest_signature", why.clone());
                }
                let mut root_matches = None;
                if d.position > end && to >= end && from <= end + 1 {
                    push(
                        &mut problems,
                        end + 1,
                        "missing",
                        format!(
                            "the signed digest covers positions up to {} but the log ends at {end}: \
                             rows were deleted from its end",
                            d.position
                        ),
                    );
                    root_matches = Some(false);
                } else if want_leaves.is_some() && walked_to >= d.position {
                    leaves.truncate(d.position as usize);
                    let tree = MerkleTree::<AuditHasher>::from_leaves(&leaves);
                    let matches = tree.root().map(hex::encode).as_deref() == Some(d.root.as_str());
                    if !matches {
                        push(
                            &mut problems,
                            d.position,
                            "digest_mismatch",
                            format!(
                                "the seals of positions 1..{} no longer give the signed root: \
                                 seals were rewritten",
                                d.position
                            ),
                        );
                    }
                    root_matches = Some(matches);
                }
                Some(DigestCheck {
                    position: d.position,
                    signature_valid: signature.is_ok(),
                    root_matches,
                })
            }
        };
        problems.sort_by_key(|p| p.position);
        Ok(VerifyReport {
            ok: problems.is_empty(),
            from,
            to,
            checked,
            first_broken: problems.first().cloned(),
            problems,
            digest: digest_check,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<[u8; 32]> {
        (0..n)
            .map(|i| leaf(&Sha256::digest(i.to_le_bytes()).into()))
            .collect()
    }

    #[test]
    fn the_documented_path_procedure_agrees_with_the_tree_library() {
        for n in 1..=40usize {
            let leaves = leaves(n);
            let tree = MerkleTree::<AuditHasher>::from_leaves(&leaves);
            let root = tree.root().unwrap();
            for (i, leaf) in leaves.iter().enumerate() {
                let path = tree.proof(&[i]).proof_hashes().to_vec();
                assert_eq!(
                    root_from_path(*leaf, i, n, &path),
                    Some(root),
                    "n={n} i={i}"
                );
                let mut wrong = *leaf;
                wrong[0] ^= 1;
                assert_ne!(root_from_path(wrong, i, n, &path), Some(root));
            }
        }
    }

    #[test]
    fn a_signed_digest_fails_when_any_field_changes() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let d = SignedDigest::sign(10, [3; 32], &key);
        d.check_signature(Some(&key.verifying_key())).unwrap();
        let mut other = d.clone();
        other.position = 11;
        assert!(other.check_signature(None).is_err());
        let mut other = d.clone();
        other.root = hex::encode([4u8; 32]);
        assert!(other.check_signature(None).is_err());
        let stranger = SigningKey::from_bytes(&[8; 32]);
        assert!(d.check_signature(Some(&stranger.verifying_key())).is_err());
    }
}
