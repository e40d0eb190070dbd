//! Holds the floors of `strata-server` (ARCHITECTURE.md, "strata-server floors"): a module may
//! use modules on its own floor or below, never above, and no modules use each other in a
//! circle. The compiler cannot hold this inside one crate, so this test reads the sources.
//! A new module must be given a floor here. Tests (a file's `mod tests {` onwards, and
//! `tests.rs` / `*_tests.rs` files) are outside the floors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `src/` and its floor, from the bottom (0) up.
const FLOORS: &[(&str, u8)] = &[
    // Leaves: depend on nothing in the crate.
    ("task", 0),
    ("session", 0),
    ("audit_log", 0),
    ("sasl", 0),
    ("oauth", 0),
    ("config", 0),
    ("metadata_source", 0),
    ("fetch_session", 0),
    ("controller_rpc", 0),
    ("client_quota_manager", 0),
    ("tenant_metrics", 0),
    // The parts services share.
    ("metrics", 1),
    ("broker_client", 1),
    ("replica_manager", 1),
    ("metadata_changes", 1),
    ("tls", 1),
    // Services: each takes the parts it uses.
    ("internal_topics", 2),
    ("group_service", 2),
    ("txn_service", 2),
    ("remote_log", 2),
    ("replica_fetcher", 2),
    ("replication", 2),
    ("log_cleaner", 2),
    ("broker_lifecycle", 2),
    ("controller_service", 2),
    // The broker's parts, as handlers see them.
    ("broker", 3),
    // One handler per Kafka API.
    ("handlers", 4),
    // Connections and the admin HTTP server.
    ("connection", 5),
    ("http", 5),
    // Start-up, run and shutdown.
    ("lifecycle", 6),
    ("lib", 6),
    // Tests only: builds a node's parts as start-up does.
    ("test_fixture", 6),
];

/// The modules each top-level module names as `crate::x`, outside comments.
fn dependencies(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut deps = BTreeMap::new();
    let mut files = vec![src.to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("readable src directory") {
                files.push(entry.expect("readable directory entry").path());
            }
            continue;
        }
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // Tests stand outside the floors: they may build a node as start-up does.
        if !file_name.ends_with(".rs") || file_name.ends_with("tests.rs") {
            continue;
        }
        let relative = path.strip_prefix(src).expect("under src");
        let first = relative.components().next().expect("a file name");
        let module = first
            .as_os_str()
            .to_str()
            .expect("UTF-8 file name")
            .trim_end_matches(".rs")
            .to_string();
        let text = std::fs::read_to_string(&path).expect("readable source");
        let used: &mut BTreeSet<String> = deps.entry(module.clone()).or_default();
        let code = text
            .lines()
            .take_while(|l| l.trim() != "mod tests {")
            .filter(|l| !l.trim_start().starts_with("//"));
        for line in code {
            for (at, _) in line.match_indices("crate::") {
                let name: String = line[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    used.insert(name);
                }
            }
        }
    }
    deps
}

#[test]
fn arrows_point_down_and_no_module_is_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let floors: BTreeMap<&str, u8> = FLOORS.iter().copied().collect();
    let deps = dependencies(&src);
    let mut wrong = Vec::new();
    for (module, used) in &deps {
        let Some(&floor) = floors.get(module.as_str()) else {
            wrong.push(format!("{module} has no floor in tests/floors.rs"));
            continue;
        };
        for dep in used {
            match floors.get(dep.as_str()) {
                Some(&below) if below <= floor => {}
                Some(&above) => wrong.push(format!(
                    "{module} (floor {floor}) uses {dep} (floor {above}), above it"
                )),
                None => wrong.push(format!("{module} uses {dep}, which has no floor")),
            }
        }
    }
    assert!(wrong.is_empty(), "floors broken:\n{}", wrong.join("\n"));

    // Within a floor arrows may go sideways, but never in a circle.
    fn visit<'a>(
        module: &'a str,
        deps: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(start) = path.iter().position(|m| *m == module) {
            panic!("import circle: {} -> {module}", path[start..].join(" -> "));
        }
        if !done.insert(module) {
            return;
        }
        path.push(module);
        for dep in deps.get(module).into_iter().flatten() {
            visit(dep, deps, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in deps.keys() {
        visit(module, &deps, &mut Vec::new(), &mut done);
    }
}
