//! Many rows in one statement: what projections write per batch of events instead of one
//! statement per event. Under checkout load a projection step covers hundreds of events,
//! and every statement inside its transaction is a round trip and work on the server.

use std::fmt::Write as _;

use crate::{Result, Tx};

/// Binds per statement at most: under both backends' limits (Postgres 65,535, SQLite
/// 32,766), so any batch is split into statements that fit.
const MAX_BINDS: usize = 30_000;

/// One bound value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum V<'a> {
    S(&'a str),
    I(i64),
    /// A nullable number.
    O(Option<i64>),
}

/// The `VALUES` list for `rows` rows of `width` columns: `($1, $2), ($3, $4)`.
fn values(rows: usize, width: usize) -> String {
    let mut sql = String::with_capacity(rows * width * 5);
    let mut k = 0;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            k += 1;
            let _ = write!(sql, "{}${k}", if c == 0 { "" } else { ", " });
        }
        sql.push(')');
    }
    sql
}

/// Runs `{head} <rows> {tail}` over `rows` (each `width` values), where `<rows>` is
/// `SELECT * FROM UNNEST($1::text[], ...)` on Postgres (one statement text whatever the
/// count, so each connection prepares it once) and `VALUES (...), (...)` on SQLite (as few
/// statements as its bind limit allows). `rows` empty: nothing runs.
pub(crate) async fn insert(
    tx: &mut Tx,
    head: &str,
    tail: &str,
    width: usize,
    rows: &[V<'_>],
) -> Result<()> {
    run(tx, width, rows, Shape::Insert { head, tail }).await
}

/// Like [`insert`], for an `UPDATE {target} SET ... FROM` that reads the rows as a table
/// `v` with columns `column1`, `column2`...: `{head} <rows> AS v WHERE {key} = v.column1`,
/// where `key` is the target's (indexed, text) key column, qualified.
pub(crate) async fn update_from(
    tx: &mut Tx,
    head: &str,
    key: &str,
    width: usize,
    rows: &[V<'_>],
) -> Result<()> {
    run(tx, width, rows, Shape::UpdateFrom { head, key }).await
}

enum Shape<'s> {
    Insert { head: &'s str, tail: &'s str },
    UpdateFrom { head: &'s str, key: &'s str },
}

async fn run(tx: &mut Tx, width: usize, rows: &[V<'_>], shape: Shape<'_>) -> Result<()> {
    let width = width.max(1);
    debug_assert_eq!(rows.len() % width, 0);
    if rows.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Pg(c) => {
            let mut columns: Vec<Column> = rows[..width].iter().map(Column::new).collect();
            for row in rows.chunks(width) {
                for (column, v) in columns.iter_mut().zip(row) {
                    column.push(v);
                }
            }
            let casts: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("${}::{}", i + 1, c.array_type()))
                .collect();
            let casts = casts.join(", ");
            let sql = match shape {
                Shape::Insert { head, tail } => {
                    format!("{head} SELECT * FROM UNNEST({casts}) {tail}")
                }
                Shape::UpdateFrom { head, key } => {
                    let names: Vec<String> = (1..=width).map(|i| format!("column{i}")).collect();
                    // The planner guesses 100 rows for UNNEST and would join by scanning the
                    // whole target table; the key array itself makes it look rows up by key.
                    format!(
                        "{head} UNNEST({casts}) AS v({}) WHERE {key} = v.column1 \
                         AND {key} = ANY($1::text[])",
                        names.join(", ")
                    )
                }
            };
            let mut q = sqlx::query(&sql);
            for column in columns {
                q = match column {
                    Column::S(v) => q.bind(v),
                    Column::I(v) => q.bind(v),
                    Column::O(v) => q.bind(v),
                };
            }
            q.execute(&mut **c).await?;
        }
        Tx::Lite(c) => {
            for chunk in rows.chunks((MAX_BINDS / width).max(1) * width) {
                let values = values(chunk.len() / width, width);
                let sql = match shape {
                    Shape::Insert { head, tail } => format!("{head} VALUES {values} {tail}"),
                    Shape::UpdateFrom { head, key } => {
                        format!("{head} (VALUES {values}) AS v WHERE {key} = v.column1")
                    }
                }
                .replace('$', "?");
                let mut q = sqlx::query(&sql);
                for v in chunk {
                    q = match v {
                        V::S(s) => q.bind(*s),
                        V::I(i) => q.bind(*i),
                        V::O(o) => q.bind(*o),
                    };
                }
                q.execute(&mut **c).await?;
            }
        }
    }
    Ok(())
}

/// One column of a batch, bound as a Postgres array.
enum Column<'a> {
    S(Vec<&'a str>),
    I(Vec<i64>),
    O(Vec<Option<i64>>),
}

impl<'a> Column<'a> {
    fn new(first: &V<'a>) -> Self {
        match first {
            V::S(_) => Column::S(Vec::new()),
            V::I(_) => Column::I(Vec::new()),
            V::O(_) => Column::O(Vec::new()),
        }
    }

    fn push(&mut self, v: &V<'a>) {
        match (self, v) {
            (Column::S(c), V::S(s)) => c.push(s),
            (Column::I(c), V::I(i)) => c.push(*i),
            (Column::O(c), V::O(o)) => c.push(*o),
            (Column::O(c), V::I(i)) => c.push(Some(*i)),
            // Rows of one statement have one shape; a mismatch is a bug caught in tests.
            (c, v) => debug_assert!(false, "column of another type: {v:?} in {}", c.array_type()),
        }
    }

    fn array_type(&self) -> &'static str {
        match self {
            Column::S(_) => "text[]",
            Column::I(_) | Column::O(_) => "bigint[]",
        }
    }
}

/// `SELECT key, value ... WHERE <column> IN keys` as (key, value) pairs: `select` is the
/// statement up to its `WHERE`, `column` the key column. One statement on Postgres
/// (`= ANY($1)`); on SQLite in chunks within its bind limit.
pub(crate) async fn select_in<T>(
    tx: &mut Tx,
    select: &str,
    column: &str,
    keys: &[&str],
) -> Result<Vec<(String, T)>>
where
    T: Send
        + Unpin
        + for<'r> sqlx::Decode<'r, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
        + for<'r> sqlx::Decode<'r, sqlx::Sqlite>
        + sqlx::Type<sqlx::Sqlite>,
{
    let mut found = Vec::new();
    if keys.is_empty() {
        return Ok(found);
    }
    match tx {
        Tx::Pg(c) => {
            let sql = format!("{select} WHERE {column} = ANY($1::text[])");
            found = sqlx::query_as(&sql).bind(keys).fetch_all(&mut **c).await?;
        }
        Tx::Lite(c) => {
            for chunk in keys.chunks(MAX_BINDS) {
                let params: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
                let sql = format!("{select} WHERE {column} IN ({})", params.join(", "));
                let mut q = sqlx::query_as(&sql);
                for k in chunk {
                    q = q.bind(*k);
                }
                found.extend(q.fetch_all(&mut **c).await?);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_number_every_bind() {
        assert_eq!(super::values(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(super::values(1, 1), "($1)");
    }
}
