//! The Parquet encoder of `GET /v1/events` and `emporium events export`: typed columns,
//! written in row groups as events stream in, so memory holds one row group (plus the
//! encoder's buffers) whatever the range. Encoding is the `parquet`/`arrow` crates'.
//!
//! Columns: `position` (int64), `event_id` (string, UUID), `recorded_at` (timestamp,
//! microseconds, UTC), `aggregate_type`, `aggregate_id` (string), `sequence` (int64),
//! `event_type`, `event_version` (string), `payload` (string, the event's JSON text),
//! `actor`, `request_id`, `correlation_id`, `causation_id` (string). Zstd compressed.

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use emporium_event_store::export::{EventView, ExportPage};
use emporium_event_store::StoreError;
use futures::stream::{BoxStream, StreamExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// Rows per record batch handed to the writer.
const BATCH: usize = 8_192;
/// Rows per row group: a row group is flushed (and its bytes sent) when it has this many.
const ROW_GROUP: usize = 65_536;

pub const CONTENT_TYPE: &str = "application/vnd.apache.parquet";

/// The export's Arrow schema (see the module docs).
pub fn schema() -> Arc<Schema> {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        Field::new("position", DataType::Int64, false),
        text("event_id"),
        Field::new(
            "recorded_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        text("aggregate_type"),
        text("aggregate_id"),
        Field::new("sequence", DataType::Int64, false),
        text("event_type"),
        text("event_version"),
        text("payload"),
        text("actor"),
        text("request_id"),
        text("correlation_id"),
        text("causation_id"),
    ]))
}

/// A `Write` whose bytes are taken out after each row group.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
    }
}

struct Columns {
    position: Int64Builder,
    event_id: StringBuilder,
    recorded_at: TimestampMicrosecondBuilder,
    aggregate_type: StringBuilder,
    aggregate_id: StringBuilder,
    sequence: Int64Builder,
    event_type: StringBuilder,
    event_version: StringBuilder,
    payload: StringBuilder,
    actor: StringBuilder,
    request_id: StringBuilder,
    correlation_id: StringBuilder,
    causation_id: StringBuilder,
    rows: usize,
}

impl Columns {
    fn new() -> Self {
        let text = || StringBuilder::with_capacity(BATCH, BATCH * 32);
        Self {
            position: Int64Builder::with_capacity(BATCH),
            event_id: text(),
            recorded_at: TimestampMicrosecondBuilder::with_capacity(BATCH).with_timezone("UTC"),
            aggregate_type: text(),
            aggregate_id: text(),
            sequence: Int64Builder::with_capacity(BATCH),
            event_type: text(),
            event_version: text(),
            payload: StringBuilder::with_capacity(BATCH, BATCH * 256),
            actor: text(),
            request_id: text(),
            correlation_id: text(),
            causation_id: text(),
            rows: 0,
        }
    }

    fn push(&mut self, e: EventView<'_>) {
        self.position.append_value(e.position);
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.event_id
            .append_value(e.event_id.hyphenated().encode_lower(&mut id));
        self.recorded_at
            .append_value(e.recorded_at.timestamp_micros());
        self.aggregate_type.append_value(e.aggregate_type);
        self.aggregate_id.append_value(e.aggregate_id);
        self.sequence.append_value(e.sequence);
        self.event_type.append_value(e.event_type);
        self.event_version.append_value(e.event_version);
        self.payload.append_value(e.payload);
        self.actor.append_value(e.actor);
        self.request_id.append_value(e.request_id);
        self.correlation_id.append_value(e.correlation_id);
        self.causation_id.append_value(e.causation_id);
        self.rows += 1;
    }

    fn finish(&mut self, schema: &Arc<Schema>) -> Result<RecordBatch, StoreError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.position.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.recorded_at.finish()),
            Arc::new(self.aggregate_type.finish()),
            Arc::new(self.aggregate_id.finish()),
            Arc::new(self.sequence.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.event_version.finish()),
            Arc::new(self.payload.finish()),
            Arc::new(self.actor.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.correlation_id.finish()),
            Arc::new(self.causation_id.finish()),
        ];
        // A finished builder keeps no capacity: start the next batch at full size rather
        // than growing every column again by doubling.
        *self = Self::new();
        RecordBatch::try_new(schema.clone(), columns).map_err(encode_error)
    }
}

fn encode_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Decode(format!("parquet encoding: {e}"))
}

/// Encodes the export's `pages` as one Parquet file, yielding its bytes a row group at a
/// time (the footer last). An `Err` item (the database failed, or encoding did) ends the
/// stream, so the file is cut short without a footer and no reader takes it for complete.
pub fn encode(
    pages: BoxStream<'static, Result<ExportPage, StoreError>>,
) -> BoxStream<'static, Result<Vec<u8>, StoreError>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, StoreError>>(2);
    tokio::spawn(async move {
        if let Err(e) = write_all(pages, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, StoreError>>,
) -> BoxStream<'static, Result<Vec<u8>, StoreError>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// Reads `pages` in their own task: reading rows (and presenting personal data) proceeds
/// on one core while the previous page is encoded on another. The task's handle tells a reader that ended normally from one that panicked: both close
/// the channel, and only the first may end the file with a footer.
fn read_ahead(
    mut pages: BoxStream<'static, Result<ExportPage, StoreError>>,
) -> (
    tokio::sync::mpsc::Receiver<Result<ExportPage, StoreError>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let reader = tokio::spawn(async move {
        while let Some(page) = pages.next().await {
            let failed = page.is_err();
            if tx.send(page).await.is_err() || failed {
                return;
            }
        }
    });
    (rx, reader)
}

async fn write_all(
    pages: BoxStream<'static, Result<ExportPage, StoreError>>,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<u8>, StoreError>>,
) -> Result<(), StoreError> {
    let (mut pages, reader) = read_ahead(pages);
    let schema = schema();
    let out = Shared::default();
    let props = WriterProperties::builder()
        // zstd level 1: half the size of LZ4 or Snappy here (103.8 MB against 212.2 MB for
        // a million events) at about the same export speed (docs/performance.md).
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).map_err(encode_error)?,
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP))
        // Columns unique per row gain nothing from a dictionary, whose attempt (until the
        // writer falls back) and min/max statistics over long texts cost encoder time.
        .set_column_dictionary_enabled(ColumnPath::from("event_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("payload"), false)
        .set_column_statistics_enabled(ColumnPath::from("payload"), EnabledStatistics::None)
        .build();
    let mut writer =
        ArrowWriter::try_new(out.clone(), schema.clone(), Some(props)).map_err(encode_error)?;
    let mut columns = Columns::new();
    let mut in_group = 0usize;
    // A receiver gone (client disconnected) ends the work.
    let send = |bytes: Vec<u8>| async {
        if bytes.is_empty() {
            return true;
        }
        tx.send(Ok(bytes)).await.is_ok()
    };
    while let Some(page) = pages.recv().await {
        let page = page?;
        for i in 0..page.len() {
            columns.push(page.view(i)?);
            if columns.rows < BATCH {
                continue;
            }
            in_group += columns.rows;
            writer
                .write(&columns.finish(&schema)?)
                .map_err(encode_error)?;
            if in_group >= ROW_GROUP {
                writer.flush().map_err(encode_error)?;
                in_group = 0;
                if !send(out.take()).await {
                    return Ok(());
                }
            }
        }
    }
    reader
        .await
        .map_err(|e| encode_error(format!("reading the export stopped: {e}")))?;
    if columns.rows > 0 {
        writer
            .write(&columns.finish(&schema)?)
            .map_err(encode_error)?;
    }
    writer.close().map_err(encode_error)?;
    send(out.take()).await;
    Ok(())
}
