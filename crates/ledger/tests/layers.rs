//! The ledger's modules depend on one another in one direction: each file may use only the
//! modules below it in [`LAYERS`]. Read from the source, so a new `use crate::…` that points up
//! (a cycle in the making) fails here with the offending pair.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top. A module may use any module in an earlier entry, none in its own or a later
/// one (modules in one entry are independent of each other).
const LAYERS: &[&[&str]] = &[
    &["error", "state", "draw", "limits", "event", "job"],
    &["arbitration"],
    &["list", "module"],
    &["bank"],
    &["staking"],
    &["models"],
    &["compute"],
    &["verify"],
    // `sessions` (channels between a client and a provider) turns disputed requests into
    // compute jobs that verify audits and disputes.
    &["sessions"],
    // Datasets, contribution pools (validated by compute jobs) and labelling tasks.
    &["data"],
    // Blob storage deals: bank and staking only.
    &["storage"],
    // Scoped session keys (the executor reads them for a grantee's transactions) and agents
    // (records, paid calls and reputation, on bank alone).
    &["grants", "agents"],
    &["tx"],
    &["block"],
    &["genesis"],
    &["executor"],
];

/// The crate's own modules each source file refers to, outside comments and unit tests.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(src)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let module = relative
                .trim_end_matches(".rs")
                .split('/')
                .next()
                .unwrap()
                .to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let uses = graph.entry(module.clone()).or_default();
            for line in code.lines() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                for (at, _) in line.match_indices("crate::") {
                    let name: String = line[at + "crate::".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        uses.insert(name);
                    }
                }
                // `use crate::{a, b}` names several at once.
                if let Some(rest) = line.strip_prefix("use crate::{") {
                    for name in rest.split(['}', ',']) {
                        let name = name.trim().split("::").next().unwrap().trim();
                        if !name.is_empty() && name != module {
                            uses.insert(name.to_string());
                        }
                    }
                }
            }
        }
    }
    graph.remove("lib");
    graph
}

#[test]
fn ledger_modules_depend_downward_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = imports(&src);
    let layer_of = |name: &str| LAYERS.iter().position(|layer| layer.contains(&name));
    let mut upward = Vec::new();
    for (module, uses) in &graph {
        let own = layer_of(module)
            .unwrap_or_else(|| panic!("module `{module}` is in no layer of this test"));
        for used in uses {
            let theirs =
                layer_of(used).unwrap_or_else(|| panic!("`{module}` uses unknown `{used}`"));
            if theirs >= own {
                upward.push(format!("{module} -> {used}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up or sideways: {upward:?}"
    );
    // The pairs the ledger's shape depends on, named so a failure reads plainly.
    assert!(
        !graph["compute"].contains("verify"),
        "compute sits below verify"
    );
    for module in ["bank", "staking", "models", "compute", "verify"] {
        for above in ["genesis", "executor", "tx", "block"] {
            assert!(!graph[module].contains(above), "{module} uses {above}");
        }
    }
}
