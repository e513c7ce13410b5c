//! Published versions: immutable rows beside their function.

use super::{decode, encode, engine};
use crate::model::{AliasRecord, FunctionRecord, VersionRecord};
use crate::store::StoreError;
use rusqlite::{Connection, OptionalExtension, params};

pub(super) fn publish(
    conn: &mut Connection,
    tenant: &str,
    function: &FunctionRecord,
    expected_revision: u64,
    version: &VersionRecord,
) -> Result<(), StoreError> {
    let name = &function.config.name;
    let tx = conn.transaction().map_err(engine)?;
    let changed = tx
        .execute(
            "UPDATE functions SET revision = ?1, record = ?2 WHERE tenant = ?3 AND name = ?4 AND revision = ?5",
            params![function.revision as i64, encode(function)?, tenant, name, expected_revision as i64],
        )
        .map_err(engine)?;
    if changed == 0 {
        let exists: Option<i64> = tx
            .query_row(
                "SELECT revision FROM functions WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
                |row| row.get(0),
            )
            .optional()
            .map_err(engine)?;
        return Err(match exists {
            None => StoreError::NotFound(name.clone()),
            Some(_) => StoreError::StaleRevision {
                name: name.clone(),
                expected: expected_revision,
            },
        });
    }
    tx.execute(
        "INSERT INTO versions (tenant, name, version, record) VALUES (?1, ?2, ?3, ?4)",
        params![tenant, name, version.version as i64, encode(version)?],
    )
    .map_err(engine)?;
    tx.commit().map_err(engine)
}

pub(super) fn get(
    conn: &Connection,
    tenant: &str,
    name: &str,
    version: u64,
) -> Result<Option<VersionRecord>, StoreError> {
    let text: Option<String> = conn
        .query_row(
            "SELECT record FROM versions WHERE tenant = ?1 AND name = ?2 AND version = ?3",
            params![tenant, name, version as i64],
            |row| row.get(0),
        )
        .optional()
        .map_err(engine)?;
    text.map(|t| decode(name, &t)).transpose()
}

pub(super) fn list(
    conn: &Connection,
    tenant: &str,
    name: &str,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<VersionRecord>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT record FROM versions WHERE tenant = ?1 AND name = ?2 AND version > ?3
             ORDER BY version LIMIT ?4",
        )
        .map_err(engine)?;
    let rows = stmt
        .query_map(
            params![tenant, name, after.unwrap_or(0) as i64, limit as i64],
            |row| row.get::<_, String>(0),
        )
        .map_err(engine)?;
    rows.map(|r| decode(name, &r.map_err(engine)?)).collect()
}

pub(super) fn all(conn: &Connection) -> Result<Vec<(String, String, VersionRecord)>, StoreError> {
    super::all_records(
        conn,
        "SELECT tenant, name, record FROM versions ORDER BY tenant, name, version",
    )
}

pub(super) fn delete(
    conn: &mut Connection,
    tenant: &str,
    name: &str,
    version: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(engine)?;
    let routed: Vec<AliasRecord> = super::aliases::of_function(&tx, tenant, name)?;
    let wanted = version.to_string();
    if let Some(alias) = routed.iter().find(|a| {
        a.function_version == wanted
            || a.additional_version
                .as_ref()
                .is_some_and(|(v, _)| *v == wanted)
    }) {
        return Err(StoreError::VersionInUse {
            name: name.to_string(),
            version,
            alias: alias.name.clone(),
        });
    }
    let removed = tx
        .execute(
            "DELETE FROM versions WHERE tenant = ?1 AND name = ?2 AND version = ?3",
            params![tenant, name, version as i64],
        )
        .map_err(engine)?;
    if removed == 0 {
        return Err(StoreError::VersionNotFound {
            name: name.to_string(),
            version: wanted,
        });
    }
    // What was configured on the version goes with it.
    tx.execute(
        "DELETE FROM event_invoke WHERE tenant = ?1 AND name = ?2 AND qualifier = ?3",
        params![tenant, name, wanted],
    )
    .map_err(engine)?;
    tx.commit().map_err(engine)
}
