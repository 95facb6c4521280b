//! Encoders of the analysts' exports: events as NDJSON lines or RFC 4180 CSV records,
//! gathered into ~64 KiB chunks of a streamed HTTP body as the rows arrive, so memory stays
//! flat whatever the range. The route (`routes::events`) picks the representation.

use std::pin::Pin;
use std::task::{Context, Poll};

use emporium_event_store::{RawFeedEvent, StoreError};
use futures::stream::{BoxStream, Stream, StreamExt};

/// The CSV export's columns, in order.
pub const CSV_COLUMNS: [&str; 13] = [
    "position",
    "event_id",
    "recorded_at",
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "event_type",
    "event_version",
    "actor",
    "request_id",
    "correlation_id",
    "causation_id",
    "payload",
];

/// A streamed response is handed to the connection in chunks of about this size.
const CHUNK: usize = 64 * 1024;
/// While the database has no row ready, a chunk this large is sent rather than held.
const MIN_FLUSH: usize = 16 * 1024;

/// Appends one event to a chunk.
pub(crate) type Encode = fn(&RawFeedEvent, &mut Vec<u8>) -> Result<(), StoreError>;

/// Encodes events into chunks of about [`CHUNK`] bytes; an error ends the body (after the
/// complete lines before it), which aborts the HTTP response.
pub(crate) struct Chunked {
    events: BoxStream<'static, Result<RawFeedEvent, StoreError>>,
    encode: Encode,
    buf: Vec<u8>,
    /// An error met while a chunk was pending: sent after that chunk.
    failed: Option<StoreError>,
    /// Whether the connection had one turn to flush what was sent before the error.
    flushed: bool,
    done: bool,
}

impl Chunked {
    /// A body that starts with `preamble` (a CSV header, say) and encodes each event.
    pub(crate) fn new(
        events: BoxStream<'static, Result<RawFeedEvent, StoreError>>,
        preamble: Vec<u8>,
        encode: Encode,
    ) -> Self {
        let mut buf = Vec::with_capacity(CHUNK + 4096);
        buf.extend_from_slice(&preamble);
        Self {
            events,
            encode,
            buf,
            failed: None,
            flushed: false,
            done: false,
        }
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096))
    }
}

impl Stream for Chunked {
    type Item = Result<Vec<u8>, StoreError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed.is_some() && !this.flushed {
            // One turn first: the connection writes out the headers and the lines before the
            // error; an error polled at once could abort it with them still buffered.
            this.flushed = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.events.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    let len = this.buf.len();
                    if let Err(e) = (this.encode)(&event, &mut this.buf) {
                        this.buf.truncate(len);
                        this.fail(e);
                        return this.flush_or_error(cx);
                    }
                    if this.buf.len() >= CHUNK {
                        return Poll::Ready(Some(Ok(this.take())));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.fail(e);
                    return this.flush_or_error(cx);
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if this.buf.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(this.take())));
                }
                Poll::Pending if this.buf.len() >= MIN_FLUSH => {
                    return Poll::Ready(Some(Ok(this.take())));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Chunked {
    fn fail(&mut self, e: StoreError) {
        tracing::error!(error = %e, "event export failed while streaming; aborting the response");
        self.done = true;
        self.failed = Some(e);
    }

    /// After a failure: the complete lines encoded so far, then (after one turn for the
    /// connection to write them out) the error.
    fn flush_or_error(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Vec<u8>, StoreError>>> {
        if self.buf.is_empty() {
            self.flushed = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Ok(self.take())))
    }
}

pub(crate) fn ndjson_line(e: &RawFeedEvent, out: &mut Vec<u8>) -> Result<(), StoreError> {
    serde_json::to_writer(&mut *out, e).map_err(|err| StoreError::Decode(err.to_string()))?;
    out.push(b'\n');
    Ok(())
}

pub(crate) fn csv_header() -> Vec<u8> {
    let mut out = CSV_COLUMNS.join(",").into_bytes();
    out.extend_from_slice(b"\r\n");
    out
}

pub(crate) fn csv_record(e: &RawFeedEvent, out: &mut Vec<u8>) -> Result<(), StoreError> {
    use std::io::Write as _;
    let io = |err: std::io::Error| StoreError::Decode(err.to_string());
    write!(
        out,
        "{},{},{},",
        e.position,
        e.event_id.hyphenated(),
        e.recorded_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    )
    .map_err(io)?;
    csv_field(out, &e.aggregate_type);
    out.push(b',');
    csv_field(out, &e.aggregate_id);
    write!(out, ",{},", e.sequence).map_err(io)?;
    for f in [
        &e.event_type,
        &e.event_version,
        &e.metadata.actor,
        &e.metadata.request_id,
        &e.metadata.correlation_id,
        &e.metadata.causation_id,
    ] {
        csv_field(out, f);
        out.push(b',');
    }
    csv_field(out, e.payload.get());
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// One CSV field (RFC 4180): quoted, with quotes doubled, when it holds a comma, a quote or
/// a line break.
fn csv_field(out: &mut Vec<u8>, s: &str) {
    if !s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.push(b'"');
    let mut pieces = s.split('"');
    if let Some(first) = pieces.next() {
        out.extend_from_slice(first.as_bytes());
    }
    for piece in pieces {
        out.extend_from_slice(b"\"\"");
        out.extend_from_slice(piece.as_bytes());
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut out = Vec::new();
        csv_field(&mut out, "plain");
        out.push(b'|');
        csv_field(&mut out, r#"{"a":"b,c"}"#);
        out.push(b'|');
        csv_field(&mut out, "line\nbreak");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain|\"{\"\"a\"\":\"\"b,c\"\"}\"|\"line\nbreak\""
        );
    }
}
