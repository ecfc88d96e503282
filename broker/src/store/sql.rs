//! The few things the store asks of a database, for SQLite and PostgreSQL alike: run a
//! statement, read rows. Statements are written once, in the SQL both accept, with
//! numbered placeholders (`?1`, `?2`: PostgreSQL gets `$1`, `$2`); each is prepared once per
//! connection and cached. Values are integers, text or NULL: the schema has nothing else.
//! The SQLite side is here; the PostgreSQL connections are in `pg.rs`.

use std::borrow::Cow;

use rusqlite::types::{ToSqlOutput, ValueRef};
use tokio_postgres::types::{IsNull, ToSql, Type};

/// A statement parameter.
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    Null,
    Int(i64),
    Text(Cow<'a, str>),
}

impl Val<'_> {
    /// The same value, owning its text.
    pub(crate) fn into_owned(self) -> Val<'static> {
        match self {
            Val::Null => Val::Null,
            Val::Int(i) => Val::Int(i),
            Val::Text(t) => Val::Text(Cow::Owned(t.into_owned())),
        }
    }
}

/// What can be a parameter.
pub(crate) trait Arg {
    fn val(&self) -> Val<'_>;
}

impl Arg for str {
    fn val(&self) -> Val<'_> {
        Val::Text(Cow::Borrowed(self))
    }
}

impl Arg for String {
    fn val(&self) -> Val<'_> {
        Val::Text(Cow::Borrowed(self))
    }
}

impl Arg for i64 {
    fn val(&self) -> Val<'_> {
        Val::Int(*self)
    }
}

/// Unsigned values above `i64::MAX` (no time or count reaches it) are stored as the maximum.
impl Arg for u64 {
    fn val(&self) -> Val<'_> {
        Val::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl Arg for u32 {
    fn val(&self) -> Val<'_> {
        Val::Int(i64::from(*self))
    }
}

impl Arg for usize {
    fn val(&self) -> Val<'_> {
        Val::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

/// Booleans are stored as 0 and 1 in both databases.
impl Arg for bool {
    fn val(&self) -> Val<'_> {
        Val::Int(i64::from(*self))
    }
}

impl<T: Arg + ?Sized> Arg for &T {
    fn val(&self) -> Val<'_> {
        (**self).val()
    }
}

impl<T: Arg> Arg for Option<T> {
    fn val(&self) -> Val<'_> {
        self.as_ref().map_or(Val::Null, Arg::val)
    }
}

/// The parameters of a statement: `args![a, b]`.
macro_rules! args {
    ($($x:expr),* $(,)?) => {
        &[$($crate::store::sql::Arg::val(&$x)),*][..]
    };
}
pub(crate) use args;

/// A value read back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Text(String),
}

/// A row read back.
#[derive(Debug)]
pub(crate) struct Row(Vec<Cell>);

/// What a column can be read as.
pub(crate) trait FromCell: Sized {
    /// What the column should hold (for the error).
    const EXPECTED: &'static str;
    fn from_cell(cell: &Cell) -> Option<Self>;
}

impl FromCell for i64 {
    const EXPECTED: &'static str = "an integer";
    fn from_cell(cell: &Cell) -> Option<i64> {
        match cell {
            Cell::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromCell for u64 {
    const EXPECTED: &'static str = "a non-negative integer";
    fn from_cell(cell: &Cell) -> Option<u64> {
        i64::from_cell(cell).and_then(|i| u64::try_from(i).ok())
    }
}

impl FromCell for u32 {
    const EXPECTED: &'static str = "a small non-negative integer";
    fn from_cell(cell: &Cell) -> Option<u32> {
        i64::from_cell(cell).and_then(|i| u32::try_from(i).ok())
    }
}

impl FromCell for bool {
    const EXPECTED: &'static str = "0 or 1";
    fn from_cell(cell: &Cell) -> Option<bool> {
        match i64::from_cell(cell)? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

impl FromCell for String {
    const EXPECTED: &'static str = "text";
    fn from_cell(cell: &Cell) -> Option<String> {
        match cell {
            Cell::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl<T: FromCell> FromCell for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_cell(cell: &Cell) -> Option<Option<T>> {
        match cell {
            Cell::Null => Some(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

impl Row {
    /// Column `i` as `T`; a NULL or a value of another type is an error unless `T` is an
    /// `Option`.
    pub(crate) fn get<T: FromCell>(&self, i: usize) -> Result<T, DbError> {
        self.0.get(i).and_then(T::from_cell).ok_or(DbError::Column {
            index: i,
            expected: T::EXPECTED,
        })
    }

    fn from_sqlite(r: &rusqlite::Row<'_>) -> Result<Row, DbError> {
        let n = r.as_ref().column_count();
        let mut cells = Vec::with_capacity(n);
        for i in 0..n {
            cells.push(match r.get_ref(i)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Real(_) | ValueRef::Blob(_) => {
                    return Err(DbError::Column {
                        index: i,
                        expected: "an integer or text",
                    })
                }
            });
        }
        Ok(Row(cells))
    }

    pub(crate) fn from_postgres(r: &tokio_postgres::Row) -> Result<Row, DbError> {
        let mut cells = Vec::with_capacity(r.len());
        for (i, column) in r.columns().iter().enumerate() {
            let ty = column.type_();
            let cell = if *ty == Type::INT8 {
                r.try_get::<_, Option<i64>>(i)?.map(Cell::Int)
            } else if *ty == Type::INT4 {
                r.try_get::<_, Option<i32>>(i)?.map(|v| Cell::Int(v.into()))
            } else if *ty == Type::BOOL {
                r.try_get::<_, Option<bool>>(i)?
                    .map(|v| Cell::Int(v.into()))
            } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
                r.try_get::<_, Option<String>>(i)?.map(Cell::Text)
            } else {
                return Err(DbError::Column {
                    index: i,
                    expected: "an integer or text",
                });
            };
            cells.push(cell.unwrap_or(Cell::Null));
        }
        Ok(Row(cells))
    }
}

/// A failed statement.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite's error.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL's error.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// A read was asked of a PostgreSQL write transaction, whose statements are only
    /// queued to be sent together (a bug: writes never read).
    #[error("a read inside a pipelined write transaction")]
    ReadInPipeline,
    /// PostgreSQL did not answer in time (the network or the server is stuck).
    #[error("no answer within {0:?}")]
    TimedOut(std::time::Duration),
    /// A stored value is not what the column should hold.
    #[error("column {index} does not hold {expected}")]
    Column {
        /// The column, from 0.
        index: usize,
        /// What it should hold.
        expected: &'static str,
    },
}

/// Runs statements: on a connection or inside a transaction.
pub(crate) trait Sql {
    /// Runs `sql`; the number of rows changed (0 in a PostgreSQL write transaction, where
    /// statements are queued and sent together at its end).
    fn exec(&mut self, sql: &'static str, params: &[Val<'_>]) -> Result<u64, DbError>;

    /// Calls `f` with each row of `sql`, in order, without holding them all, until it
    /// returns false.
    fn each(
        &mut self,
        sql: &'static str,
        params: &[Val<'_>],
        f: &mut dyn FnMut(&Row) -> Result<bool, DbError>,
    ) -> Result<(), DbError>;
}

impl dyn Sql + '_ {
    /// Every row of `sql`, each mapped by `f`.
    pub(crate) fn rows<T>(
        &mut self,
        sql: &'static str,
        params: &[Val<'_>],
        mut f: impl FnMut(&Row) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let mut out = Vec::new();
        self.each(sql, params, &mut |r| {
            out.push(f(r)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The first row of `sql`, mapped by `f`.
    pub(crate) fn row<T>(
        &mut self,
        sql: &'static str,
        params: &[Val<'_>],
        f: impl FnOnce(&Row) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        let mut f = Some(f);
        let mut out = None;
        self.each(sql, params, &mut |r| {
            if let Some(f) = f.take() {
                out = Some(f(r)?);
            }
            Ok(false)
        })?;
        Ok(out)
    }
}

impl rusqlite::ToSql for Val<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Val::Null => ValueRef::Null,
            Val::Int(i) => ValueRef::Integer(*i),
            Val::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

/// A SQLite connection (or a transaction on it: it derefs to one).
pub(crate) struct Lite<'a>(pub(crate) &'a rusqlite::Connection);

impl Sql for Lite<'_> {
    fn exec(&mut self, sql: &'static str, params: &[Val<'_>]) -> Result<u64, DbError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn each(
        &mut self,
        sql: &'static str,
        params: &[Val<'_>],
        f: &mut dyn FnMut(&Row) -> Result<bool, DbError>,
    ) -> Result<(), DbError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            if !f(&Row::from_sqlite(r)?)? {
                break;
            }
        }
        Ok(())
    }
}

impl ToSql for Val<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Text(s) => s.as_ref().to_sql(ty, out),
            Val::Int(i) if *ty == Type::INT8 => i.to_sql(ty, out),
            Val::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Val::Int(i) if *ty == Type::BOOL => (*i != 0).to_sql(ty, out),
            Val::Int(_) => Err(format!("an integer given for a {ty} parameter").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.to_sql(ty, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_read_as_their_type_or_fail_clearly() {
        let row = Row(vec![Cell::Int(-1), Cell::Null, Cell::Text("x".into())]);
        assert_eq!(row.get::<i64>(0).ok(), Some(-1));
        assert!(matches!(
            row.get::<u64>(0),
            Err(DbError::Column { index: 0, .. })
        ));
        assert_eq!(row.get::<Option<u64>>(1).ok(), Some(None));
        assert!(row.get::<u64>(1).is_err());
        assert_eq!(row.get::<String>(2).ok().as_deref(), Some("x"));
        assert!(row.get::<bool>(2).is_err());
        assert!(row.get::<i64>(3).is_err());
    }

    #[test]
    fn sqlite_binds_and_reads_through_the_same_calls() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory db");
        let mut lite = Lite(&conn);
        let db: &mut dyn Sql = &mut lite;
        db.exec("CREATE TABLE t (a INTEGER, b TEXT)", args![])
            .expect("table");
        let none: Option<&str> = None;
        db.exec("INSERT INTO t (a, b) VALUES (?1, ?2)", args![7u64, "x"])
            .expect("insert");
        db.exec("INSERT INTO t (a, b) VALUES (?1, ?2)", args![true, none])
            .expect("insert");
        let rows = db
            .rows("SELECT a, b FROM t ORDER BY a DESC", args![], |r| {
                Ok((r.get::<u64>(0)?, r.get::<Option<String>>(1)?))
            })
            .expect("rows");
        assert_eq!(rows, vec![(7, Some("x".into())), (1, None)]);
    }
}
