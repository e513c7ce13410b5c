//! The embedded store: SQLite in WAL mode with `synchronous=FULL`, so a
//! committed write survives power loss, not just a process crash.

use super::{FunctionStore, StoreError};
use crate::model::FunctionRecord;
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

fn engine(e: rusqlite::Error) -> StoreError {
    StoreError::Engine(e.to_string())
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

fn encode(record: &FunctionRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Engine(e.to_string()))
}

fn decode(name: &str, text: &str) -> Result<FunctionRecord, StoreError> {
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
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT tenant, name, record FROM functions ORDER BY tenant, name")
            .map_err(engine)?;
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
            Ok((tenant, decode(&name, &text)?))
        })
        .collect()
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
        let removed = self
            .conn()
            .execute(
                "DELETE FROM functions WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
            )
            .map_err(engine)?;
        if removed == 0 {
            return Err(StoreError::NotFound(name.to_string()));
        }
        Ok(())
    }
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
            },
            revision,
            revision_id: format!("rev-{revision}"),
            code_sha256_hex: "00".repeat(32),
            code_size: 1,
            last_modified: String::new(),
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
}
