//! The two schemas are one: `migrations/sqlite` and `migrations/postgres` must give the same tables, the same
//! columns in the same order, with matching types and nullability (the store's statements rely on it).

mod common;

use common::{Db, Env};

/// (table, column, type class, not null) of every column, from a migrated database.
fn columns(env: &Env) -> Vec<(String, String, String, bool)> {
    env.ok(&["migrate"]);
    let query = match env.backend {
        Db::Sqlite => {
            "SELECT m.name, p.name, p.type, p.\"notnull\" + p.pk FROM sqlite_master m, pragma_table_info(m.name) p
             WHERE m.type = 'table' AND m.name NOT LIKE '\\_sqlx%' ESCAPE '\\' AND m.name NOT LIKE 'sqlite%'
             ORDER BY m.name, p.cid"
        }
        Db::Postgres => {
            "SELECT table_name::text, column_name::text, data_type::text,
                    CASE WHEN is_nullable = 'NO' THEN 1 ELSE 0 END
             FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx%'
             ORDER BY table_name, ordinal_position"
        }
    };
    env.sql(query)
        .into_iter()
        .map(|r| {
            let text = |i: usize| r[i].as_str().expect("text").to_string();
            let class = match text(2).to_ascii_lowercase().as_str() {
                "integer" | "bigint" => "integer",
                "text" => "text",
                "blob" | "bytea" => "bytes",
                other => {
                    panic!(
                        "column {}.{} has type {other}: the store uses only integers, text and bytes",
                        text(0),
                        text(1)
                    )
                }
            }
            .to_string();
            (text(0), text(1), class, r[3].as_i64().expect("not null") > 0)
        })
        .collect()
}

#[test]
fn sqlite_and_postgresql_migrations_give_the_same_schema() {
    let Some(_server) = common::pg::shared_or_skip("schema::postgres_and_sqlite_schemas") else { return };
    let (sqlite, postgres) = (Env::new(Db::Sqlite), Env::new(Db::Postgres));
    let (a, b) = (columns(&sqlite), columns(&postgres));
    assert!(a.len() > 50, "too few columns read: {a:?}");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "SQLite (left) and PostgreSQL (right) differ");
    }
    assert_eq!(a.len(), b.len(), "a table or column exists on one backend only");
    let versions = |env: &Env| env.sql("SELECT version, description FROM _sqlx_migrations ORDER BY version");
    assert_eq!(versions(&sqlite), versions(&postgres), "the same migration versions");
}
