//! Column encoding shared by both backends: decimals as their exact text, JSON as text,
//! enums as their snake_case names, unsigned counters as `i64`; and a typed row reader whose
//! errors name the table and column.

use super::StoreError;
use rust_decimal::Decimal;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::str::FromStr;

/// Reads the column types the schema uses, on either backend's rows.
pub(super) trait RowGet {
    fn get_text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn get_opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn get_int(&self, col: &str) -> Result<i64, sqlx::Error>;
    fn get_opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
}

macro_rules! impl_row_get {
    ($($row:ty),*) => {$(
        impl RowGet for $row {
            fn get_text(&self, col: &str) -> Result<String, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
            fn get_opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
            fn get_int(&self, col: &str) -> Result<i64, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
            fn get_opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
        }
    )*};
}

impl_row_get!(sqlx::sqlite::SqliteRow, sqlx::postgres::PgRow);

/// A row of `table`, read column by column into the crate's types.
pub(super) struct Cols<'r, R> {
    row: &'r R,
    table: &'static str,
}

impl<'r, R: RowGet> Cols<'r, R> {
    pub(super) fn new(row: &'r R, table: &'static str) -> Self {
        Cols { row, table }
    }

    fn read_err(&self, source: sqlx::Error) -> StoreError {
        StoreError::Query {
            table: self.table,
            op: "read",
            source,
        }
    }

    fn bad(&self, column: &'static str, reason: String) -> StoreError {
        StoreError::Decode {
            table: self.table,
            column,
            reason,
        }
    }

    pub(super) fn text(&self, col: &'static str) -> Result<String, StoreError> {
        self.row.get_text(col).map_err(|e| self.read_err(e))
    }

    pub(super) fn opt_text(&self, col: &'static str) -> Result<Option<String>, StoreError> {
        self.row.get_opt_text(col).map_err(|e| self.read_err(e))
    }

    pub(super) fn int(&self, col: &'static str) -> Result<i64, StoreError> {
        self.row.get_int(col).map_err(|e| self.read_err(e))
    }

    pub(super) fn opt_int(&self, col: &'static str) -> Result<Option<i64>, StoreError> {
        self.row.get_opt_int(col).map_err(|e| self.read_err(e))
    }

    /// A non-negative integer column as `u64`.
    pub(super) fn uint(&self, col: &'static str) -> Result<u64, StoreError> {
        let v = self.int(col)?;
        u64::try_from(v).map_err(|_| self.bad(col, format!("negative value {v}")))
    }

    /// A decimal stored as its text.
    pub(super) fn dec(&self, col: &'static str) -> Result<Decimal, StoreError> {
        let s = self.text(col)?;
        parse_dec(&s).map_err(|reason| self.bad(col, reason))
    }

    pub(super) fn opt_dec(&self, col: &'static str) -> Result<Option<Decimal>, StoreError> {
        match self.opt_text(col)? {
            None => Ok(None),
            Some(s) => parse_dec(&s)
                .map(Some)
                .map_err(|reason| self.bad(col, reason)),
        }
    }

    /// A JSON document stored as text, as `T`.
    pub(super) fn json<T: DeserializeOwned>(&self, col: &'static str) -> Result<T, StoreError> {
        let s = self.text(col)?;
        serde_json::from_str(&s).map_err(|e| self.bad(col, format!("invalid JSON: {e}")))
    }

    /// An enum stored as its serde (snake_case) name.
    pub(super) fn name<T: DeserializeOwned>(&self, col: &'static str) -> Result<T, StoreError> {
        let s = self.text(col)?;
        serde_json::from_value(serde_json::Value::String(s.clone()))
            .map_err(|_| self.bad(col, format!("unknown value {s:?}")))
    }
}

fn parse_dec(s: &str) -> Result<Decimal, String> {
    Decimal::from_str(s).map_err(|e| format!("invalid decimal {s:?}: {e}"))
}

/// The exact text of a decimal (what every money and quantity column holds).
pub(super) fn dec_text(d: Decimal) -> String {
    d.to_string()
}

pub(super) fn opt_dec_text(d: Option<Decimal>) -> Option<String> {
    d.map(dec_text)
}

/// `value` as JSON text for `table.column`.
pub(super) fn json_text<T: Serialize + ?Sized>(
    value: &T,
    table: &'static str,
    column: &'static str,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Encode {
        table,
        column,
        reason: e.to_string(),
    })
}

/// A `u64` counter as the `i64` both backends store.
pub(super) fn to_i64(v: u64, table: &'static str, column: &'static str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Encode {
        table,
        column,
        reason: format!("{v} does not fit a signed 64-bit column"),
    })
}

/// Maps a query error of `op` on `table`.
pub(super) fn q(table: &'static str, op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { table, op, source }
}
