//! The two SQL dialects the store speaks, from one text per statement.
//!
//! Every statement is written once, in SQL that SQLite runs as it stands; [`Dialect::Postgres`] rewrites it
//! with three mechanical rules (cached, so each statement is rewritten once per process):
//!
//! - `/*pg:TEXT*/` becomes `TEXT`: what only PostgreSQL needs (row locks such as `FOR UPDATE SKIP LOCKED`,
//!   `::jsonb` on a JSON column stored as text) sits in a comment SQLite skips;
//! - `json_each($N)`, SQLite's table of a JSON array bound as text, becomes `jsonb_array_elements($N::jsonb)`
//!   when the statement reads rows of it (`value -> …`), else `jsonb_array_elements_text($N::jsonb)` (a list
//!   of keys compared with text columns);
//! - nothing else: both engines accept `$N` placeholders, `CAST(… AS BIGINT)`, `->`/`->>`, `UPDATE … FROM`,
//!   `ON CONFLICT … DO UPDATE`, `RETURNING` and `FILTER (WHERE …)`, which is why the statements use them.
//!
//! What cannot be said in one text (advisory locks, identity sequences, `LISTEN/NOTIFY`) is a method of the
//! store that asks [`Dialect`] which backend it runs on.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

use sqlx::AnyConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The dialect of a live connection (sqlx's `Any` driver names its backend).
    pub fn of(conn: &AnyConnection) -> Dialect {
        if conn.backend_name().eq_ignore_ascii_case("postgresql") { Dialect::Postgres } else { Dialect::Sqlite }
    }

    /// The statement as this backend runs it.
    pub fn sql(self, text: &'static str) -> &'static str {
        match self {
            Dialect::Sqlite => text,
            Dialect::Postgres => postgres_cached(text),
        }
    }

    /// The statement that opens a write transaction: SQLite takes its single writer lock up front, so two
    /// writers never deadlock upgrading a read lock; PostgreSQL locks rows as statements reach them.
    pub fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// The statement that opens a read transaction seeing one snapshot from its first to its last statement.
    pub fn begin_snapshot(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        }
    }
}

fn postgres_cached(text: &'static str) -> &'static str {
    static CACHE: LazyLock<RwLock<HashMap<&'static str, &'static str>>> = LazyLock::new(Default::default);
    if let Some(done) = CACHE.read().unwrap_or_else(|e| e.into_inner()).get(text) {
        return done;
    }
    // Leaked once per distinct statement: the set is the fixed set of statements in this module's callers.
    let done: &'static str = Box::leak(to_postgres(text).into_boxed_str());
    CACHE.write().unwrap_or_else(|e| e.into_inner()).insert(text, done);
    done
}

/// The PostgreSQL text of a statement written for SQLite (see the module documentation).
pub fn to_postgres(text: &str) -> String {
    let rows = text.contains("value ->");
    let elements = if rows { "jsonb_array_elements(" } else { "jsonb_array_elements_text(" };
    let mut out = String::with_capacity(text.len() + 32);
    let mut rest = text;
    loop {
        let comment = rest.find("/*pg:");
        let each = rest.find("json_each(");
        match (comment, each) {
            (Some(c), e) if e.is_none_or(|e| c < e) => {
                out.push_str(&rest[..c]);
                let body = &rest[c + 5..];
                let end = body.find("*/").unwrap_or(body.len());
                out.push_str(&body[..end]);
                rest = body.get(end + 2..).unwrap_or("");
            }
            (_, Some(e)) => {
                out.push_str(&rest[..e]);
                out.push_str(elements);
                let args = &rest[e + "json_each(".len()..];
                let end = args.find(')').unwrap_or(args.len());
                out.push_str(&args[..end]);
                out.push_str("::jsonb)");
                rest = args.get(end + 1..).unwrap_or("");
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_uncomments_its_parts_and_reads_json_arrays_as_jsonb() {
        assert_eq!(
            to_postgres("SELECT id FROM t WHERE k IN (SELECT value FROM json_each($1)) LIMIT $2 /*pg:FOR UPDATE*/"),
            "SELECT id FROM t WHERE k IN (SELECT value FROM jsonb_array_elements_text($1::jsonb)) LIMIT $2 FOR UPDATE"
        );
        assert_eq!(
            to_postgres(
                "UPDATE t SET a = j.value ->> 1 FROM json_each($1) j WHERE t.id = CAST(j.value ->> 0 AS BIGINT)"
            ),
            "UPDATE t SET a = j.value ->> 1 FROM jsonb_array_elements($1::jsonb) j WHERE t.id = CAST(j.value ->> 0 AS BIGINT)"
        );
        assert_eq!(to_postgres("SELECT payload/*pg:::jsonb*/ ->> 'x' FROM r"), "SELECT payload::jsonb ->> 'x' FROM r");
        assert_eq!(Dialect::Sqlite.sql("SELECT 1 /*pg:FOR UPDATE*/"), "SELECT 1 /*pg:FOR UPDATE*/");
        let once = Dialect::Postgres.sql("SELECT value FROM json_each($3)");
        assert_eq!(once, "SELECT value FROM jsonb_array_elements_text($3::jsonb)");
        assert!(std::ptr::eq(once, Dialect::Postgres.sql("SELECT value FROM json_each($3)")), "cached");
    }
}
