//! Aliases: named, revisioned pointers to versions. Every write checks, in
//! the same transaction, that the versions it routes to exist — so an alias
//! can never point at a version deleted concurrently.

use super::{decode, encode, engine};
use crate::model::AliasRecord;
use crate::store::StoreError;
use rusqlite::{Connection, OptionalExtension, params};

pub(super) fn of_function(
    conn: &Connection,
    tenant: &str,
    name: &str,
) -> Result<Vec<AliasRecord>, StoreError> {
    list(conn, tenant, name, None, usize::MAX >> 1)
}

fn check_targets(
    conn: &Connection,
    tenant: &str,
    function: &str,
    alias: &AliasRecord,
) -> Result<(), StoreError> {
    let exists: Option<i64> = conn
        .query_row(
            "SELECT revision FROM functions WHERE tenant = ?1 AND name = ?2",
            params![tenant, function],
            |row| row.get(0),
        )
        .optional()
        .map_err(engine)?;
    if exists.is_none() {
        return Err(StoreError::NotFound(function.to_string()));
    }
    let targets = std::iter::once(alias.function_version.as_str())
        .chain(alias.additional_version.as_ref().map(|(v, _)| v.as_str()));
    for target in targets {
        if target == "$LATEST" {
            continue;
        }
        let number: Option<i64> = target.parse().ok();
        let found: Option<i64> = match number {
            None => None,
            Some(n) => conn
                .query_row(
                    "SELECT version FROM versions WHERE tenant = ?1 AND name = ?2 AND version = ?3",
                    params![tenant, function, n],
                    |row| row.get(0),
                )
                .optional()
                .map_err(engine)?,
        };
        if found.is_none() {
            return Err(StoreError::VersionNotFound {
                name: function.to_string(),
                version: target.to_string(),
            });
        }
    }
    Ok(())
}

pub(super) fn create(
    conn: &mut Connection,
    tenant: &str,
    function: &str,
    alias: &AliasRecord,
) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(engine)?;
    check_targets(&tx, tenant, function, alias)?;
    let inserted = tx
        .execute(
            "INSERT INTO aliases (tenant, name, alias, revision, record) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant, name, alias) DO NOTHING",
            params![tenant, function, alias.name, alias.revision as i64, encode(alias)?],
        )
        .map_err(engine)?;
    if inserted == 0 {
        return Err(StoreError::AliasExists(alias.name.clone()));
    }
    tx.commit().map_err(engine)
}

pub(super) fn get(
    conn: &Connection,
    tenant: &str,
    function: &str,
    alias: &str,
) -> Result<Option<AliasRecord>, StoreError> {
    let text: Option<String> = conn
        .query_row(
            "SELECT record FROM aliases WHERE tenant = ?1 AND name = ?2 AND alias = ?3",
            params![tenant, function, alias],
            |row| row.get(0),
        )
        .optional()
        .map_err(engine)?;
    text.map(|t| decode(function, &t)).transpose()
}

pub(super) fn list(
    conn: &Connection,
    tenant: &str,
    function: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<AliasRecord>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT record FROM aliases WHERE tenant = ?1 AND name = ?2 AND alias > ?3
             ORDER BY alias LIMIT ?4",
        )
        .map_err(engine)?;
    let rows = stmt
        .query_map(
            params![tenant, function, after.unwrap_or(""), limit as i64],
            |row| row.get::<_, String>(0),
        )
        .map_err(engine)?;
    rows.map(|r| decode(function, &r.map_err(engine)?))
        .collect()
}

pub(super) fn all(conn: &Connection) -> Result<Vec<(String, String, AliasRecord)>, StoreError> {
    super::all_records(
        conn,
        "SELECT tenant, name, record FROM aliases ORDER BY tenant, name, alias",
    )
}

pub(super) fn update(
    conn: &mut Connection,
    tenant: &str,
    function: &str,
    alias: &AliasRecord,
    expected_revision: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(engine)?;
    check_targets(&tx, tenant, function, alias)?;
    let changed = tx
        .execute(
            "UPDATE aliases SET revision = ?1, record = ?2
             WHERE tenant = ?3 AND name = ?4 AND alias = ?5 AND revision = ?6",
            params![
                alias.revision as i64,
                encode(alias)?,
                tenant,
                function,
                alias.name,
                expected_revision as i64
            ],
        )
        .map_err(engine)?;
    if changed == 0 {
        return Err(match get(&tx, tenant, function, &alias.name)? {
            None => StoreError::AliasNotFound(alias.name.clone()),
            Some(_) => StoreError::StaleAlias(alias.name.clone()),
        });
    }
    tx.commit().map_err(engine)
}

pub(super) fn delete(
    conn: &mut Connection,
    tenant: &str,
    function: &str,
    alias: &str,
) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(engine)?;
    let removed = tx
        .execute(
            "DELETE FROM aliases WHERE tenant = ?1 AND name = ?2 AND alias = ?3",
            params![tenant, function, alias],
        )
        .map_err(engine)?;
    if removed == 0 {
        return Err(StoreError::AliasNotFound(alias.to_string()));
    }
    // What was configured on the alias goes with it.
    tx.execute(
        "DELETE FROM event_invoke WHERE tenant = ?1 AND name = ?2 AND qualifier = ?3",
        params![tenant, function, alias],
    )
    .map_err(engine)?;
    tx.commit().map_err(engine)
}
