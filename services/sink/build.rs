//! Embeds the SQL migrations under `sql/migrations/` in order, so `tally migrate` carries them
//! and a new migration is a new file, not code.
//!
//! Paths are relative to this package and the SQL is embedded as literals (not `include_str!`
//! of an absolute path), so checkouts that share one target directory (CI clones) never build
//! one checkout's migrations into another.
use std::{env, fs, path::Path};

const FOLDER: &str = "../../sql/migrations";

fn main() {
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed={FOLDER}");
    let mut files: Vec<_> = fs::read_dir(Path::new(&manifest).join(FOLDER))
        .expect("sql/migrations is readable")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("sql"))
        .collect();
    files.sort();
    let mut out = String::from("/// (file name, SQL) of every migration, in order.\npub(crate) static MIGRATIONS: &[(&str, &str)] = &[\n");
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        println!("cargo:rerun-if-changed={FOLDER}/{name}");
        let sql = fs::read_to_string(&path).expect("migration is readable");
        out.push_str(&format!("    ({name:?}, {sql:?}),\n"));
    }
    out.push_str("];\n");
    fs::write(
        Path::new(&env::var("OUT_DIR").unwrap()).join("migrations.rs"),
        out,
    )
    .expect("OUT_DIR is writable");
}
