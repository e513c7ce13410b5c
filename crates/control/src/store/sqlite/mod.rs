//! The embedded store: SQLite in WAL mode with `synchronous=FULL`, so a
//! committed write survives power loss, not just a process crash.

mod aliases;
mod event_invoke;
mod versions;

use super::{FunctionStore, ProvisionedRecord, StoreError};
use crate::model::{AliasRecord, EventInvokeConfig, FunctionRecord, VersionRecord};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;

/// How long a writer waits for SQLite's lock before giving up, in ms.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// A [`FunctionStore`] in one SQLite file.
pub struct SqliteStore {
    /// One connection: SQLite serialises writers anyway, and the hot path
    /// (invoke) reads snapshots in memory, never this connection.
    conn: Mutex<Connection>,
}

pub(super) fn engine(e: rusqlite::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// Fails with [`StoreError::NotFound`] unless `tenant` has the function
/// `name` (read within the caller's transaction).
pub(super) fn function_must_exist(
    conn: &Connection,
    tenant: &str,
    name: &str,
) -> Result<(), StoreError> {
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM functions WHERE tenant = ?1 AND name = ?2)",
            params![tenant, name],
            |row| row.get(0),
        )
        .map_err(engine)?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::NotFound(name.to_string()))
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(engine)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(engine)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(engine)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(engine)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS functions (
                tenant   TEXT    NOT NULL,
                name     TEXT    NOT NULL,
                revision INTEGER NOT NULL,
                record   TEXT    NOT NULL,
                PRIMARY KEY (tenant, name)
            );
            CREATE TABLE IF NOT EXISTS versions (
                tenant   TEXT    NOT NULL,
                name     TEXT    NOT NULL,
                version  INTEGER NOT NULL,
                record   TEXT    NOT NULL,
                PRIMARY KEY (tenant, name, version)
            );
            CREATE TABLE IF NOT EXISTS concurrency (
                tenant   TEXT    NOT NULL,
                name     TEXT    NOT NULL,
                reserved INTEGER NOT NULL,
                PRIMARY KEY (tenant, name)
            );
            CREATE TABLE IF NOT EXISTS provisioned (
                tenant        TEXT    NOT NULL,
                name          TEXT    NOT NULL,
                qualifier     TEXT    NOT NULL,
                requested     INTEGER NOT NULL,
                last_modified TEXT    NOT NULL,
                PRIMARY KEY (tenant, name, qualifier)
            );
            CREATE TABLE IF NOT EXISTS event_invoke (
                tenant    TEXT    NOT NULL,
                name      TEXT    NOT NULL,
                qualifier TEXT    NOT NULL,
                record    TEXT    NOT NULL,
                PRIMARY KEY (tenant, name, qualifier)
            );
            CREATE TABLE IF NOT EXISTS aliases (
                tenant   TEXT    NOT NULL,
                name     TEXT    NOT NULL,
                alias    TEXT    NOT NULL,
                revision INTEGER NOT NULL,
                record   TEXT    NOT NULL,
                PRIMARY KEY (tenant, name, alias)
            );",
        )
        .map_err(engine)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (a
        // statement is atomic), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(super) fn encode<T: serde::Serialize>(record: &T) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Engine(e.to_string()))
}

/// Runs `sql`, which selects `tenant, name, record`, and decodes every row.
pub(super) fn all_records<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
) -> Result<Vec<(String, String, T)>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(engine)?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .map_err(engine)?;
    rows.map(|r| {
        let (tenant, name, text) = r.map_err(engine)?;
        let record = decode(&name, &text)?;
        Ok((tenant, name, record))
    })
    .collect()
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    name: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Damaged {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

impl FunctionStore for SqliteStore {
    fn create(&self, tenant: &str, record: &FunctionRecord) -> Result<(), StoreError> {
        let name = &record.config.name;
        let inserted = self
            .conn()
            .execute(
                "INSERT INTO functions (tenant, name, revision, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, name) DO NOTHING",
                params![tenant, name, record.revision as i64, encode(record)?],
            )
            .map_err(engine)?;
        if inserted == 0 {
            return Err(StoreError::Exists(name.clone()));
        }
        Ok(())
    }

    fn get(&self, tenant: &str, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT record FROM functions WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
                |row| row.get(0),
            )
            .optional()
            .map_err(engine)?;
        text.map(|t| decode(name, &t)).transpose()
    }

    fn list(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FunctionRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT name, record FROM functions WHERE tenant = ?1 AND name > ?2
                 ORDER BY name LIMIT ?3",
            )
            .map_err(engine)?;
        let rows = stmt
            .query_map(params![tenant, after.unwrap_or(""), limit as i64], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(engine)?;
        rows.map(|r| {
            let (name, text) = r.map_err(engine)?;
            decode(&name, &text)
        })
        .collect()
    }

    fn all(&self) -> Result<Vec<(String, FunctionRecord)>, StoreError> {
        let rows = all_records(
            &self.conn(),
            "SELECT tenant, name, record FROM functions ORDER BY tenant, name",
        )?;
        Ok(rows
            .into_iter()
            .map(|(tenant, _, record)| (tenant, record))
            .collect())
    }

    fn update(
        &self,
        tenant: &str,
        record: &FunctionRecord,
        expected_revision: u64,
    ) -> Result<(), StoreError> {
        let name = &record.config.name;
        let conn = self.conn();
        let changed = conn
            .execute(
                "UPDATE functions SET revision = ?1, record = ?2
                 WHERE tenant = ?3 AND name = ?4 AND revision = ?5",
                params![
                    record.revision as i64,
                    encode(record)?,
                    tenant,
                    name,
                    expected_revision as i64
                ],
            )
            .map_err(engine)?;
        if changed == 1 {
            return Ok(());
        }
        let exists: Option<i64> = conn
            .query_row(
                "SELECT revision FROM functions WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
                |row| row.get(0),
            )
            .optional()
            .map_err(engine)?;
        match exists {
            None => Err(StoreError::NotFound(name.clone())),
            Some(_) => Err(StoreError::StaleRevision {
                name: name.clone(),
                expected: expected_revision,
            }),
        }
    }

    fn delete(&self, tenant: &str, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(engine)?;
        let removed = tx
            .execute(
                "DELETE FROM functions WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
            )
            .map_err(engine)?;
        if removed == 0 {
            return Err(StoreError::NotFound(name.to_string()));
        }
        for table in [
            "versions",
            "aliases",
            "concurrency",
            "provisioned",
            "event_invoke",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE tenant = ?1 AND name = ?2"),
                params![tenant, name],
            )
            .map_err(engine)?;
        }
        tx.commit().map_err(engine)
    }

    fn publish_version(
        &self,
        tenant: &str,
        function: &FunctionRecord,
        expected_revision: u64,
        version: &VersionRecord,
    ) -> Result<(), StoreError> {
        versions::publish(
            &mut self.conn(),
            tenant,
            function,
            expected_revision,
            version,
        )
    }

    fn get_version(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
    ) -> Result<Option<VersionRecord>, StoreError> {
        versions::get(&self.conn(), tenant, name, version)
    }

    fn list_versions(
        &self,
        tenant: &str,
        name: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, StoreError> {
        versions::list(&self.conn(), tenant, name, after, limit)
    }

    fn all_versions(&self) -> Result<Vec<(String, String, VersionRecord)>, StoreError> {
        versions::all(&self.conn())
    }

    fn delete_version(&self, tenant: &str, name: &str, version: u64) -> Result<(), StoreError> {
        versions::delete(&mut self.conn(), tenant, name, version)
    }

    fn create_alias(
        &self,
        tenant: &str,
        function: &str,
        alias: &AliasRecord,
    ) -> Result<(), StoreError> {
        aliases::create(&mut self.conn(), tenant, function, alias)
    }

    fn get_alias(
        &self,
        tenant: &str,
        function: &str,
        alias: &str,
    ) -> Result<Option<AliasRecord>, StoreError> {
        aliases::get(&self.conn(), tenant, function, alias)
    }

    fn list_aliases(
        &self,
        tenant: &str,
        function: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AliasRecord>, StoreError> {
        aliases::list(&self.conn(), tenant, function, after, limit)
    }

    fn update_alias(
        &self,
        tenant: &str,
        function: &str,
        alias: &AliasRecord,
        expected_revision: u64,
    ) -> Result<(), StoreError> {
        aliases::update(&mut self.conn(), tenant, function, alias, expected_revision)
    }

    fn all_aliases(&self) -> Result<Vec<(String, String, AliasRecord)>, StoreError> {
        aliases::all(&self.conn())
    }

    fn delete_alias(&self, tenant: &str, function: &str, alias: &str) -> Result<(), StoreError> {
        aliases::delete(&mut self.conn(), tenant, function, alias)
    }

    fn set_reserved_concurrency(
        &self,
        tenant: &str,
        name: &str,
        reserved: Option<u32>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(engine)?;
        function_must_exist(&tx, tenant, name)?;
        match reserved {
            Some(r) => tx.execute(
                "INSERT INTO concurrency (tenant, name, reserved) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, name) DO UPDATE SET reserved = excluded.reserved",
                params![tenant, name, r],
            ),
            None => tx.execute(
                "DELETE FROM concurrency WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
            ),
        }
        .map_err(engine)?;
        tx.commit().map_err(engine)
    }

    fn put_provisioned(&self, tenant: &str, config: &ProvisionedRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(engine)?;
        function_must_exist(&tx, tenant, &config.function)?;
        tx.execute(
            "INSERT INTO provisioned (tenant, name, qualifier, requested, last_modified)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant, name, qualifier) DO UPDATE
             SET requested = excluded.requested, last_modified = excluded.last_modified",
            params![
                tenant,
                config.function,
                config.qualifier,
                config.requested,
                config.last_modified
            ],
        )
        .map_err(engine)?;
        tx.commit().map_err(engine)
    }

    fn delete_provisioned(
        &self,
        tenant: &str,
        function: &str,
        qualifier: &str,
    ) -> Result<bool, StoreError> {
        let removed = self
            .conn()
            .execute(
                "DELETE FROM provisioned WHERE tenant = ?1 AND name = ?2 AND qualifier = ?3",
                params![tenant, function, qualifier],
            )
            .map_err(engine)?;
        Ok(removed > 0)
    }

    fn all_provisioned(&self) -> Result<Vec<(String, ProvisionedRecord)>, StoreError> {
        provisioned_where(&self.conn(), "", [])
    }

    fn provisioned_of(
        &self,
        tenant: &str,
        function: &str,
    ) -> Result<Vec<ProvisionedRecord>, StoreError> {
        let rows = provisioned_where(
            &self.conn(),
            "WHERE tenant = ?1 AND name = ?2",
            params![tenant, function],
        )?;
        Ok(rows.into_iter().map(|(_, record)| record).collect())
    }

    fn put_event_invoke_config(
        &self,
        tenant: &str,
        config: &EventInvokeConfig,
    ) -> Result<(), StoreError> {
        event_invoke::put(&mut self.conn(), tenant, config)
    }

    fn delete_event_invoke_config(
        &self,
        tenant: &str,
        function: &str,
        qualifier: &str,
    ) -> Result<bool, StoreError> {
        event_invoke::delete(&self.conn(), tenant, function, qualifier)
    }

    fn event_invoke_configs_of(
        &self,
        tenant: &str,
        function: &str,
    ) -> Result<Vec<EventInvokeConfig>, StoreError> {
        let rows = event_invoke::select(
            &self.conn(),
            "WHERE tenant = ?1 AND name = ?2",
            params![tenant, function],
        )?;
        Ok(rows.into_iter().map(|(_, c)| c).collect())
    }

    fn all_event_invoke_configs(&self) -> Result<Vec<(String, EventInvokeConfig)>, StoreError> {
        event_invoke::select(&self.conn(), "", [])
    }

    fn all_reserved_concurrency(&self) -> Result<Vec<(String, String, u32)>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT tenant, name, reserved FROM concurrency ORDER BY tenant, name")
            .map_err(engine)?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }
}

/// Provisioned-concurrency configurations matching `filter` (a `WHERE`
/// clause, or nothing), as (tenant, record), by function and qualifier.
fn provisioned_where(
    conn: &Connection,
    filter: &str,
    values: impl rusqlite::Params,
) -> Result<Vec<(String, ProvisionedRecord)>, StoreError> {
    let mut statement = conn
        .prepare(&format!(
            "SELECT tenant, name, qualifier, requested, last_modified FROM provisioned {filter}
             ORDER BY tenant, name, qualifier"
        ))
        .map_err(engine)?;
    let rows = statement
        .query_map(values, |row| {
            Ok((
                row.get(0)?,
                ProvisionedRecord {
                    function: row.get(1)?,
                    qualifier: row.get(2)?,
                    requested: row.get(3)?,
                    last_modified: row.get(4)?,
                },
            ))
        })
        .map_err(engine)?;
    rows.collect::<Result<_, _>>().map_err(engine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FunctionConfig, Runtime};

    fn record(name: &str, revision: u64) -> FunctionRecord {
        FunctionRecord {
            config: FunctionConfig {
                name: name.into(),
                runtime: Runtime::Wasm,
                role: "arn:aws:iam::000000000000:role/x".into(),
                handler: None,
                description: String::new(),
                timeout_s: 3,
                memory_size_mb: 128,
                ephemeral_storage_mb: 512,
                environment: Default::default(),
                dead_letter_target: None,
            },
            revision,
            revision_id: format!("rev-{revision}"),
            code_sha256_hex: "00".repeat(32),
            code_size: 1,
            last_modified: String::new(),
            last_version: 0,
            tags: Default::default(),
        }
    }

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("store.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn create_get_list_delete() {
        let (_dir, s) = store();
        s.create("t", &record("b", 1)).unwrap();
        s.create("t", &record("a", 1)).unwrap();
        s.create("other", &record("c", 1)).unwrap();
        assert!(matches!(
            s.create("t", &record("a", 1)),
            Err(StoreError::Exists(_))
        ));
        assert_eq!(s.get("t", "a").unwrap().unwrap().config.name, "a");
        assert!(s.get("t", "c").unwrap().is_none(), "tenants are apart");
        let names: Vec<_> = s
            .list("t", None, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.config.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(s.list("t", Some("a"), 10).unwrap().len(), 1);
        s.delete("t", "a").unwrap();
        assert!(matches!(s.delete("t", "a"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn reserved_concurrency_is_the_functions_until_it_is_deleted() {
        let (_dir, s) = store();
        s.create("t", &record("f", 1)).unwrap();
        s.create("t", &record("g", 1)).unwrap();
        assert!(matches!(
            s.set_reserved_concurrency("t", "missing", Some(1)),
            Err(StoreError::NotFound(_))
        ));
        s.set_reserved_concurrency("t", "f", Some(5)).unwrap();
        s.set_reserved_concurrency("t", "g", Some(0)).unwrap();
        s.set_reserved_concurrency("t", "f", Some(7)).unwrap();
        let all = s.all_reserved_concurrency().unwrap();
        assert_eq!(
            all,
            [("t".into(), "f".into(), 7), ("t".into(), "g".into(), 0)]
        );
        assert_eq!(
            s.get("t", "f").unwrap().unwrap().revision,
            1,
            "no new revision"
        );
        s.set_reserved_concurrency("t", "g", None).unwrap();
        s.delete("t", "f").unwrap();
        assert!(s.all_reserved_concurrency().unwrap().is_empty());
    }

    #[test]
    fn event_invoke_configurations_go_with_their_function_version_or_alias() {
        let (_dir, s) = store();
        s.create("t", &record("f", 1)).unwrap();
        let config = |qualifier: &str, retries| EventInvokeConfig {
            maximum_retry_attempts: Some(retries),
            ..EventInvokeConfig::default_for("f", qualifier)
        };
        assert!(matches!(
            s.put_event_invoke_config("t", &EventInvokeConfig::default_for("g", "$LATEST")),
            Err(StoreError::NotFound(_))
        ));
        s.put_event_invoke_config("t", &config("$LATEST", 0))
            .unwrap();
        s.put_event_invoke_config("t", &config("$LATEST", 1))
            .unwrap();
        s.put_event_invoke_config("t", &config("live", 2)).unwrap();
        let held = s.event_invoke_configs_of("t", "f").unwrap();
        assert_eq!(held, [config("$LATEST", 1), config("live", 2)]);
        assert!(s.event_invoke_configs_of("u", "f").unwrap().is_empty());
        assert_eq!(s.all_event_invoke_configs().unwrap().len(), 2);
        assert!(s.delete_event_invoke_config("t", "f", "live").unwrap());
        assert!(!s.delete_event_invoke_config("t", "f", "live").unwrap());
        s.delete("t", "f").unwrap();
        assert!(s.all_event_invoke_configs().unwrap().is_empty());
    }

    #[test]
    fn provisioned_configurations_are_kept_per_qualifier_until_the_function_goes() {
        let (_dir, s) = store();
        s.create("t", &record("f", 1)).unwrap();
        let config = |qualifier: &str, requested| ProvisionedRecord {
            function: "f".into(),
            qualifier: qualifier.into(),
            requested,
            last_modified: "then".into(),
        };
        assert!(matches!(
            s.put_provisioned(
                "t",
                &ProvisionedRecord {
                    function: "g".into(),
                    ..config("1", 1)
                }
            ),
            Err(StoreError::NotFound(_))
        ));
        s.put_provisioned("t", &config("1", 2)).unwrap();
        s.put_provisioned("t", &config("live", 3)).unwrap();
        s.put_provisioned("t", &config("1", 4)).unwrap();
        let all = s.all_provisioned().unwrap();
        assert_eq!(
            all,
            [
                ("t".into(), config("1", 4)),
                ("t".into(), config("live", 3))
            ]
        );
        assert_eq!(
            s.provisioned_of("t", "f").unwrap(),
            [config("1", 4), config("live", 3)]
        );
        assert!(s.provisioned_of("t", "g").unwrap().is_empty());
        assert!(s.provisioned_of("u", "f").unwrap().is_empty());
        assert!(s.delete_provisioned("t", "f", "live").unwrap());
        assert!(!s.delete_provisioned("t", "f", "live").unwrap());
        s.delete("t", "f").unwrap();
        assert!(s.all_provisioned().unwrap().is_empty());
    }

    #[test]
    fn update_is_compare_and_set() {
        let (_dir, s) = store();
        s.create("t", &record("f", 1)).unwrap();
        s.update("t", &record("f", 2), 1).unwrap();
        let stale = s.update("t", &record("f", 3), 1);
        assert!(matches!(
            stale,
            Err(StoreError::StaleRevision { expected: 1, .. })
        ));
        assert_eq!(s.get("t", "f").unwrap().unwrap().revision, 2);
        assert!(matches!(
            s.update("t", &record("g", 2), 1),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        SqliteStore::open(&path)
            .unwrap()
            .create("t", &record("f", 1))
            .unwrap();
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(reopened.all().unwrap().len(), 1);
    }

    fn version(function: &FunctionRecord, n: u64) -> VersionRecord {
        VersionRecord {
            version: n,
            config: function.config.clone(),
            code_sha256_hex: function.code_sha256_hex.clone(),
            code_size: function.code_size,
            revision_id: format!("v{n}"),
            last_modified: String::new(),
        }
    }

    fn alias(name: &str, to: &str, extra: Option<(&str, f64)>, revision: u64) -> AliasRecord {
        AliasRecord {
            name: name.into(),
            function_version: to.into(),
            description: String::new(),
            additional_version: extra.map(|(v, w)| (v.to_string(), w)),
            revision,
            revision_id: format!("a{revision}"),
        }
    }

    #[test]
    fn publishing_counts_versions_by_compare_and_set() {
        let (_dir, s) = store();
        let f = record("f", 1);
        s.create("t", &f).unwrap();
        let mut next = f.clone();
        next.revision = 2;
        next.last_version = 1;
        s.publish_version("t", &next, 1, &version(&f, 1)).unwrap();
        let stale = s.publish_version("t", &next, 1, &version(&f, 2));
        assert!(matches!(stale, Err(StoreError::StaleRevision { .. })));
        assert!(
            s.get_version("t", "f", 2).unwrap().is_none(),
            "a failed publish leaves no version"
        );
        assert_eq!(s.get("t", "f").unwrap().unwrap().last_version, 1);
        assert_eq!(s.list_versions("t", "f", None, 10).unwrap().len(), 1);
    }

    #[test]
    fn aliases_route_only_to_existing_versions_and_pin_them() {
        let (_dir, s) = store();
        let f = record("f", 1);
        s.create("t", &f).unwrap();
        let mut next = f.clone();
        next.revision = 2;
        s.publish_version("t", &next, 1, &version(&f, 1)).unwrap();
        let missing = s.create_alias("t", "f", &alias("live", "2", None, 1));
        assert!(matches!(missing, Err(StoreError::VersionNotFound { .. })));
        s.create_alias("t", "f", &alias("live", "1", Some(("$LATEST", 0.1)), 1))
            .unwrap();
        assert!(matches!(
            s.create_alias("t", "f", &alias("live", "1", None, 1)),
            Err(StoreError::AliasExists(_))
        ));
        assert!(matches!(
            s.delete_version("t", "f", 1),
            Err(StoreError::VersionInUse { .. })
        ));
        s.update_alias("t", "f", &alias("live", "$LATEST", None, 2), 1)
            .unwrap();
        let stale = s.update_alias("t", "f", &alias("live", "1", None, 3), 1);
        assert!(matches!(stale, Err(StoreError::StaleAlias(_))));
        s.delete_version("t", "f", 1).unwrap();
        s.delete("t", "f").unwrap();
        assert!(
            s.list_aliases("t", "f", None, 10).unwrap().is_empty(),
            "aliases go with the function"
        );
        assert!(s.all_versions().unwrap().is_empty());
    }
}
