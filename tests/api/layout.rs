//! The layers of DESIGN.md ("Structure"), read from the sources: the domain
//! imports nothing of ours, storage only the domain, no two files of `src/`
//! import each other in a circle, and only the unit of work writes users,
//! audit rows, counters and the outbox. And the Clerk emulator's files: each
//! says what it emulates and is named in the README's Layout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every file of `src/` as its module path (`db::rows`; `""` for the crate
/// root), with its source (unit tests left out).
fn sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    collect(&root, &root, &mut files);
    files
}

/// Every file of `src/` as its module path, with the modules of ours it
/// names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let files = sources();
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(module, source)| {
            let named = paths(source)
                .into_iter()
                .filter_map(|path| resolve(&modules, module, &path))
                // The crate root only declares the modules (and hosts the
                // exported macros, such as `with_conn!`).
                .filter(|target| target != module && !target.is_empty())
                .collect();
            (module.clone(), named)
        })
        .collect()
}

fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let relative = path.strip_prefix(root).expect("under src/");
            let mut parts: Vec<String> = relative
                .with_extension("")
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let source = std::fs::read_to_string(&path).expect("a source file");
            // Unit tests may reach anywhere.
            let source = source
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default()
                .to_owned();
            files.insert(parts.join("::"), source);
        }
    }
}

/// The `crate::`, `super::` and `self::` paths of `source`, braces expanded
/// one level (`super::{a, b::C}` gives `super::a` and `super::b`).
fn paths(source: &str) -> Vec<Vec<String>> {
    let in_path = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    let mut found = Vec::new();
    for (at, _) in source.match_indices("::") {
        // The start of the path this `::` belongs to.
        let start = source[..at]
            .rfind(|c: char| !in_path(c))
            .map_or(0, |i| i + 1);
        if source[..at].ends_with(':') || source[start..at].contains("::") {
            continue; // not the path's first `::`
        }
        let head = &source[start..at];
        if !matches!(head, "crate" | "super" | "self") {
            continue;
        }
        let rest = &source[start..];
        let end = rest.find(|c: char| !in_path(c)).unwrap_or(rest.len());
        let path = &rest[..end];
        let parts: Vec<String> = path
            .trim_end_matches(':')
            .split("::")
            .map(str::to_owned)
            .collect();
        if path.ends_with("::") && rest[end..].starts_with('{') {
            let inner = &rest[end + 1..];
            let close = inner.find('}').unwrap_or(inner.len());
            for item in inner[..close].split(',') {
                let item = item.trim().split("::").next().unwrap_or_default();
                let item = item.split_whitespace().next().unwrap_or_default();
                if !item.is_empty() && item != "self" {
                    found.push(parts.iter().cloned().chain([item.to_owned()]).collect());
                }
            }
        } else {
            found.push(parts);
        }
    }
    found
}

/// The file a path names: the longest prefix that is a module of ours.
fn resolve(modules: &BTreeSet<String>, from: &str, path: &[String]) -> Option<String> {
    let mut base: Vec<&str> = if from.is_empty() {
        Vec::new()
    } else {
        from.split("::").collect()
    };
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        _ => {
            while rest.first().is_some_and(|part| part == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
    }
    (0..=rest.len())
        .rev()
        .map(|n| {
            base.iter()
                .copied()
                .chain(rest[..n].iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join("::")
        })
        .find(|module| modules.contains(module))
}

#[test]
fn no_two_files_of_src_import_each_other_in_a_circle() {
    let graph = imports();
    // Depth-first search with colours: a grey node met again closes a cycle.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, bool>,
        stack: &mut Vec<&'a str>,
    ) {
        state.insert(node, false);
        stack.push(node);
        for next in &graph[node] {
            match state.get(next.as_str()) {
                Some(false) => {
                    let start = stack.iter().position(|n| n == next).unwrap_or(0);
                    panic!("import cycle: {} -> {next}", stack[start..].join(" -> "));
                }
                Some(true) => {}
                None => visit(next, graph, state, stack),
            }
        }
        stack.pop();
        state.insert(node, true);
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node.as_str()) {
            visit(node, &graph, &mut state, &mut Vec::new());
        }
    }
}

#[test]
fn the_lower_layers_import_only_what_is_below_them() {
    let graph = imports();
    let layer = |module: &str| module.split("::").next().unwrap_or_default().to_owned();
    for (module, named) in &graph {
        let allowed: &[&str] = match layer(module).as_str() {
            "domain" | "secret" => &[],
            "db" => &["domain"],
            "clerk" => &["domain", "secret"],
            "webhooks" => &["domain", "secret", "clerk"],
            // The use-cases: storage and what Clerk sends, never an edge.
            "app" => &["domain", "secret", "db", "clerk", "webhooks"],
            _ => continue,
        };
        for target in named.iter().filter(|target| layer(target) != layer(module)) {
            assert!(
                allowed.contains(&layer(target).as_str()),
                "{module} imports {target}: only {allowed:?} are below it"
            );
        }
    }
}

/// Whether `source` names the storage method `name` as a call or a path,
/// whatever the spelling: `conn.name(`, `Outbox::name(conn, …)`, `<C as
/// Outbox>::name` or a line break that rustfmt put before the name. A
/// use-case's function of the same name (`push::name`) is not storage.
fn names_method(source: &str, name: &str) -> bool {
    let source: String = source.chars().filter(|c| !c.is_whitespace()).collect();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    source.match_indices(name).any(|(at, _)| {
        let before = &source[..at];
        let after = source[at + name.len()..].chars().next();
        if after.is_some_and(is_ident) || before.ends_with(is_ident) {
            return false;
        }
        match before.strip_suffix("::") {
            Some(path) => {
                let qualifier = &path[path.trim_end_matches(is_ident).len()..];
                !USE_CASES.contains(&qualifier)
            }
            None => before.ends_with('.'),
        }
    })
}

/// The use-case modules (`app::*`), whose functions may share a storage
/// method's name.
const USE_CASES: &[&str] = &[
    "audit",
    "backfill",
    "change_roles",
    "clerk_instance",
    "clerk_state",
    "drift_audit",
    "push",
    "unit_of_work",
    "webhook_event",
];

#[test]
fn the_use_cases_are_listed() {
    let listed: BTreeSet<&str> = USE_CASES.iter().copied().collect();
    let found: BTreeSet<String> = sources()
        .into_keys()
        .filter_map(|module| module.strip_prefix("app::").map(str::to_owned))
        .collect();
    assert_eq!(
        found.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        listed
    );
}

#[test]
fn a_write_is_seen_however_it_is_called() {
    for spelling in [
        "conn.enqueue_push(row)",
        "conn\n    .enqueue_push(row)",
        "Outbox::enqueue_push(conn, row)",
        "<C as Outbox>::enqueue_push(conn, row)",
        "let write = Outbox::enqueue_push;",
        "db::outbox::Outbox::enqueue_push(conn, row)",
    ] {
        assert!(names_method(spelling, "enqueue_push"), "{spelling}");
    }
    for other in [
        "conn.enqueue_pushes(row)",
        "fn enqueue_push(",
        "enqueue_push_later()",
        "push::enqueue_push(conn, row)",
    ] {
        assert!(!names_method(other, "enqueue_push"), "{other}");
    }
}

/// The storage calls that write users, audit rows, counters or the outbox
/// (`Store`'s transaction writes and `Outbox`), and the only modules that
/// may make them.
const WRITERS: &[(&str, &[&str])] = &[
    // Users, audit rows, counters, Svix messages and queued pushes, decided
    // by the race rule in one place.
    ("write_changes", &["app::unit_of_work"]),
    ("write_and_commit", &["app::unit_of_work"]),
    ("enqueue_push", &["app::unit_of_work"]),
    ("cancel_push", &["app::unit_of_work"]),
    ("delete_outbox_row", &["app::unit_of_work"]),
    ("mark_synced", &["app::unit_of_work"]),
    ("reschedule_push", &["app::unit_of_work"]),
    ("release_claim", &["app::unit_of_work"]),
    // The push's claims: taken, renewed, noted before a send, handed back.
    ("set_unrecorded_pushes", &["app::unit_of_work", "app::push"]),
    ("claim_due_pushes", &["app::push"]),
    ("renew_claims", &["app::push"]),
    ("note_before_sending", &["app::push"]),
    ("release_claims_of", &["app::push"]),
];

#[test]
fn only_the_unit_of_work_writes_users_audit_rows_counters_and_the_outbox() {
    let files = sources();
    for (write, allowed) in WRITERS {
        let callers: Vec<&String> = files
            .iter()
            .filter(|(module, source)| !module.starts_with("db") && names_method(source, write))
            .map(|(module, _)| module)
            .collect();
        for caller in &callers {
            assert!(
                allowed.contains(&caller.as_str()),
                "{caller} calls {write}: only {allowed:?} may"
            );
        }
        assert!(!callers.is_empty(), "nobody calls {write}: a stale entry");
    }
    // The queries any use-case may call write none of those tables: the
    // outbox's writes are `Outbox`'s, the rest go in a unit of work's
    // `WriteSet`. Read without whitespace, as rustfmt may break a call or
    // a statement anywhere.
    for module in ["db::queries", "db::queries::shared"] {
        let queries: String = files[module]
            .to_lowercase()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        for table in ["users", "role_changes", "role_counts", "clerk_sync"] {
            for write in [
                format!("insert_into({table}::"),
                format!("update({table}::"),
                format!("delete({table}::"),
                format!("insertinto{table}"),
                format!("update{table}set"),
                format!("deletefrom{table}"),
            ] {
                assert!(
                    !queries.contains(&write),
                    "{module} writes {table} ({write})"
                );
            }
        }
    }
    // Nor does anything above storage write tables of its own, in SQL or
    // with diesel's builders.
    for (module, source) in files.iter().filter(|(module, _)| !module.starts_with("db")) {
        let source = source.to_lowercase();
        for statement in [
            "insert into",
            "update users",
            "update clerk_sync",
            "update role_counts",
            "delete from",
            "diesel::update(",
            "diesel::insert_into(",
            "diesel::delete(",
        ] {
            assert!(
                !source.contains(statement),
                "{module} writes a table of its own ({statement})"
            );
        }
    }
}

#[test]
fn each_file_of_the_clerk_emulator_says_what_it_emulates_and_the_readme_names_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let layout = readme
        .split("\n## ")
        .find(|section| section.starts_with("Layout"))
        .expect("the README has a Layout section");
    let dir = root.join("tests/testkit/src/clerk_emulator");
    for entry in std::fs::read_dir(&dir).expect("the emulator's directory is readable") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        let source = std::fs::read_to_string(&path).expect("a source file");
        assert!(
            source.starts_with("//! "),
            "clerk_emulator/{name} does not open with a `//!` saying what it emulates"
        );
        assert!(
            layout.contains(&format!("`{name}`")),
            "the README's Layout does not name clerk_emulator/{name}"
        );
    }
}

#[test]
fn the_reader_sees_through_braces_and_super() {
    let modules: BTreeSet<String> = ["", "db", "db::rows", "domain", "app::audit"]
        .map(str::to_owned)
        .into();
    let source =
        "use super::{rows::UserRow, pool};\nuse crate::domain::Role;\nfn f() { self::g(); }";
    let found: Vec<Option<String>> = paths(source)
        .iter()
        .map(|path| resolve(&modules, "db::store", path))
        .collect();
    assert_eq!(
        found,
        [
            Some("db::rows".to_owned()),
            Some("db".to_owned()),
            Some("domain".to_owned()),
            None
        ]
    );
}
