//! Every end-to-end test in one binary (one link instead of one per file), a module per
//! area; shared helpers live in the `emporium-tests` library (`tests/src`).

mod api;
mod architecture;
mod audit;
mod backbone;
mod checkout;
mod checkout_safety;
mod concurrency;
mod console;
mod contract;
mod deploy;
mod events_export;
mod fulfilment;
mod fuzz;
mod hostile;
mod idempotency;
mod marketplace;
mod openapi;
mod overload;
mod personal;
mod projections;
mod relay_outage;
mod roles;
mod search;
mod slow_readers;

/// Every row of a Parquet file as its string columns, by name (the reader the Parquet tests
/// share).
pub(crate) fn parquet_string_rows<T: parquet::file::reader::ChunkReader + 'static>(
    bytes: T,
) -> Vec<std::collections::BTreeMap<String, String>> {
    use arrow_array::{Array, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let schema = batch.schema();
        let columns: Vec<(&str, &StringArray)> = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .filter_map(|(f, c)| {
                c.as_any()
                    .downcast_ref::<StringArray>()
                    .map(|a| (f.name().as_str(), a))
            })
            .collect();
        for i in 0..batch.num_rows() {
            rows.push(
                columns
                    .iter()
                    .filter(|(_, a)| a.is_valid(i))
                    .map(|(name, a)| (name.to_string(), a.value(i).to_string()))
                    .collect(),
            );
        }
    }
    rows
}
