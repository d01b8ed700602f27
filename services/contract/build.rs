//! Embeds every Avro schema under `schemas/` (current) and `schemas/history/` (earlier
//! versions) into the crate, so the contract lives in one place and adding a historical
//! version is adding a file, not code.
use std::{env, fs, path::Path};

fn main() {
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let schemas = Path::new(&manifest).join("../../schemas");
    let schemas = schemas
        .canonicalize()
        .expect("schemas/ exists at the workspace root");
    println!("cargo:rerun-if-changed={}", schemas.display());
    println!(
        "cargo:rerun-if-changed={}",
        schemas.join("history").display()
    );

    let mut entries = Vec::new();
    collect(&schemas, false, &mut entries);
    collect(&schemas.join("history"), true, &mut entries);
    entries.sort();

    let mut out = String::from(
        "/// (file name, is a historical version, JSON text) of every embedded schema.\n\
         pub(crate) static SCHEMA_FILES: &[(&str, bool, &str)] = &[\n",
    );
    for (name, historical, path) in entries {
        out.push_str(&format!(
            "    ({name:?}, {historical}, include_str!({path:?})),\n"
        ));
    }
    out.push_str("];\n");
    let dest = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("schema_files.rs");
    fs::write(dest, out).expect("OUT_DIR is writable");
}

fn collect(dir: &Path, historical: bool, entries: &mut Vec<(String, bool, String)>) {
    let Ok(read) = fs::read_dir(dir) else { return };
    for entry in read {
        let path = entry.expect("schema directory is readable").path();
        if path.extension().and_then(|e| e.to_str()) != Some("avsc") {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        entries.push((name, historical, path.display().to_string()));
    }
}
