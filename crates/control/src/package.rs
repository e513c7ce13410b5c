//! Reading an uploaded code package: a zip archive (Lambda's format) or a raw
//! `.wasm`. Archives are untrusted input: every entry path is checked before
//! anything is read, and decompression stops at Lambda's unzipped-size limit
//! whatever the headers claim, so a zip bomb costs at most that much work.

use std::io::{Cursor, Read};

/// Lambda's limit on a package's unzipped size, in bytes (250 MiB).
pub const UNZIPPED_SIZE_MAX_BYTES: u64 = 262_144_000;

const WASM_MAGIC: &[u8] = b"\0asm";
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
const ZIP_EMPTY_MAGIC: &[u8] = b"PK\x05\x06";

/// Why a package was refused. Every variant is the user's error and maps to
/// `InvalidParameterValueException`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackageError {
    /// Neither a zip archive nor a WebAssembly binary.
    #[error(
        "Could not unzip uploaded file. Please check your file, then try to upload again. (It is neither a zip archive nor a WebAssembly binary.)"
    )]
    Unrecognised,
    /// The archive does not parse.
    #[error(
        "Could not unzip uploaded file. Please check your file, then try to upload again. ({0})"
    )]
    Corrupt(String),
    /// An entry would land outside the package directory.
    #[error("Could not unzip uploaded file: entry {0:?} has an absolute path or a '..' component")]
    UnsafePath(String),
    /// The archive inflates beyond Lambda's limit.
    #[error("Unzipped size must be smaller than {UNZIPPED_SIZE_MAX_BYTES} bytes")]
    TooLarge,
    /// No `.wasm` file in the archive.
    #[error("The zip file holds no .wasm file; runtime wasm needs one (name it with Handler)")]
    NoWasm,
    /// Several `.wasm` files and no `Handler` to choose one.
    #[error("The zip file holds several .wasm files ({0}); set Handler to the one to run")]
    AmbiguousWasm(String),
    /// A process runtime needs a zip archive.
    #[error(
        "Runtime {0} needs a zip archive holding an executable named bootstrap, not a raw .wasm"
    )]
    NotAZip(String),
    /// A `provided.*` package without its entry point.
    #[error(
        "The zip file holds no file named bootstrap at its root; runtime provided.* executes it"
    )]
    NoBootstrap,
    /// Writing the unpacked package failed (the platform's fault).
    #[error("unpacking the package into {0}: {1}")]
    Unpack(String, String),
    /// The `Handler` names a file the archive does not hold.
    #[error("Handler {0:?} names a file the zip file does not hold")]
    HandlerMissing(String),
}

/// Returns the WebAssembly binary a `wasm` function runs: the package itself
/// when it is raw wasm, else the archive entry `handler` names (or the only
/// `.wasm` entry when `handler` is unset).
pub fn wasm_code(package: &[u8], handler: Option<&str>) -> Result<Vec<u8>, PackageError> {
    if package.starts_with(WASM_MAGIC) {
        return Ok(package.to_vec());
    }
    if !(package.starts_with(ZIP_MAGIC) || package.starts_with(ZIP_EMPTY_MAGIC)) {
        return Err(PackageError::Unrecognised);
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(package))
        .map_err(|e| PackageError::Corrupt(e.to_string()))?;
    let names = checked_names(&mut archive)?;
    let wanted = match handler.filter(|h| !h.is_empty()) {
        Some(h) => names
            .iter()
            .position(|n| n == h || n.trim_start_matches("./") == h)
            .ok_or_else(|| PackageError::HandlerMissing(h.to_string()))?,
        None => {
            let wasm: Vec<usize> = (0..names.len())
                .filter(|&i| names[i].ends_with(".wasm"))
                .collect();
            match wasm.as_slice() {
                [] => return Err(PackageError::NoWasm),
                [one] => *one,
                many => {
                    let list: Vec<&str> = many.iter().map(|&i| names[i].as_str()).collect();
                    return Err(PackageError::AmbiguousWasm(list.join(", ")));
                }
            }
        }
    };
    // Inflate every entry, not only the one wanted: headers may lie about
    // sizes, and only inflating (with its CRC check) shows what an archive
    // really holds. The budget is shared, so the whole costs at most
    // UNZIPPED_SIZE_MAX_BYTES of work.
    let mut budget = UNZIPPED_SIZE_MAX_BYTES;
    let mut code = Vec::new();
    for index in 0..names.len() {
        let keep = (index == wanted).then_some(&mut code);
        budget -= inflate_entry(&mut archive, index, budget, keep)?;
    }
    Ok(code)
}

/// Unpacks a process runtime's package into `dir` (which must not exist
/// yet): every entry path checked, at most [`UNZIPPED_SIZE_MAX_BYTES`]
/// inflated, files world-readable and, where the archive marks them
/// executable, world-executable — the sandboxed function runs as an
/// unprivileged user. For `provided.*` (`needs_bootstrap`) the package must
/// hold `bootstrap` at its root.
pub fn unpack_to(
    package: &[u8],
    runtime: &str,
    needs_bootstrap: bool,
    dir: &std::path::Path,
) -> Result<(), PackageError> {
    use std::os::unix::fs::PermissionsExt;
    if package.starts_with(WASM_MAGIC) {
        return Err(PackageError::NotAZip(runtime.to_string()));
    }
    if !(package.starts_with(ZIP_MAGIC) || package.starts_with(ZIP_EMPTY_MAGIC)) {
        return Err(PackageError::Unrecognised);
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(package))
        .map_err(|e| PackageError::Corrupt(e.to_string()))?;
    let names = checked_names(&mut archive)?;
    if needs_bootstrap && !names.iter().any(|n| n == "bootstrap" || n == "./bootstrap") {
        return Err(PackageError::NoBootstrap);
    }
    let unpack = |e: std::io::Error| PackageError::Unpack(dir.display().to_string(), e.to_string());
    let mode = |path: &std::path::Path, bits: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(bits))
    };
    std::fs::create_dir_all(dir).map_err(unpack)?;
    mode(dir, 0o755).map_err(unpack)?;
    let mut budget = UNZIPPED_SIZE_MAX_BYTES;
    for (index, name) in names.iter().enumerate() {
        let relative = std::path::Path::new(name.trim_start_matches("./"));
        let target = dir.join(relative);
        if name.ends_with('/') {
            std::fs::create_dir_all(&target).map_err(unpack)?;
            mode(&target, 0o755).map_err(unpack)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(unpack)?;
            let mut up = parent;
            while up.starts_with(dir) && up != dir {
                mode(up, 0o755).map_err(unpack)?;
                up = up.parent().unwrap_or(dir);
            }
        }
        let executable = archive
            .by_index_raw(index)
            .map_err(|e| PackageError::Corrupt(e.to_string()))?
            .unix_mode()
            .is_some_and(|m| m & 0o111 != 0)
            || relative == std::path::Path::new("bootstrap");
        let mut bytes = Vec::new();
        budget -= inflate_entry(&mut archive, index, budget, Some(&mut bytes))?;
        std::fs::write(&target, &bytes).map_err(unpack)?;
        mode(&target, if executable { 0o755 } else { 0o644 }).map_err(unpack)?;
    }
    Ok(())
}

/// Checks every entry's path and the declared total size; returns the names.
fn checked_names(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
) -> Result<Vec<String>, PackageError> {
    let mut names = Vec::with_capacity(archive.len());
    let mut declared: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| PackageError::Corrupt(e.to_string()))?;
        let name = entry
            .name()
            .map_err(|e| PackageError::Corrupt(e.to_string()))?
            .to_string();
        let traversal = name.starts_with('/')
            || name.starts_with('\\')
            || name.split(['/', '\\']).any(|part| part == "..")
            || entry.enclosed_name().is_none();
        if traversal {
            return Err(PackageError::UnsafePath(name));
        }
        declared = declared.saturating_add(entry.size());
        if declared > UNZIPPED_SIZE_MAX_BYTES {
            return Err(PackageError::TooLarge);
        }
        names.push(name);
    }
    Ok(names)
}

/// Inflates one entry into `keep` (or nowhere), refusing to produce more than
/// `budget` bytes even if its header lies about its size; returns the size.
fn inflate_entry(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    index: usize,
    budget: u64,
    keep: Option<&mut Vec<u8>>,
) -> Result<u64, PackageError> {
    let entry = archive
        .by_index(index)
        .map_err(|e| PackageError::Corrupt(e.to_string()))?;
    let mut limited = entry.take(budget + 1);
    let inflated = match keep {
        Some(out) => limited.read_to_end(out).map(|n| n as u64),
        None => std::io::copy(&mut limited, &mut std::io::sink()),
    }
    .map_err(|e| PackageError::Corrupt(e.to_string()))?;
    if inflated > budget {
        return Err(PackageError::TooLarge);
    }
    Ok(inflated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap();
        buf.into_inner()
    }

    const WASM: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn raw_wasm_and_single_entry_zip() {
        assert_eq!(wasm_code(WASM, None).unwrap(), WASM);
        let zip = zip_of(&[("fn.wasm", WASM), ("README", b"hi")]);
        assert_eq!(wasm_code(&zip, None).unwrap(), WASM);
        assert_eq!(wasm_code(&zip, Some("fn.wasm")).unwrap(), WASM);
        assert_eq!(
            wasm_code(&zip, Some("other.wasm")),
            Err(PackageError::HandlerMissing("other.wasm".into()))
        );
    }

    #[test]
    fn several_wasm_need_a_handler() {
        let zip = zip_of(&[("a.wasm", WASM), ("b.wasm", WASM)]);
        assert!(matches!(
            wasm_code(&zip, None),
            Err(PackageError::AmbiguousWasm(_))
        ));
        assert_eq!(wasm_code(&zip, Some("b.wasm")).unwrap(), WASM);
    }

    #[test]
    fn hostile_archives_are_refused() {
        assert_eq!(wasm_code(b"hello", None), Err(PackageError::Unrecognised));
        let traversal = zip_of(&[("../evil.wasm", WASM)]);
        assert!(matches!(
            wasm_code(&traversal, None),
            Err(PackageError::UnsafePath(_))
        ));
        let absolute = zip_of(&[("/etc/evil.wasm", WASM)]);
        assert!(matches!(
            wasm_code(&absolute, None),
            Err(PackageError::UnsafePath(_))
        ));
        let truncated = &zip_of(&[("a.wasm", WASM)])[..20];
        assert!(matches!(
            wasm_code(truncated, None),
            Err(PackageError::Corrupt(_))
        ));
    }

    #[test]
    fn entries_not_run_still_count_toward_the_limit() {
        let zeros = vec![0u8; 64 << 20];
        let entries: Vec<(String, &[u8])> = (0..5).map(|i| (format!("z{i}"), &zeros[..])).collect();
        let mut refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, b)| (n.as_str(), *b)).collect();
        refs.push(("fn.wasm", WASM));
        assert_eq!(
            wasm_code(&zip_of(&refs), Some("fn.wasm")),
            Err(PackageError::TooLarge)
        );
    }

    #[test]
    fn provided_packages_unpack_with_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let zip = zip_of(&[("bootstrap", b"#!/bin/sh\n"), ("lib/data.txt", b"x")]);
        let target = dir.path().join("code");
        unpack_to(&zip, "provided.al2023", true, &target).unwrap();
        let mode = |p: &str| {
            std::fs::metadata(target.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("bootstrap"), 0o755);
        assert_eq!(mode("lib/data.txt"), 0o644);
        assert_eq!(mode("lib"), 0o755);
        let without = zip_of(&[("main", b"x")]);
        assert_eq!(
            unpack_to(&without, "provided", true, &dir.path().join("b")),
            Err(PackageError::NoBootstrap)
        );
        // A python3.x package has no bootstrap: its handler names a module.
        unpack_to(&without, "python3.11", false, &dir.path().join("py")).unwrap();
        assert!(dir.path().join("py/main").is_file());
        assert!(matches!(
            unpack_to(WASM, "provided", true, &dir.path().join("c")),
            Err(PackageError::NotAZip(_))
        ));
        let evil = zip_of(&[("bootstrap", b"x"), ("../evil", b"x")]);
        assert!(matches!(
            unpack_to(&evil, "provided", true, &dir.path().join("d")),
            Err(PackageError::UnsafePath(_))
        ));
    }

    #[test]
    fn zip_bomb_is_refused() {
        let zeros = vec![0u8; 64 << 20];
        let entries: Vec<(String, &[u8])> = (0..5).map(|i| (format!("z{i}"), &zeros[..])).collect();
        let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, b)| (n.as_str(), *b)).collect();
        let bomb = zip_of(&refs);
        assert!(
            bomb.len() < 2 << 20,
            "the bomb should be small: {}",
            bomb.len()
        );
        assert_eq!(wasm_code(&bomb, Some("z0")), Err(PackageError::TooLarge));
    }
}
