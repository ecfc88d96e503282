//! The top-level modules of the broker and rules crates depend on each other one way: no
//! import cycle. A module's dependencies are the `crate::` paths in its non-test code
//! (comments and `#[cfg(test)]` items left out), including items the crate root
//! re-exports (`crate::Fleet` is a use of the module `fleet`). docs/architecture.md draws
//! the graph this test keeps acyclic.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The source without comments and string contents (a `"crate::x"` in a message is not a
/// dependency).
fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push('"');
            }
            // A char literal such as '"' must not open a string.
            '\'' => {
                out.push('\'');
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with("\\") || rest.chars().nth(1) == Some('\'') {
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                    }
                    out.push('\'');
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Removes every `#[cfg(test)]` item: `mod x;` (its name is returned, to skip its file) or
/// an item with a `{ ... }` body.
fn drop_test_items(text: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut skipped = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let semi = item.find(';');
        let brace = item.find('{');
        match (semi, brace) {
            (Some(s), b) if b.is_none_or(|b| s < b) => {
                let decl = item[..s].trim();
                if let Some(name) = decl.strip_prefix("mod ") {
                    skipped.push(name.trim().to_owned());
                }
                rest = &item[s + 1..];
            }
            (_, Some(b)) => {
                let mut depth = 0usize;
                let mut end = item.len();
                for (i, c) in item[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &item[end..];
            }
            _ => rest = "",
        }
    }
    out.push_str(rest);
    (out, skipped)
}

/// The `.rs` files of a module directory, without the test-only ones.
fn module_files(dir: &Path, files: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    let mut skipped = Vec::new();
    let mut texts = Vec::new();
    for path in &entries {
        if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(path).expect("readable source");
            let (code, skip) = drop_test_items(&strip(&text));
            skipped.extend(skip);
            texts.push((path.clone(), code));
        }
    }
    for (path, code) in texts {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if !skipped.iter().any(|s| s == stem) {
            files.push((path, code));
        }
    }
    for path in entries {
        let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("");
        if path.is_dir() && !skipped.iter().any(|s| s == name) {
            module_files(&path, files);
        }
    }
}

/// Identifiers after `prefix` (e.g. `crate::`), and the first segments inside
/// `prefix{...}` groups.
fn paths_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `foo::crate::` or `super::super::`: another path
        }
        let after = &code[at + prefix.len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 && c == ',' {
                    found.insert(ident(item.trim()));
                    item.clear();
                } else if depth == 1 {
                    item.push(c);
                }
            }
            found.insert(ident(item.trim()));
        } else {
            found.insert(ident(after));
        }
    }
    found
}

/// Item name -> module, from the crate root's `pub use module::{Item, ...};` lines.
fn reexports(root: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let code = strip(root);
    for (at, _) in code.match_indices("pub use ") {
        let stmt = &code[at + "pub use ".len()..];
        let stmt = &stmt[..stmt.find(';').unwrap_or(stmt.len())];
        let Some((module, items)) = stmt.split_once("::") else {
            continue;
        };
        let items = items.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.rsplit("::").next().unwrap_or("").trim();
            let name = name.rsplit(" as ").next().unwrap_or(name).trim();
            if !name.is_empty() {
                map.insert(name.to_owned(), module.trim().to_owned());
            }
        }
    }
    map
}

/// The graph of the modules directly in `dir`: the crate's top-level modules (`prefix`
/// `crate::`, root `lib.rs`/`main.rs`) or a module folder's children (prefix
/// `crate::NAME::`, root `mod.rs`, where `super::` also names a sibling).
fn graph_in(dir: &Path, roots: &[&str], prefix: &str) -> Graph {
    let root = roots
        .iter()
        .filter_map(|f| fs::read_to_string(dir.join(f)).ok())
        .collect::<Vec<_>>()
        .join("\n");
    let (root_code, test_only) = drop_test_items(&strip(&root));
    let reexported = reexports(&root_code);
    let mut modules: BTreeMap<String, Vec<(PathBuf, String)>> = BTreeMap::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .expect("source dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        let root_file = roots
            .iter()
            .any(|r| r.strip_suffix(".rs") == Some(name.as_str()));
        if root_file || name == "bin" || test_only.contains(&name) {
            continue;
        }
        let mut files = Vec::new();
        if path.is_dir() {
            module_files(&path, &mut files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).expect("readable source");
            let (code, _) = drop_test_items(&strip(&text));
            files.push((path.clone(), code));
        }
        modules.entry(name).or_default().extend(files);
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut g = Graph::new();
    for (module, files) in &modules {
        let deps = g.entry(module.clone()).or_default();
        for (path, code) in files {
            let mut used = paths_after(code, prefix);
            // In a file directly in `dir`, `super::x` is a sibling.
            if path.parent() == Some(dir) {
                used.extend(paths_after(code, "super::"));
            }
            for name in used {
                let target = if names.contains(&name) {
                    Some(name)
                } else {
                    reexported.get(&name).cloned()
                };
                if let Some(target) = target.filter(|t| t != module && names.contains(t)) {
                    deps.insert(target);
                }
            }
        }
    }
    g
}

/// The graph of the top-level modules of the crate whose sources are in `src`.
fn graph(src: &Path) -> Graph {
    graph_in(src, &["lib.rs", "main.rs"], "crate::")
}

/// The graph of the children of each module folder in `src`, by folder name.
fn folder_graphs(src: &Path) -> BTreeMap<String, Graph> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(src).expect("source dir").flatten() {
        let path = entry.path();
        if let (true, Some(name)) = (path.is_dir(), path.file_name().and_then(|n| n.to_str())) {
            let prefix = format!("crate::{name}::");
            out.insert(name.to_owned(), graph_in(&path, &["mod.rs"], &prefix));
        }
    }
    out
}

/// Every cycle's modules (strongly connected components of more than one module).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    // Kosaraju: finish order on the graph, then components on the reversed graph.
    fn visit(g: &Graph, v: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(v.to_owned()) {
            return;
        }
        for w in g.get(v).into_iter().flatten() {
            visit(g, w, seen, order);
        }
        order.push(v.to_owned());
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for v in g.keys() {
        visit(g, v, &mut seen, &mut order);
    }
    let mut reversed = Graph::new();
    for (v, ws) in g {
        reversed.entry(v.clone()).or_default();
        for w in ws {
            reversed.entry(w.clone()).or_default().insert(v.clone());
        }
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for v in order.iter().rev() {
        let mut component = Vec::new();
        visit(&reversed, v, &mut assigned, &mut component);
        if component.len() > 1 {
            component.sort();
            out.push(component);
        }
    }
    out
}

fn describe(g: &Graph, cycles: &[Vec<String>]) -> String {
    cycles
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|a| {
                    g[a].iter()
                        .filter(|b| c.contains(b))
                        .map(move |b| format!("{a} -> {b}"))
                })
                .collect();
            format!("cycle among {}: {}", c.join(", "), edges.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

#[test]
fn the_broker_crates_top_level_modules_depend_on_each_other_one_way() {
    let g = graph(&crate_src("src"));
    assert!(g.len() >= 10, "modules found: {:?}", g.keys());
    // Known edges: the graph is read, not empty.
    assert!(g["engine"].contains("store"), "{g:?}");
    assert!(
        g["mqtt"].contains("store") || g["mqtt"].contains("metrics"),
        "{g:?}"
    );
    let found = cycles(&g);
    assert!(found.is_empty(), "{}", describe(&g, &found));
}

#[test]
fn inside_each_module_folder_the_files_depend_on_each_other_one_way() {
    for src in ["src", "../rules/src", "../contract/src"] {
        let graphs = folder_graphs(&crate_src(src));
        assert!(
            src != "src" || graphs.len() >= 6,
            "folders: {:?}",
            graphs.keys()
        );
        for (folder, g) in &graphs {
            let found = cycles(g);
            assert!(
                found.is_empty(),
                "in {src}/{folder}/: {}",
                describe(g, &found)
            );
        }
    }
}

#[test]
fn the_metrics_and_clock_modules_are_leaves() {
    let g = graph(&crate_src("src"));
    for leaf in ["metrics", "clock"] {
        assert!(g[leaf].is_empty(), "{leaf} depends on {:?}", g[leaf]);
    }
    // Only the composition root and the command line know the configuration file.
    for (module, deps) in &g {
        if !["cli", "config"].contains(&module.as_str()) {
            assert!(
                !deps.contains("config"),
                "{module} reads the config: {deps:?}"
            );
        }
    }
}

#[test]
fn the_contract_crates_modules_depend_on_each_other_one_way() {
    let g = graph(&crate_src("../contract/src"));
    assert!(g["layout"].contains("topics"), "{g:?}");
    let found = cycles(&g);
    assert!(found.is_empty(), "{}", describe(&g, &found));
}

#[test]
fn the_rules_crates_top_level_modules_depend_on_each_other_one_way() {
    let g = graph(&crate_src("../rules/src"));
    assert!(g.len() >= 10, "modules found: {:?}", g.keys());
    assert!(g["fleet"].contains("vehicle"), "{g:?}");
    let found = cycles(&g);
    assert!(found.is_empty(), "{}", describe(&g, &found));
}

#[test]
fn a_cycle_is_found_through_paths_groups_and_reexports_but_not_in_tests_or_comments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path();
    let write = |name: &str, text: &str| fs::write(src.join(name), text).expect("write");
    write("lib.rs", "mod a;\nmod b;\nmod c;\npub use c::Thing;\n");
    write("a.rs", "use crate::{b::X, other};\n");
    write(
        "b.rs",
        "// crate::c in a comment\nfn f() { let _ = \"crate::c\"; }\nuse crate::Thing;\n",
    );
    write(
        "c.rs",
        "pub struct Thing;\n#[cfg(test)]\nmod tests { use crate::a; }\n",
    );
    let g = graph(src);
    assert_eq!(g["a"], BTreeSet::from(["b".to_owned()]));
    assert_eq!(g["b"], BTreeSet::from(["c".to_owned()]));
    assert!(g["c"].is_empty());
    assert!(cycles(&g).is_empty());
    write("c.rs", "pub struct Thing;\nuse crate::a::Y;\n");
    let g = graph(src);
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    // In a folder, siblings are named through `super::` or the folder's path.
    fs::create_dir(src.join("d")).expect("mkdir");
    fs::write(src.join("d/mod.rs"), "mod x;\nmod y;\npub use y::Y;\n").expect("write");
    fs::write(src.join("d/x.rs"), "use super::Y;\n").expect("write");
    fs::write(src.join("d/y.rs"), "use crate::d::x;\n").expect("write");
    assert_eq!(cycles(&folder_graphs(src)["d"]), vec![vec!["x", "y"]]);
}
