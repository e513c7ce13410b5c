//! Event-invoke configurations: one JSON record per function and qualifier.

use super::engine;
use crate::model::EventInvokeConfig;
use crate::store::StoreError;
use rusqlite::{Connection, params};

pub(super) fn put(
    conn: &mut Connection,
    tenant: &str,
    config: &EventInvokeConfig,
) -> Result<(), StoreError> {
    let record = serde_json::to_string(config).map_err(|e| StoreError::Engine(e.to_string()))?;
    let tx = conn.transaction().map_err(engine)?;
    super::function_must_exist(&tx, tenant, &config.function)?;
    tx.execute(
        "INSERT INTO event_invoke (tenant, name, qualifier, record) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (tenant, name, qualifier) DO UPDATE SET record = excluded.record",
        params![tenant, config.function, config.qualifier, record],
    )
    .map_err(engine)?;
    tx.commit().map_err(engine)
}

pub(super) fn delete(
    conn: &Connection,
    tenant: &str,
    function: &str,
    qualifier: &str,
) -> Result<bool, StoreError> {
    let removed = conn
        .execute(
            "DELETE FROM event_invoke WHERE tenant = ?1 AND name = ?2 AND qualifier = ?3",
            params![tenant, function, qualifier],
        )
        .map_err(engine)?;
    Ok(removed > 0)
}

/// Configurations matching `filter` (a `WHERE` clause, or nothing), as
/// (tenant, record), by tenant, function and qualifier.
pub(super) fn select(
    conn: &Connection,
    filter: &str,
    values: impl rusqlite::Params,
) -> Result<Vec<(String, EventInvokeConfig)>, StoreError> {
    let mut statement = conn
        .prepare(&format!(
            "SELECT tenant, name, record FROM event_invoke {filter}
             ORDER BY tenant, name, qualifier"
        ))
        .map_err(engine)?;
    let rows = statement
        .query_map(values, |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .map_err(engine)?;
    let mut out = Vec::new();
    for row in rows {
        let (tenant, name, record) = row.map_err(engine)?;
        let config = serde_json::from_str(&record).map_err(|e| StoreError::Damaged {
            name,
            reason: format!("event-invoke configuration: {e}"),
        })?;
        out.push((tenant, config));
    }
    Ok(out)
}
