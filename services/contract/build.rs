//! Embeds every Avro schema under `schemas/` (current) and `schemas/history/` (earlier
//! versions) into the crate, so the contract lives in one place and adding a historical
//! version is adding a file, not code.
//!
//! Paths are relative to this package and the texts are embedded as literals (not
//! `include_str!` of an absolute path), so checkouts that share one target directory (CI
//! clones) never build one checkout's schemas into another.
use std::{env, fs, path::Path};

const CURRENT: &str = "../../schemas";
const HISTORY: &str = "../../schemas/history";

fn main() {
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed={CURRENT}");
    println!("cargo:rerun-if-changed={HISTORY}");
    let mut entries = Vec::new();
    collect(&manifest, CURRENT, false, &mut entries);
    collect(&manifest, HISTORY, true, &mut entries);
    entries.sort();
    let mut out = String::from(
        "/// (file name, is a historical version, JSON text) of every embedded schema.\n\
         pub(crate) static SCHEMA_FILES: &[(&str, bool, &str)] = &[\n",
    );
    for (name, historical, text) in entries {
        out.push_str(&format!("    ({name:?}, {historical}, {text:?}),\n"));
    }
    out.push_str("];\n");
    let dest = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("schema_files.rs");
    fs::write(dest, out).expect("OUT_DIR is writable");
}

fn collect(
    manifest: &str,
    folder: &str,
    historical: bool,
    entries: &mut Vec<(String, bool, String)>,
) {
    let Ok(read) = fs::read_dir(Path::new(manifest).join(folder)) else {
        return;
    };
    for entry in read {
        let path = entry.expect("schema directory is readable").path();
        if path.extension().and_then(|e| e.to_str()) != Some("avsc") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        println!("cargo:rerun-if-changed={folder}/{name}");
        let text = fs::read_to_string(&path).expect("schema is readable");
        entries.push((name, historical, text));
    }
}
