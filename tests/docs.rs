//! The docs keep up with the code: ARCHITECTURE.md's shape names every directory and file of
//! `src/`, and names nothing that is gone.

use std::collections::BTreeSet;
use std::path::Path;

fn src_paths(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if path.is_dir() {
            out.insert(format!("{rel}/"));
            src_paths(&path, root, out);
        } else if rel.ends_with(".rs") {
            out.insert(rel);
        }
    }
}

#[test]
fn architecture_names_every_source_directory_and_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut actual = BTreeSet::new();
    src_paths(&root.join("src"), root, &mut actual);
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let listed: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("src/"))
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = actual.difference(&listed).collect();
    let stale: Vec<&String> = listed.difference(&actual).collect();
    assert!(
        missing.is_empty(),
        "not in ARCHITECTURE.md's shape: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "in ARCHITECTURE.md but not in src/: {stale:?}"
    );
}
