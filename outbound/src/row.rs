//! Query rows decoded by column name.
//!
//! Owns: the column list of a query as one constant ([`Column`]s, which
//! [`select_list`] turns into the SELECT list), and reading a row of it by those
//! names ([`Fields`]), so the columns a query selects and the way its rows are
//! decoded cannot drift apart: a row of another width is refused, as is asking for a
//! column the query does not select. A required value that is NULL (or not of its
//! type) is refused, not defaulted; where a query defaults a value, its decoder says
//! so next to the SQL.
//! Must not: know any table (`queue` does) or talk to the database (`db` does).

use crate::db::{Db, Val};

/// One column a query selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The column (or expression) as written in the SELECT list, and the name the
    /// decoder asks for.
    pub name: &'static str,
    /// Selected as text (`CAST(… AS TEXT)` / `AS CHAR`): time columns, so both
    /// dialects give the same `YYYY-MM-DD HH:MM:SS.mmm`.
    pub as_text: bool,
}

impl Column {
    pub const fn plain(name: &'static str) -> Self {
        Self {
            name,
            as_text: false,
        }
    }

    pub const fn text(name: &'static str) -> Self {
        Self {
            name,
            as_text: true,
        }
    }
}

/// The SELECT (or RETURNING) list of `columns` in `db`'s dialect.
pub fn select_list(db: &Db, columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| {
            if c.as_text {
                db.as_text(c.name)
            } else {
                c.name.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("the row has {got} columns where the query selects {want}")]
    Width { want: usize, got: usize },
    /// A decoder asked for a column its query does not select (or asked twice).
    #[error("column `{0}` is not in the query's column list")]
    NotSelected(&'static str),
    #[error("column `{0}` is NULL")]
    Null(&'static str),
    #[error("column `{0}` is not an integer")]
    NotAnInteger(&'static str),
}

/// One row, read by column name; each value can be taken once.
#[derive(Debug)]
pub struct Fields {
    columns: &'static [Column],
    values: Vec<Option<Val>>,
}

impl Fields {
    /// A row of the query that selects `columns`.
    pub fn new(columns: &'static [Column], row: Vec<Val>) -> Result<Self, RowError> {
        if row.len() != columns.len() {
            return Err(RowError::Width {
                want: columns.len(),
                got: row.len(),
            });
        }
        Ok(Self {
            columns,
            values: row.into_iter().map(Some).collect(),
        })
    }

    fn take(&mut self, name: &'static str) -> Result<Val, RowError> {
        let index = self
            .columns
            .iter()
            .position(|c| c.name == name)
            .ok_or(RowError::NotSelected(name))?;
        self.values
            .get_mut(index)
            .and_then(Option::take)
            .ok_or(RowError::NotSelected(name))
    }

    /// A required integer (MySQL may give it as text or bytes; parsed then).
    pub fn int(&mut self, name: &'static str) -> Result<i64, RowError> {
        match self.take(name)? {
            Val::Null => Err(RowError::Null(name)),
            v => v.int().ok_or(RowError::NotAnInteger(name)),
        }
    }

    /// An optional integer: None when NULL or not an integer.
    pub fn opt_int(&mut self, name: &'static str) -> Result<Option<i64>, RowError> {
        Ok(self.take(name)?.int())
    }

    /// A required text (bytes are read as UTF-8, lossily).
    pub fn text(&mut self, name: &'static str) -> Result<String, RowError> {
        self.take(name)?.text().ok_or(RowError::Null(name))
    }

    /// An optional text: None when NULL.
    pub fn opt_text(&mut self, name: &'static str) -> Result<Option<String>, RowError> {
        Ok(self.take(name)?.text())
    }

    /// Required bytes (a text value gives its UTF-8).
    pub fn bytes(&mut self, name: &'static str) -> Result<Vec<u8>, RowError> {
        self.take(name)?.bytes().ok_or(RowError::Null(name))
    }

    /// Optional bytes: None when NULL.
    pub fn opt_bytes(&mut self, name: &'static str) -> Result<Option<Vec<u8>>, RowError> {
        Ok(self.take(name)?.bytes())
    }
}

/// The first column of the first row: what `SELECT COUNT(*)`, `SELECT
/// last_insert_rowid()` and other one-value queries return, as an integer.
pub fn scalar_int(rows: &[Vec<Val>]) -> Option<i64> {
    rows.first().and_then(|r| r.first()).and_then(Val::int)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const COLUMNS: &[Column] = &[
        Column::plain("id"),
        Column::plain("name"),
        Column::text("created_at"),
    ];

    fn fields(row: Vec<Val>) -> Fields {
        Fields::new(COLUMNS, row).unwrap()
    }

    #[test]
    fn values_are_read_by_name_in_any_order() {
        let mut f = fields(vec![
            Val::Int(7),
            Val::Bytes(b"ann".to_vec()),
            Val::Text("2026-01-01 00:00:00.000".into()),
        ]);
        assert_eq!(
            f.opt_text("created_at").unwrap().as_deref(),
            Some("2026-01-01 00:00:00.000")
        );
        assert_eq!(f.text("name").unwrap(), "ann");
        assert_eq!(f.int("id").unwrap(), 7);
    }

    #[test]
    fn a_row_of_another_width_is_refused() {
        assert_eq!(
            Fields::new(COLUMNS, vec![Val::Int(1)]).unwrap_err(),
            RowError::Width { want: 3, got: 1 }
        );
        assert!(Fields::new(COLUMNS, vec![Val::Null; 4]).is_err());
    }

    #[test]
    fn a_required_null_is_refused_an_optional_one_is_none() {
        let mut f = fields(vec![Val::Null, Val::Null, Val::Null]);
        assert_eq!(f.int("id").unwrap_err(), RowError::Null("id"));
        assert_eq!(f.text("name").unwrap_err(), RowError::Null("name"));
        assert_eq!(f.opt_text("created_at").unwrap(), None);
        let mut f = fields(vec![Val::Null, Val::Null, Val::Null]);
        assert_eq!(f.opt_int("id").unwrap(), None);
        assert_eq!(f.bytes("name").unwrap_err(), RowError::Null("name"));
        assert_eq!(f.opt_bytes("created_at").unwrap(), None);
    }

    #[test]
    fn integers_come_as_text_from_mysql_and_garbage_is_refused() {
        let mut f = fields(vec![
            Val::Bytes(b" 42 ".to_vec()),
            Val::Text("x".into()),
            Val::Null,
        ]);
        assert_eq!(f.int("id").unwrap(), 42);
        assert_eq!(f.int("name").unwrap_err(), RowError::NotAnInteger("name"));
        let mut f = fields(vec![Val::Text("x".into()), Val::Null, Val::Null]);
        assert_eq!(f.opt_int("id").unwrap(), None);
    }

    #[test]
    fn asking_for_a_column_not_selected_or_twice_is_an_error() {
        let mut f = fields(vec![Val::Int(1), Val::Null, Val::Null]);
        assert_eq!(f.int("bogus").unwrap_err(), RowError::NotSelected("bogus"));
        assert_eq!(f.int("id").unwrap(), 1);
        assert_eq!(f.int("id").unwrap_err(), RowError::NotSelected("id"));
    }

    #[test]
    fn scalar_is_the_first_value() {
        assert_eq!(scalar_int(&[vec![Val::Int(3), Val::Int(4)]]), Some(3));
        assert_eq!(scalar_int(&[vec![Val::Null]]), None);
        assert_eq!(scalar_int(&[]), None);
    }
}
