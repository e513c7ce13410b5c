//! The root tenant's keys: from the environment when set, else generated
//! once and kept (mode 0600) in the data directory.

use anyhow::Context as _;
use nimbus_api::Credentials;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The root tenant's account id (the account in every ARN it owns).
pub const ROOT_ACCOUNT_ID: &str = "000000000000";

#[derive(Serialize, Deserialize)]
struct Stored {
    access_key_id: String,
    secret_access_key: String,
}

fn random_chars(alphabet: &[u8], n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in uuid::Uuid::new_v4().as_bytes() {
            // 256 is not a multiple of the alphabet's size; the slight bias
            // toward its first letters costs a negligible share of entropy.
            out.push(alphabet[*b as usize % alphabet.len()] as char);
        }
    }
    out.truncate(n);
    out
}

/// The root keys for `data_dir`.
pub fn root(data_dir: &Path) -> anyhow::Result<Credentials> {
    let from_env = (
        std::env::var("NIMBUS_ROOT_ACCESS_KEY_ID"),
        std::env::var("NIMBUS_ROOT_SECRET_ACCESS_KEY"),
    );
    if let (Ok(id), Ok(secret)) = from_env
        && !id.is_empty()
        && !secret.is_empty()
    {
        return Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            account_id: ROOT_ACCOUNT_ID.into(),
        });
    }
    let path = data_dir.join("credentials.json");
    let stored = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<Stored>(&bytes)
            .with_context(|| format!("{} is damaged", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let stored = Stored {
                access_key_id: format!(
                    "AKIA{}",
                    random_chars(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
                ),
                secret_access_key: random_chars(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                    40,
                ),
            };
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("create {}", data_dir.display()))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("create {}", path.display()))?;
            file.write_all(&serde_json::to_vec_pretty(&stored)?)?;
            file.sync_all()?;
            stored
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    Ok(Credentials {
        access_key_id: stored.access_key_id,
        secret_access_key: stored.secret_access_key,
        account_id: ROOT_ACCOUNT_ID.into(),
    })
}
