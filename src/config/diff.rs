//! What a reload from one configuration to another changes, as a list of readable
//! lines: `switchyard check --diff-against` prints it (a dry run), reloads log it and
//! the admin API returns it.
//!
//! Both configurations are serialised in the file's shape (`config::ser`) into
//! ordered trees (`config::tree`), and the trees are compared key by key, so a key
//! added to the schema is compared without code here. A change prints as
//! `changed WHAT: key.path OLD → NEW`, values as the file writes them (`read_timeout
//! 30s → 1m`); a table that appears or goes (`tls`, `health_check`) prints as
//! `added WHAT KEY (summary)`. What is left to this module is presentation and the
//! few rules a tree cannot tell:
//!
//! - Elements are matched by identity, not position (`LIST_RULES`): listeners by
//!   name, upstreams by name (their table's keys), servers by address within their
//!   upstream, routes by (listener, host, path or path_exact, methods), SNI
//!   certificates by file; so reordering a file changes nothing.
//! - Modes (`MODES`): when `balance` or a route's action changes, the settings that
//!   only exist under the old or the new one are not reported one by one.
//! - The admin token is never printed (`SECRETS`), nor a rate-limit store's
//!   password (written as a tag, `Secrets::Tagged`); a certificate or CA file whose
//!   path is unchanged but whose content is new is reported from the loaded files.
//!
//! Order of the result: admin, access_log, listeners (by name), routes (removed
//! ones in old order, then added and changed ones in new order), upstreams (by
//! name), each upstream's own keys before its servers (by address); within an
//! element, keys in the file's order.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use serde::Serialize;

use super::route::{ACTION_KEYS, PROXY_KEYS};
use super::ser::{Paths, Secrets};
use super::tree::{self, Node, Table};
use super::{Config, ServerConfig, ALGORITHM_KEYS, DEFAULT_FAIL_TIMEOUT, DEFAULT_MAX_FAILS};

/// One difference between two configurations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub action: Action,
    /// The element: `listener public`, `route[2] (host api.example.com, path /api/)`,
    /// `upstream bots`, `upstream bots, server 127.0.0.1:9001`, `admin`; for a
    /// table added to or removed from an element, the element and its key
    /// (`listener public tls`).
    pub what: String,
    /// For added and removed elements, a summary of the element; for changed ones,
    /// `key old → new`. May be empty.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Added,
    Removed,
    Changed,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Added => "added",
            Action::Removed => "removed",
            Action::Changed => "changed",
        })
    }
}

impl fmt::Display for Change {
    /// `changed upstream bots, server 127.0.0.1:9001: weight 1 → 2`,
    /// `added route[2] (host api.example.com, path /api/, upstream api)`,
    /// `removed listener internal (127.0.0.1:8081)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action, self.what)?;
        if self.detail.is_empty() {
            Ok(())
        } else if self.action == Action::Changed {
            write!(f, ": {}", self.detail)
        } else {
            write!(f, " ({})", self.detail)
        }
    }
}

/// Everything that differs from `old` to `new`, in a deterministic order (see the
/// module documentation). Secrets (the admin token, store passwords) are never
/// printed.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let mut d = Diff {
        old,
        new,
        out: Vec::new(),
    };
    d.root(&tree_of(old), &tree_of(new));
    d.out
}

/// `c` as the diff compares it: file paths as loaded (the same relative name in
/// two directories is two files), and one server per resolved address, since a
/// reload adds and removes servers by address (a name that now resolves to
/// another address is a server removed and one added). Each server's written
/// address follows as `name`.
fn tree_of(c: &Config) -> Table {
    let mut root = table_of(&c.file_shape(Paths::Resolved, Secrets::Tagged));
    if let Some(Node::Table(upstreams)) = root.get_mut("upstream") {
        // By name, found once each: a search of the table per upstream made this
        // quadratic in the number of upstreams.
        let mut by_name: HashMap<&str, &mut Table> =
            HashMap::with_capacity(upstreams.entries.len());
        for (name, node) in &mut upstreams.entries {
            if let Node::Table(t) = node {
                by_name.entry(name.as_str()).or_insert(t);
            }
        }
        for u in &c.upstreams {
            if let Some(t) = by_name.get_mut(u.name.as_str()) {
                if let Some(servers) = t.get_mut("servers") {
                    let discovered = u.resolve.iter().map(|e| {
                        // Named by what it looks up: `dns bots.internal:8000`.
                        let mut t = table_of(e);
                        t.entries.retain(|(k, _)| k != "addr" && k != "service");
                        let id = format!("dns {}", e.target.written());
                        t.entries.insert(0, ("addr".to_owned(), Node::Bare(id)));
                        Node::Table(t)
                    });
                    *servers =
                        Node::List(u.servers.iter().map(resolved).chain(discovered).collect());
                }
            }
        }
    }
    root
}

/// A server's table with `addr` the resolved address and `name` the written one.
fn resolved(s: &ServerConfig) -> Node {
    let mut t = table_of(s);
    t.entries.retain(|(k, _)| k != "addr");
    t.entries
        .insert(0, ("name".to_owned(), Node::Text(s.name.clone())));
    t.entries
        .insert(0, ("addr".to_owned(), Node::Bare(s.addr.to_string())));
    Node::Table(t)
}

fn table_of<T: Serialize>(value: &T) -> Table {
    // What cannot be put in a tree is an integer beyond i64, bytes or an enum
    // with fields, and the configuration has none: this does not fail.
    match tree::to_node(value) {
        Ok(Some(Node::Table(t))) => t,
        other => panic!("the configuration serialises to a table, not {other:?}"),
    }
}

// ----- the rules a tree cannot tell -----

/// A list whose elements are matched by identity rather than by position.
struct ListRule {
    /// The list's schema path (`listener`, `upstream.*.servers`).
    path: &'static str,
    /// The keys that identify an element; an element whose identity changed is
    /// another element.
    identity: &'static [&'static str],
    show: Show,
}

enum Show {
    /// Each element added, removed or changed is reported as itself.
    Elements {
        /// The element's name in a change, from the parent element's name, its
        /// index in its list, its table, and whether the change is to its keys.
        label: fn(&str, usize, &Table, bool) -> String,
        order: Order,
    },
    /// Within its table, as the list of identities before and after
    /// (`tls.sni [] → ["b.pem"]`), then the other keys of the elements in both.
    Compact,
}

enum Order {
    ByIdentity,
    /// Removed elements in the old file's order, then added and changed ones in
    /// the new file's (routes: their order in the file is their meaning to a
    /// reader, and their index names them).
    File,
}

/// What makes two routes the same place, as the loader decides clashes.
const ROUTE_IDENTITY: &[&str] = &["listener", "host", "path", "path_exact", "methods"];

const LIST_RULES: &[ListRule] = &[
    ListRule {
        path: "listener",
        identity: &["name"],
        show: Show::Elements {
            label: |_, _, t, _| format!("listener {}", text(t, "name")),
            order: Order::ByIdentity,
        },
    },
    ListRule {
        path: "route",
        identity: ROUTE_IDENTITY,
        show: Show::Elements {
            label: |_, i, t, changed| {
                if changed {
                    format!("route[{i}] ({})", route_ident(t))
                } else {
                    format!("route[{i}]")
                }
            },
            order: Order::File,
        },
    },
    ListRule {
        path: "upstream.*.servers",
        identity: &["addr"],
        show: Show::Elements {
            label: |upstream, _, t, _| format!("{upstream}, server {}", text(t, "addr")),
            order: Order::ByIdentity,
        },
    },
    ListRule {
        path: "listener[].tls.sni",
        identity: &["cert"],
        show: Show::Compact,
    },
];

/// A key whose value decides which other keys a table may have.
struct Mode {
    /// The tables' schema path.
    table: &'static str,
    /// What the change line calls it.
    name: &'static str,
    /// The keys that carry it: with one, its value is the mode (`balance`); with
    /// several, which of them is present (a route's action).
    keys: &'static [&'static str],
    /// The keys that only exist under some modes: when the mode changes, their
    /// coming or going is part of that change, not news of its own.
    governs: fn(&str) -> bool,
}

const MODES: &[Mode] = &[
    Mode {
        table: "upstream.*",
        name: "balance",
        keys: &["balance"],
        governs: |key| ALGORITHM_KEYS.iter().any(|(k, _)| *k == key),
    },
    Mode {
        table: "route[]",
        name: "action",
        keys: ACTION_KEYS,
        governs: |key| PROXY_KEYS.contains(&key),
    },
];

/// Keys whose values are never printed: only that they were added, changed or
/// removed (the diff is logged and served by the admin API).
const SECRETS: &[&str] = &["admin.token"];

/// What a key's absence means where "none" would mislead.
const ABSENT: &[(&str, &str)] = &[
    ("listener[].hsts", "off"),
    ("listener[].max_connections", "no limit"),
    ("listener[].allow", "every address"),
    ("route[].allow", "every address"),
    ("route[].name", "(host + path)"),
    ("route[].max_body_size", "the listener's"),
    ("route[].set_headers.*", "unset"),
    ("upstream.*.health_check.host", "the server's address"),
    ("upstream.*.health_check.port", "the server's"),
    ("upstream.*.tls.sni", "the server's name"),
    ("upstream.*.tls.ca_file", "built-in roots"),
];

fn list_rule(path: &str) -> Option<&'static ListRule> {
    LIST_RULES.iter().find(|r| r.path == path)
}

fn absent(path: &str) -> &'static str {
    ABSENT
        .iter()
        .find(|(p, _)| *p == path)
        .map_or("none", |(_, word)| word)
}

// ----- the walk -----

struct Diff<'a> {
    /// The loaded configurations, for what is not a key: file contents.
    old: &'a Config,
    new: &'a Config,
    out: Vec<Change>,
}

/// A key of both tables with its values (`None` where it is absent), and its
/// schema path.
struct Pair<'t> {
    key: &'t str,
    schema: String,
    old: Option<&'t Node>,
    new: Option<&'t Node>,
}

impl<'a> Diff<'a> {
    fn push(&mut self, action: Action, what: impl Into<String>, detail: impl Into<String>) {
        self.out.push(Change {
            action,
            what: what.into(),
            detail: detail.into(),
        });
    }

    /// The top level: each key is an element (`admin`), a list of elements
    /// (`listener`) or a table of named elements (`upstream`).
    fn root(&mut self, old: &Table, new: &Table) {
        for p in pairs("", old, new) {
            if let Some(rule) = list_rule(&p.schema) {
                self.list("", rule, p.old, p.new);
                continue;
            }
            match (p.old, p.new) {
                (Some(Node::Table(o)), Some(Node::Table(n))) if o.data_keys && n.data_keys => {
                    for e in pairs(&p.schema, o, n) {
                        let what = format!("{} {}", p.key, e.key);
                        self.element(&what, &e.schema, e.key, e.old, e.new, &[]);
                    }
                }
                _ => self.element(p.key, &p.schema, p.key, p.old, p.new, &[]),
            }
        }
    }

    /// One element, named `what` in changes and `name` among its kind; `skip`
    /// are its identity keys, equal by construction.
    fn element(
        &mut self,
        what: &str,
        schema: &str,
        name: &str,
        old: Option<&Node>,
        new: Option<&Node>,
        skip: &[&str],
    ) {
        match (old, new) {
            (None, None) => {}
            (None, Some(n)) => self.push(Action::Added, what, summary(schema, n)),
            (Some(o), None) => self.push(Action::Removed, what, summary(schema, o)),
            (Some(Node::Table(o)), Some(Node::Table(n))) => {
                let lists = self.keys(what, "", schema, o, n, skip);
                self.contents(what, schema, name);
                // Sub-elements (an upstream's servers) after the element's own keys.
                self.lists(what, lists);
            }
            (Some(o), Some(n)) if o != n => {
                self.push(Action::Changed, what, format!("{o} → {n}"));
            }
            _ => {}
        }
    }

    /// Compares the keys of two tables of the element `what`; `prefix` is their
    /// key path inside it (`health_check`). Returns the lists of sub-elements,
    /// which the caller reports after the element's own keys.
    fn keys<'t>(
        &mut self,
        what: &str,
        prefix: &str,
        schema: &str,
        old: &'t Table,
        new: &'t Table,
        skip: &[&str],
    ) -> Vec<Pair<'t>> {
        let mode = MODES.iter().find(|m| m.table == schema);
        let switched = mode.and_then(|m| {
            (mode_of(m, old) != mode_of(m, new))
                .then(|| format!("{} {} → {}", m.name, mode_shown(m, old), mode_shown(m, new)))
        });
        let mut lists = Vec::new();
        let mut switch_reported = false;
        for p in pairs(schema, old, new) {
            if skip.contains(&p.key) {
                continue;
            }
            if let (Some(m), Some(line)) = (mode, &switched) {
                if m.keys.contains(&p.key) {
                    if !switch_reported {
                        switch_reported = true;
                        self.push(Action::Changed, what, line.clone());
                    }
                    continue;
                }
                if (m.governs)(p.key) && (p.old.is_none() || p.new.is_none()) {
                    continue;
                }
            }
            let path = key_path(prefix, p.key, old.data_keys || new.data_keys);
            match list_rule(&p.schema).map(|r| &r.show) {
                Some(Show::Elements { .. }) => lists.push(p),
                Some(Show::Compact) => self.compact(what, &path, &p),
                None => self.value(what, &path, &p.schema, p.old, p.new),
            }
        }
        lists
    }

    fn lists(&mut self, what: &str, lists: Vec<Pair<'_>>) {
        for p in lists {
            if let Some(rule) = list_rule(&p.schema) {
                self.list(what, rule, p.old, p.new);
            }
        }
    }

    /// One key's values.
    fn value<'t>(
        &mut self,
        what: &str,
        path: &str,
        schema: &str,
        old: Option<&'t Node>,
        new: Option<&'t Node>,
    ) {
        if old == new {
            return;
        }
        if SECRETS.contains(&schema) {
            let action = match (old, new) {
                (None, _) => Action::Added,
                (_, None) => Action::Removed,
                _ => Action::Changed,
            };
            return self.push(action, format!("{what} {path}"), "");
        }
        let empty = Table {
            entries: Vec::new(),
            data_keys: true,
        };
        // Two tables of keys are compared key by key; a map of names
        // (`set_headers`) that is absent is an empty one.
        let tables = match (old, new) {
            (Some(Node::Table(o)), Some(Node::Table(n))) if o.data_keys == n.data_keys => {
                Some((o, n))
            }
            (None, Some(Node::Table(n))) if n.data_keys => Some((&empty, n)),
            (Some(Node::Table(o)), None) if o.data_keys => Some((o, &empty)),
            _ => None,
        };
        if let Some((o, n)) = tables {
            let lists = self.keys(what, path, schema, o, n, &[]);
            return self.lists(what, lists);
        }
        match (old, new) {
            (None, Some(n @ Node::Table(_))) => {
                self.push(Action::Added, format!("{what} {path}"), summary(schema, n));
            }
            (Some(o @ Node::Table(_)), None) => {
                self.push(
                    Action::Removed,
                    format!("{what} {path}"),
                    summary(schema, o),
                );
            }
            (o, n) => {
                let show =
                    |v: Option<&Node>| v.map_or_else(|| absent(schema).to_owned(), Node::to_string);
                self.push(
                    Action::Changed,
                    what,
                    format!("{path} {} → {}", show(o), show(n)),
                );
            }
        }
    }

    /// A list of elements reported one by one, `what` naming their parent.
    fn list(&mut self, what: &str, rule: &ListRule, old: Option<&Node>, new: Option<&Node>) {
        let Show::Elements { label, order } = &rule.show else {
            return;
        };
        let (old, new) = (elements(old), elements(new));
        // Each element's identity, and the first element of each identity: pairing
        // by a search of the other list was quadratic (thousands of routes).
        let (old_ids, new_ids) = (idents(rule, &old), idents(rule, &new));
        let (old_at, new_at) = (first_of(&old_ids), first_of(&new_ids));
        let mut matched: Vec<Matched<'_>> = Vec::new();
        for (i, o) in old.iter().enumerate() {
            if !new_at.contains_key(&old_ids[i]) {
                matched.push(Matched {
                    old: Some((i, o)),
                    new: None,
                });
            }
        }
        for (i, n) in new.iter().enumerate() {
            matched.push(Matched {
                old: old_at.get(&new_ids[i]).map(|&j| (j, old[j])),
                new: Some((i, n)),
            });
        }
        if let Order::ByIdentity = order {
            matched
                .sort_by_cached_key(|m| m.new.or(m.old).map(|(_, t)| sort_key(&identity(rule, t))));
        }
        let schema = format!("{}[]", rule.path);
        for m in matched {
            match (m.old, m.new) {
                (Some((i, o)), None) => {
                    let summary = summary_table(&schema, o);
                    self.push(Action::Removed, label(what, i, o, false), summary);
                }
                (None, Some((i, n))) => {
                    let summary = summary_table(&schema, n);
                    self.push(Action::Added, label(what, i, n, false), summary);
                }
                (Some((_, o)), Some((i, n))) => {
                    let element = label(what, i, n, true);
                    let lists = self.keys(&element, "", &schema, o, n, rule.identity);
                    let name = rule
                        .identity
                        .first()
                        .map_or_else(String::new, |k| text(n, k));
                    self.contents(&element, &schema, &name);
                    self.lists(&element, lists);
                }
                (None, None) => {}
            }
        }
    }

    /// A list shown within its table: its identities, then the other keys of the
    /// elements in both.
    fn compact(&mut self, what: &str, path: &str, p: &Pair<'_>) {
        let Some(rule) = list_rule(&p.schema) else {
            return;
        };
        let (old, new) = (elements(p.old), elements(p.new));
        let ids = |items: &[&Table]| -> Vec<Node> {
            items.iter().map(|t| identity_node(rule, t)).collect()
        };
        let (old_ids, new_ids) = (ids(&old), ids(&new));
        let same_set =
            old_ids.len() == new_ids.len() && old_ids.iter().all(|i| new_ids.contains(i));
        if !same_set {
            self.push(
                Action::Changed,
                what,
                format!(
                    "{path} {} → {}",
                    Node::List(old_ids),
                    Node::List(new_ids.clone())
                ),
            );
        }
        let schema = format!("{}[]", rule.path);
        for (n, id) in new.iter().zip(&new_ids) {
            if let Some(o) = old.iter().find(|o| identity_node(rule, o) == *id) {
                let lists = self.keys(what, &format!("{path}[{id}]"), &schema, o, n, rule.identity);
                self.lists(what, lists);
            }
        }
    }

    /// What is not a key but changes what is served: a certificate or CA file
    /// rewritten in place (a rotation), compared in the loaded configurations.
    fn contents(&mut self, what: &str, schema: &str, name: &str) {
        match schema {
            "listener[]" => {
                let tls = |c: &'a Config| {
                    c.listeners
                        .iter()
                        .find(|l| l.name == name)
                        .and_then(|l| l.tls.as_ref())
                };
                let (Some(o), Some(n)) = (tls(self.old), tls(self.new)) else {
                    return;
                };
                for c in n.certificates() {
                    let rotated = o
                        .certificates()
                        .find(|p| p.cert_path == c.cert_path && p.key_path == c.key_path)
                        .is_some_and(|p| !p.same_chain(c));
                    if rotated {
                        self.push(
                            Action::Changed,
                            what,
                            format!("certificate {:?} reloaded (new content)", c.cert_path),
                        );
                    }
                }
            }
            "upstream.*" => {
                let tls = |c: &'a Config| c.upstream(name).and_then(|u| u.tls.as_ref());
                if let (Some(o), Some(n)) = (tls(self.old), tls(self.new)) {
                    if o.ca_file == n.ca_file && o.ca_certs != n.ca_certs {
                        self.push(Action::Changed, what, "tls.ca_file contents");
                    }
                }
            }
            _ => {}
        }
    }
}

/// An element of the old list, the new list or both, with its index in each.
struct Matched<'t> {
    old: Option<(usize, &'t Table)>,
    new: Option<(usize, &'t Table)>,
}

/// The keys of two tables, each with its values and schema path: a struct's in
/// the file's order (a key only in `old` where it stood there: after the key of
/// both that preceded it in `old`), a map's sorted.
fn pairs<'t>(schema: &str, old: &'t Table, new: &'t Table) -> Vec<Pair<'t>> {
    let data = old.data_keys || new.data_keys;
    let (old_keys, new_keys) = (Keys::of(old), Keys::of(new));
    // Keys only in `old`, each with the number of `new`'s keys it follows.
    let mut only_old: Vec<(usize, &'t str)> = Vec::new();
    let mut after = 0;
    for (k, _) in &old.entries {
        match new_keys.position(k) {
            Some(i) => after = i + 1,
            None => only_old.push((after, k)),
        }
    }
    // Stable: keys after the same one keep their order in `old`.
    only_old.sort_by_key(|&(after, _)| after);
    let mut keys: Vec<&'t str> = Vec::with_capacity(new.entries.len() + only_old.len());
    let mut rest = only_old.into_iter().peekable();
    for i in 0..=new.entries.len() {
        while let Some((_, k)) = rest.next_if(|&(after, _)| after == i) {
            keys.push(k);
        }
        if let Some((k, _)) = new.entries.get(i) {
            keys.push(k);
        }
    }
    if data {
        keys.sort_unstable();
    }
    let value = |t: &'t Table, at: &Keys<'t>, key: &str| at.position(key).map(|i| &t.entries[i].1);
    keys.into_iter()
        .map(|key| Pair {
            key,
            schema: child_schema(schema, key, data),
            old: value(old, &old_keys, key),
            new: value(new, &new_keys, key),
        })
        .collect()
}

/// Where a table's keys are: a scan for the few keys of a struct, a hash map for
/// the many of a map (a configuration's upstreams), found once each.
enum Keys<'t> {
    Few(&'t Table),
    Many(HashMap<&'t str, usize>),
}

impl<'t> Keys<'t> {
    /// Past this many keys a hash map beats a scan.
    const SCAN: usize = 16;

    fn of(t: &'t Table) -> Self {
        if t.entries.len() <= Self::SCAN {
            return Keys::Few(t);
        }
        let mut at = HashMap::with_capacity(t.entries.len());
        for (i, (k, _)) in t.entries.iter().enumerate() {
            at.entry(k.as_str()).or_insert(i);
        }
        Keys::Many(at)
    }

    /// The first entry with `key`, as `Table::get` finds it.
    fn position(&self, key: &str) -> Option<usize> {
        match self {
            Keys::Few(t) => t.entries.iter().position(|(k, _)| k == key),
            Keys::Many(at) => at.get(key).copied(),
        }
    }
}

/// `upstream.*` for the entries of a map, `upstream.*.health_check` for a key.
fn child_schema(schema: &str, key: &str, data: bool) -> String {
    match (schema, data) {
        (_, true) => format!("{schema}.*"),
        ("", false) => key.to_owned(),
        (_, false) => format!("{schema}.{key}"),
    }
}

/// `health_check.interval` for a key, `set_headers x-via` for a map entry.
fn key_path(prefix: &str, key: &str, data: bool) -> String {
    match (prefix, data) {
        ("", _) => key.to_owned(),
        (_, true) => format!("{prefix} {key}"),
        (_, false) => format!("{prefix}.{key}"),
    }
}

/// The tables of a list (absent: none).
fn elements(list: Option<&Node>) -> Vec<&Table> {
    list.and_then(Node::as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(Node::as_table)
        .collect()
}

fn identity<'t>(rule: &ListRule, t: &'t Table) -> Vec<Option<&'t Node>> {
    rule.identity.iter().map(|k| t.get(k)).collect()
}

fn idents<'t>(rule: &ListRule, items: &[&'t Table]) -> Vec<Ident<'t>> {
    items.iter().map(|t| Ident(identity(rule, t))).collect()
}

/// The index of the first element of each identity.
fn first_of<'a, 't>(ids: &'a [Ident<'t>]) -> HashMap<&'a Ident<'t>, usize> {
    let mut at = HashMap::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        at.entry(id).or_insert(i);
    }
    at
}

/// An element's identity as a hash map key: equal as its values are.
#[derive(PartialEq)]
struct Ident<'t>(Vec<Option<&'t Node>>);

/// Identities are names, addresses, hosts, paths, methods and file paths: no
/// float, the one value that is not equal to itself (were one NaN, its element
/// would match nothing, as with `==`).
impl Eq for Ident<'_> {}

impl Hash for Ident<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        for n in &self.0 {
            match n {
                None => h.write_u8(0),
                Some(n) => hash_node(n, h),
            }
        }
    }
}

/// Hashes `n` consistently with its `==`: nodes that are equal hash alike.
fn hash_node<H: Hasher>(n: &Node, h: &mut H) {
    std::mem::discriminant(n).hash(h);
    match n {
        Node::Bool(b) => b.hash(h),
        Node::Int(i) => i.hash(h),
        // 0.0 == -0.0; NaN equals nothing, so any hash will do.
        Node::Float(x) => (if *x == 0.0 { 0.0f64 } else { *x }).to_bits().hash(h),
        Node::Text(s) | Node::Bare(s) => s.hash(h),
        Node::List(items) => {
            items.len().hash(h);
            for i in items {
                hash_node(i, h);
            }
        }
        Node::Table(t) => {
            t.data_keys.hash(h);
            t.entries.len().hash(h);
            for (k, v) in &t.entries {
                k.hash(h);
                hash_node(v, h);
            }
        }
    }
}

/// An element's identity as one value (for a compact list).
fn identity_node(rule: &ListRule, t: &Table) -> Node {
    match identity(rule, t).as_slice() {
        [one] => one.cloned().unwrap_or(Node::Bare(String::new())),
        many => Node::List(many.iter().flatten().map(|n| (*n).clone()).collect()),
    }
}

/// Orders identities: addresses as addresses (`127.0.0.1:9002` before
/// `127.0.0.1:10000`, IPv4 before IPv6), anything else as text.
fn sort_key(id: &[Option<&Node>]) -> Vec<(Option<SocketAddr>, String)> {
    id.iter()
        .map(|n| {
            let s = n.map(ToString::to_string).unwrap_or_default();
            (s.parse().ok(), s)
        })
        .collect()
}

/// The mode of a table: the value of its one key (`round_robin`), or which of its
/// keys is present (`redirect`).
fn mode_of<'t>(m: &Mode, t: &'t Table) -> Option<(&'static str, Option<&'t Node>)> {
    match m.keys {
        [key] => Some((key, t.get(key))),
        keys => keys.iter().find(|k| t.get(k).is_some()).map(|k| (*k, None)),
    }
}

/// A mode as the change line shows it: `round_robin`; `upstream bots`,
/// `redirect (status 302, location "…")`.
fn mode_shown(m: &Mode, t: &Table) -> String {
    let Some((key, value)) = mode_of(m, t) else {
        return "none".to_owned();
    };
    match (value, t.get(key)) {
        (Some(v), _) => v.to_string(),
        (None, Some(Node::Table(inner))) => format!("{key} ({})", summary_of_keys(inner)),
        (None, Some(v)) => format!("{key} {v}"),
        (None, None) => key.to_owned(),
    }
}

// ----- summaries of added and removed elements -----

/// A value's string, or empty.
fn text(t: &Table, key: &str) -> String {
    t.get(key)
        .and_then(Node::as_str)
        .map(str::to_owned)
        .unwrap_or_default()
}

/// A value as shown, or empty.
fn shown(t: &Table, key: &str) -> String {
    t.get(key).map(ToString::to_string).unwrap_or_default()
}

fn summary(schema: &str, n: &Node) -> String {
    match n {
        Node::Table(t) => summary_table(schema, t),
        other => other.to_string(),
    }
}

/// A short description of an element, from a few of its keys; tables without a
/// summary of their own list their plain keys.
fn summary_table(schema: &str, t: &Table) -> String {
    match schema {
        // `127.0.0.1:9901, token required`.
        "admin" => {
            let auth = if t.get("token").is_some() {
                ", token required"
            } else {
                ""
            };
            format!("{}{auth}", shown(t, "listen"))
        }
        // `stdout, json`.
        "access_log" => format!("{}, {}", text(t, "path"), text(t, "format")),
        // `127.0.0.1:8443, tls` or `0.0.0.0:80, redirect_https to port 443`.
        "listener[]" => {
            let mut s = shown(t, "listen");
            if t.get("tls").is_some() {
                s.push_str(", tls");
            }
            if t.get("redirect_https") == Some(&Node::Bool(true)) {
                s.push_str(&format!(
                    ", redirect_https to port {}",
                    shown(t, "https_port")
                ));
            }
            s
        }
        // `cert "/etc/x.pem", 2 sni certificates, min_version 1.2`.
        "listener[].tls" => {
            let mut s = format!("cert {}", shown(t, "cert"));
            let sni = t
                .get("sni")
                .and_then(Node::as_list)
                .map_or(0, <[Node]>::len);
            if sni > 0 {
                s.push_str(&format!(", {sni} sni certificates"));
            }
            s.push_str(&format!(", min_version {}", shown(t, "min_version")));
            s
        }
        // `host api.example.com, path /api/, upstream api`.
        "route[]" => match t.get("upstream") {
            Some(u) => format!("{}, upstream {u}", route_ident(t)),
            None => {
                let action = ACTION_KEYS.iter().find(|k| t.get(k).is_some());
                format!("{}, {}", route_ident(t), action.unwrap_or(&"no action"))
            }
        },
        // `balance hash, protocol h2c, tls, servers 127.0.0.1:9021, 127.0.0.1:9022`.
        "upstream.*" => {
            let mut s = format!("balance {}", shown(t, "balance"));
            if let Some(p) = t.get("protocol").filter(|p| p.as_str() != Some("http1")) {
                s.push_str(&format!(", protocol {p}"));
            }
            match t.get("tls") {
                Some(Node::Bool(true)) => s.push_str(", tls"),
                Some(Node::Table(tls)) => s.push_str(&format!(", tls ({})", summary_of_keys(tls))),
                _ => {}
            }
            let servers: Vec<String> = elements(t.get("servers"))
                .iter()
                .map(|s| shown(s, "addr"))
                .collect();
            let plural = if servers.len() == 1 { "" } else { "s" };
            s.push_str(&format!(", server{plural} {}", servers.join(", ")));
            s
        }
        // The weight, and the settings not at their defaults.
        "upstream.*.servers[]" => {
            let mut parts = vec![format!("weight {}", shown(t, "weight"))];
            for flag in ["down", "backup"] {
                if t.get(flag) == Some(&Node::Bool(true)) {
                    parts.push(flag.to_owned());
                }
            }
            let defaults = [
                ("max_fails", Node::Int(DEFAULT_MAX_FAILS.into())),
                ("fail_timeout", duration_node(DEFAULT_FAIL_TIMEOUT)),
                ("slow_start", duration_node(std::time::Duration::ZERO)),
                ("max_conns", Node::Int(0)),
            ];
            for (key, default) in defaults {
                if let Some(v) = t.get(key).filter(|v| **v != default) {
                    parts.push(format!("{key} {v}"));
                }
            }
            if text(t, "name") != text(t, "addr") {
                parts.push(format!("from {}", shown(t, "name")));
            }
            parts.join(", ")
        }
        // `GET /ready every 5s`.
        "upstream.*.health_check" => format!(
            "{} {} every {}",
            shown(t, "method"),
            shown(t, "path"),
            shown(t, "interval")
        ),
        _ => summary_of_keys(t),
    }
}

/// `cookie SWY, ttl 1h`: the plain (not table) keys and their values.
fn summary_of_keys(t: &Table) -> String {
    let parts: Vec<String> = t
        .entries
        .iter()
        .filter(|(_, v)| !matches!(v, Node::Table(_)))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    parts.join(", ")
}

fn duration_node(d: std::time::Duration) -> Node {
    Node::Bare(humantime::format_duration(d).to_string())
}

/// `listener internal, host *.example.com, path /, methods [GET]`.
fn route_ident(t: &Table) -> String {
    let parts: Vec<String> = ROUTE_IDENTITY
        .iter()
        .filter_map(|k| t.get(k).map(|v| format!("{k} {v}")))
        .collect();
    parts.join(", ")
}
#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = r#"
[admin]
listen = "127.0.0.1:9901"

[[listener]]
name = "public"
listen = "127.0.0.1:8080"

[[listener]]
name = "internal"
listen = "127.0.0.1:8081"

[[route]]
host = "api.example.com"
path = "/api/"
upstream = "api"
read_timeout = "30s"

[[route]]
listener = "internal"
host = "*.example.com"
upstream = "bots"

[[route]]
path = "/"
upstream = "bots"

[upstream.bots]
servers = [
  { addr = "127.0.0.1:9002" },
  { addr = "127.0.0.1:9001" },
]

[upstream.api]
servers = [{ addr = "127.0.0.1:9011" }]
"#;

    fn parse(text: &str) -> Config {
        Config::parse(Path::new("a.toml"), text)
            .unwrap_or_else(|e| panic!("invalid test config:\n{e}\n---\n{text}"))
    }

    /// `BASE` with `from` replaced by `to` (which must occur).
    fn edit(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "{from:?} is not in BASE");
        BASE.replacen(from, to, 1)
    }

    /// The changes from `BASE` to `new`, as display lines.
    fn lines(new: &str) -> Vec<String> {
        lines_between(BASE, new)
    }

    fn lines_between(old: &str, new: &str) -> Vec<String> {
        diff(&parse(old), &parse(new))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn identical_configs_have_no_changes() {
        assert_eq!(lines(BASE), Vec::<String>::new());
    }

    #[test]
    fn reordering_elements_is_not_a_change() {
        let reordered = r#"
[[listener]]
name = "internal"
listen = "127.0.0.1:8081"

[[listener]]
name = "public"
listen = "127.0.0.1:8080"

[[route]]
path = "/"
upstream = "bots"

[[route]]
host = "API.example.com"
path = "/api/"
upstream = "api"
read_timeout = "30000ms"

[[route]]
listener = "internal"
host = "*.example.com"
path = "/"
upstream = "bots"

[upstream.api]
servers = [{ addr = "127.0.0.1:9011", weight = 1 }]

[upstream.bots]
servers = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002" }]

[admin]
"#;
        assert_eq!(lines(reordered), Vec::<String>::new());
    }

    #[test]
    fn server_weight_and_settings() {
        let new = edit(
            r#"{ addr = "127.0.0.1:9001" }"#,
            r#"{ addr = "127.0.0.1:9001", weight = 2, down = true, backup = true, max_fails = 3, fail_timeout = "30s", slow_start = "1m" }"#,
        );
        assert_eq!(
            lines(&new),
            [
                "changed upstream bots, server 127.0.0.1:9001: weight 1 → 2",
                "changed upstream bots, server 127.0.0.1:9001: down false → true",
                "changed upstream bots, server 127.0.0.1:9001: backup false → true",
                "changed upstream bots, server 127.0.0.1:9001: max_fails 1 → 3",
                "changed upstream bots, server 127.0.0.1:9001: fail_timeout 10s → 30s",
                "changed upstream bots, server 127.0.0.1:9001: slow_start 0s → 1m",
            ]
        );
    }

    #[test]
    fn servers_added_and_removed_by_address_in_address_order() {
        let new = edit(
            r#"  { addr = "127.0.0.1:9002" },"#,
            r#"  { addr = "127.0.0.1:9004", weight = 3, slow_start = "30s", max_conns = 50 },
  { addr = "127.0.0.1:9003", backup = true },"#,
        );
        assert_eq!(
            lines(&new),
            [
                "removed upstream bots, server 127.0.0.1:9002 (weight 1)",
                "added upstream bots, server 127.0.0.1:9003 (weight 1, backup)",
                "added upstream bots, server 127.0.0.1:9004 (weight 3, slow_start 30s, max_conns 50)",
            ]
        );
    }

    #[test]
    fn server_given_by_name_shows_it() {
        let new = edit(
            r#"{ addr = "127.0.0.1:9011" }"#,
            r#"{ addr = "localhost:9012" }"#,
        );
        let out = lines(&new);
        assert_eq!(
            out[0],
            "removed upstream api, server 127.0.0.1:9011 (weight 1)"
        );
        assert!(
            out.iter()
                .any(|l| l.starts_with("added upstream api, server ")
                    && l.ends_with("(weight 1, from \"localhost:9012\")")),
            "{out:?}"
        );
    }

    #[test]
    fn listeners_by_name() {
        let new = edit(
            "name = \"internal\"\nlisten = \"127.0.0.1:8081\"",
            "name = \"metrics\"\nlisten = \"127.0.0.1:8081\"",
        )
        .replacen("127.0.0.1:8080", "0.0.0.0:8080", 1)
        .replacen("listener = \"internal\"\n", "", 1);
        assert_eq!(
            lines(&new),
            [
                "removed listener internal (127.0.0.1:8081)",
                "added listener metrics (127.0.0.1:8081)",
                "changed listener public: listen 127.0.0.1:8080 → 0.0.0.0:8080",
                "removed route[1] (listener internal, host *.example.com, path /, upstream bots)",
                "added route[1] (host *.example.com, path /, upstream bots)",
            ]
        );
    }

    #[test]
    fn routes_added_removed_and_changed() {
        let new = edit("[[route]]\npath = \"/\"\nupstream = \"bots\"\n", "").replacen(
            "upstream = \"api\"\nread_timeout = \"30s\"",
            "upstream = \"bots\"",
            1,
        )
            + "\n[[route]]\nhost = \"chat.example.com\"\npath = \"/ws/\"\nupstream = \"api\"\n";
        assert_eq!(
            lines(&new),
            [
                "removed route[2] (path /, upstream bots)",
                "changed route[0] (host api.example.com, path /api/): upstream api → bots",
                "changed route[0] (host api.example.com, path /api/): read_timeout 30s → 1m",
                "added route[2] (host chat.example.com, path /ws/, upstream api)",
            ]
        );
    }

    #[test]
    fn route_timeouts_headers_and_retry() {
        let new = edit(
            "read_timeout = \"30s\"",
            r#"read_timeout = "30s"
connect_timeout = "250ms"
send_timeout = "1m 30s"
set_headers = { "X-Instance-ID" = "$upstream_addr", "X-Via" = "sy ${host}x $$5" }
next_upstream = ["error", "http_502", "http_429"]
next_upstream_tries = 5
next_upstream_timeout = "10s"
retry_body_limit = "1MiB""#,
        );
        let old = edit(
            "read_timeout = \"30s\"",
            "read_timeout = \"30s\"\nset_headers = { \"X-Via\" = \"old\", \"X-Drop\" = \"\" }",
        );
        let what = "changed route[0] (host api.example.com, path /api/)";
        let expected: Vec<String> = [
            "connect_timeout 1m → 250ms",
            "send_timeout 1m → 1m 30s",
            "next_upstream [error, timeout] → [error, http_502, http_429]",
            "next_upstream_tries 3 → 5",
            "next_upstream_timeout 0s → 10s",
            "retry_body_limit 64KiB → 1MiB",
            "set_headers x-drop \"\" → unset",
            "set_headers x-instance-id unset → \"$upstream_addr\"",
            "set_headers x-via \"old\" → \"sy ${host}x $$5\"",
        ]
        .iter()
        .map(|d| format!("{what}: {d}"))
        .collect();
        assert_eq!(lines_between(&old, &new), expected);
    }

    #[test]
    fn upstreams_added_and_removed() {
        let new = edit(
            "[upstream.api]\nservers = [{ addr = \"127.0.0.1:9011\" }]",
            "[upstream.chats]\nbalance = \"hash\"\nservers = [{ addr = \"127.0.0.1:9021\" }, { addr = \"127.0.0.1:9022\" }]",
        )
        .replace("upstream = \"api\"", "upstream = \"chats\"");
        assert_eq!(
            lines(&new),
            [
                "changed route[0] (host api.example.com, path /api/): upstream api → chats",
                "removed upstream api (balance round_robin, server 127.0.0.1:9011)",
                "added upstream chats (balance hash, servers 127.0.0.1:9021, 127.0.0.1:9022)",
            ]
        );
    }

    #[test]
    fn upstream_protocol_tls_and_tunnel_timeout() {
        let new = edit(
            "[upstream.api]\nservers",
            "[upstream.api]\nprotocol = \"h2\"\ntls = { sni = \"api.internal\" }\nservers",
        )
        .replacen(
            "read_timeout = \"30s\"",
            "read_timeout = \"30s\"\ntunnel_timeout = \"5m\"",
            1,
        );
        assert_eq!(
            lines(&new),
            [
                "changed route[0] (host api.example.com, path /api/): tunnel_timeout 1h → 5m",
                "changed upstream api: protocol http1 → h2",
                "changed upstream api: tls false → { sni = \"api.internal\", verify = true }",
            ]
        );
        let newer = new.replacen(
            "tls = { sni = \"api.internal\" }",
            "tls = { verify = false }",
            1,
        );
        assert_eq!(
            lines_between(&new, &newer),
            [
                "changed upstream api: tls.sni \"api.internal\" → the server's name",
                "changed upstream api: tls.verify true → false",
            ]
        );
        let added = format!(
            "{new}\n[upstream.grpc]\nprotocol = \"h2c\"\nservers = [{{ addr = \"127.0.0.1:9050\" }}]\n"
        );
        assert_eq!(
            lines_between(&new, &added),
            ["added upstream grpc (balance round_robin, protocol h2c, server 127.0.0.1:9050)"]
        );
    }

    #[test]
    fn upstream_settings() {
        let old = edit(
            "[upstream.bots]\n",
            "[upstream.bots]\nbalance = \"least_time\"\nsticky = { cookie = \"SWY\" }\n",
        );
        let new = edit(
            "[upstream.bots]\n",
            r#"[upstream.bots]
balance = "least_time"
least_time = "last_byte"
ewma_decay = "5s"
ewma_seed = "10ms"
keepalive = 8
max_ejected_percent = 100
sticky = { cookie = "SID", ttl = "10m" }
health_check = { path = "/ready" }
"#,
        );
        let what = "changed upstream bots";
        let expected: Vec<String> = [
            "keepalive 32 → 8",
            "least_time header → last_byte",
            "ewma_decay 10s → 5s",
            "ewma_seed 30ms → 10ms",
            "sticky.cookie SWY → SID",
            "sticky.ttl 1h → 10m",
        ]
        .iter()
        .map(|d| format!("{what}: {d}"))
        .chain([
            "added upstream bots health_check (GET /ready every 5s)".to_owned(),
            format!("{what}: max_ejected_percent 50 → 100"),
        ])
        .collect();
        assert_eq!(lines_between(&old, &new), expected);
        // And back: the sticky cookie's lifetime, and health checks turned off.
        assert_eq!(
            lines_between(&new, &old)[5..7],
            [
                "changed upstream bots: sticky.ttl 10m → 1h",
                "removed upstream bots health_check (GET /ready every 5s)",
            ]
        );
        // The new algorithm's settings come with it; sticky is news of its own.
        assert_eq!(
            lines(&old),
            [
                "changed upstream bots: balance round_robin → least_time",
                "added upstream bots sticky (cookie SWY, ttl 1h)",
            ]
        );
    }

    #[test]
    fn settings_of_an_algorithm_no_longer_used_are_not_reported() {
        let old = edit(
            "[upstream.bots]\n",
            "[upstream.bots]\nbalance = \"hash\"\nhash_key = \"header:X-Chat-Id\"\nhash_balance_factor = 1.25\n",
        );
        assert_eq!(
            lines_between(&old, BASE),
            ["changed upstream bots: balance hash → round_robin"]
        );
        let new = old
            .replace("header:X-Chat-Id", "cookie:sid")
            .replace("1.25", "1.5");
        assert_eq!(
            lines_between(&old, &new),
            [
                "changed upstream bots: hash_key header:x-chat-id → cookie:sid",
                "changed upstream bots: hash_balance_factor 1.25 → 1.5",
            ]
        );
    }

    #[test]
    fn health_check_settings() {
        let old = edit("[upstream.bots]\n", "[upstream.bots]\nhealth_check = {}\n");
        let new = edit(
            "[upstream.bots]\n",
            r#"[upstream.bots]
health_check = { method = "HEAD", path = "/ready", host = "bots.internal", port = 9100, interval = "2s", timeout = "1s", jitter = "25%", rise = 1, fall = 5, expect_status = "200,204-206", expect_body = "ok" }
"#,
        );
        let what = "changed upstream bots";
        let expected: Vec<String> = [
            "health_check.method GET → HEAD",
            "health_check.path /health → /ready",
            "health_check.host the server's address → \"bots.internal\"",
            "health_check.port the server's → 9100",
            "health_check.interval 5s → 2s",
            "health_check.timeout 2s → 1s",
            "health_check.jitter 10% → 25%",
            "health_check.rise 2 → 1",
            "health_check.fall 3 → 5",
            "health_check.expect_status 200-399 → 200,204-206",
            "health_check.expect_body none → \"ok\"",
        ]
        .iter()
        .map(|d| format!("{what}: {d}"))
        .collect();
        assert_eq!(lines_between(&old, &new), expected);
    }

    #[test]
    fn admin_section_and_token_never_shown() {
        let no_admin = edit("[admin]\nlisten = \"127.0.0.1:9901\"\n", "");
        assert_eq!(lines(&no_admin), ["removed admin (127.0.0.1:9901)"]);
        let with_token = edit(
            "listen = \"127.0.0.1:9901\"",
            "listen = \"127.0.0.1:9902\"\ntoken = \"s3cret-one\"",
        );
        assert_eq!(
            lines_between(&no_admin, &with_token),
            ["added admin (127.0.0.1:9902, token required)"]
        );
        assert_eq!(
            lines(&with_token),
            [
                "changed admin: listen 127.0.0.1:9901 → 127.0.0.1:9902",
                "added admin token",
            ]
        );
        let other_token = with_token.replace("s3cret-one", "s3cret-two");
        let changed = diff(&parse(&with_token), &parse(&other_token));
        assert_eq!(
            changed,
            [Change {
                action: Action::Changed,
                what: "admin token".into(),
                detail: String::new(),
            }]
        );
        assert_eq!(changed[0].to_string(), "changed admin token");
        let back = lines_between(&with_token, BASE);
        assert_eq!(back[1], "removed admin token");
        let all = format!("{:?}", [back, lines_between(&with_token, &other_token)]);
        assert!(!all.contains("s3cret"), "{all}");
    }

    #[test]
    fn order_is_admin_listeners_routes_upstreams() {
        let new = BASE
            .replace("127.0.0.1:9901", "127.0.0.1:9909")
            .replace("127.0.0.1:8081", "127.0.0.1:8089")
            .replace("read_timeout = \"30s\"", "read_timeout = \"5s\"")
            .replace("127.0.0.1:9011", "127.0.0.1:9019")
            .replace(
                "{ addr = \"127.0.0.1:9001\" }",
                "{ addr = \"127.0.0.1:9001\", weight = 4 }",
            );
        assert_eq!(
            lines(&new),
            [
                "changed admin: listen 127.0.0.1:9901 → 127.0.0.1:9909",
                "changed listener internal: listen 127.0.0.1:8081 → 127.0.0.1:8089",
                "changed route[0] (host api.example.com, path /api/): read_timeout 30s → 5s",
                "removed upstream api, server 127.0.0.1:9011 (weight 1)",
                "added upstream api, server 127.0.0.1:9019 (weight 1)",
                "changed upstream bots, server 127.0.0.1:9001: weight 1 → 4",
            ]
        );
    }

    #[test]
    fn serialises_for_the_admin_api() {
        let c = Change {
            action: Action::Removed,
            what: "listener internal".into(),
            detail: "127.0.0.1:8081".into(),
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({
                "action": "removed",
                "what": "listener internal",
                "detail": "127.0.0.1:8081",
            })
        );
    }

    #[test]
    fn values_are_shown_as_the_file_writes_them() {
        let new = edit(
            "read_timeout = \"30s\"",
            "read_timeout = \"30s\"\nretry_body_limit = 1000\nset_headers = { \"X-A\" = \"a$host-${scheme}x$$\" }",
        )
        .replacen(
            "[upstream.bots]\n",
            "[upstream.bots]\nhealth_check = { jitter = \"12.5%\" }\n",
            1,
        );
        let old = edit("[upstream.bots]\n", "[upstream.bots]\nhealth_check = {}\n");
        assert_eq!(
            lines_between(&old, &new),
            [
                "changed route[0] (host api.example.com, path /api/): retry_body_limit 64KiB → 1000",
                "changed route[0] (host api.example.com, path /api/): set_headers x-a unset → \"a$host-${scheme}x$$\"",
                "changed upstream bots: health_check.jitter 10% → 12.5%",
            ]
        );
    }

    /// Keys the field-by-field diff listed one by one, and some it did not know:
    /// each change is reported by its key path with no code naming the key.
    #[test]
    fn every_key_is_reported_by_its_path() {
        let api = "changed route[0] (host api.example.com, path /api/)";
        let root = "changed route[2] (path /)";
        let cases: &[(&str, &str, &str)] = &[
            (
                "read_timeout = \"30s\"",
                "read_timeout = \"30s\"\naccess_log = false",
                "access_log true → false",
            ),
            (
                "read_timeout = \"30s\"",
                "read_timeout = \"30s\"\nname = \"api\"",
                "name (host + path) → \"api\"",
            ),
            (
                "read_timeout = \"30s\"",
                "read_timeout = \"2m\"",
                "read_timeout 30s → 2m",
            ),
            (
                "read_timeout = \"30s\"",
                "read_timeout = \"30s\"\nnext_upstream_tries = 0",
                "next_upstream_tries 3 → 0",
            ),
            (
                "read_timeout = \"30s\"",
                "read_timeout = \"30s\"\nnext_upstream = []",
                "next_upstream [error, timeout] → []",
            ),
            (
                "[upstream.bots]\n",
                "[upstream.bots]\nkeepalive = 4\n",
                "keepalive 32 → 4",
            ),
            (
                "[upstream.bots]\n",
                "[upstream.bots]\nprotocol = \"h2c\"\n",
                "protocol http1 → h2c",
            ),
            (
                "[upstream.bots]\n",
                "[upstream.bots]\ntls = true\n",
                "tls false → true",
            ),
            (
                "[upstream.bots]\n",
                "[upstream.bots]\nmax_ejected_percent = 0\n",
                "max_ejected_percent 50 → 0",
            ),
            (
                "[upstream.bots]\n",
                "[upstream.bots]\nbalance = \"random\"\n",
                "balance round_robin → random",
            ),
            (
                "{ addr = \"127.0.0.1:9001\" }",
                "{ addr = \"127.0.0.1:9001\", max_fails = 0 }",
                "max_fails 1 → 0",
            ),
            (
                "{ addr = \"127.0.0.1:9001\" }",
                "{ addr = \"127.0.0.1:9001\", max_conns = 50 }",
                "max_conns 0 → 50",
            ),
            (
                "[upstream.bots]\n",
                "[upstream.bots]\nqueue = { size = 10 }\n",
                "queue.size 1000 → 10",
            ),
            (
                "[upstream.bots]\n",
                "[upstream.bots]\nqueue = { timeout = \"2s\" }\n",
                "queue.timeout none → 2s",
            ),
        ];
        for (from, to, detail) in cases {
            let new = edit(from, to);
            let out = lines(&new);
            let what = if from.starts_with("read_timeout") {
                api
            } else if from.starts_with("{ addr") {
                "changed upstream bots, server 127.0.0.1:9001"
            } else {
                "changed upstream bots"
            };
            assert_eq!(out, [format!("{what}: {detail}")], "{to}");
        }
        // A route's other actions, key by key.
        let redirect = edit(
            "path = \"/\"\nupstream = \"bots\"",
            "path = \"/\"\nredirect = { location = \"https://a.example/\" }",
        );
        let moved = redirect.replace(
            "{ location = \"https://a.example/\" }",
            "{ status = 301, location = \"https://b.example$request_uri\" }",
        );
        assert_eq!(
            lines_between(&redirect, &moved),
            [
                format!("{root}: redirect.status 302 → 301"),
                format!("{root}: redirect.location \"https://a.example/\" → \"https://b.example$request_uri\""),
            ]
        );
        let respond = edit(
            "path = \"/\"\nupstream = \"bots\"",
            "path = \"/\"\nrespond = { body = \"ok\" }",
        );
        let answered = respond.replace(
            "{ body = \"ok\" }",
            "{ body = \"fine\", content_type = \"text/html\" }",
        );
        assert_eq!(
            lines_between(&respond, &answered),
            [
                format!("{root}: respond.body \"ok\" → \"fine\""),
                format!(
                    "{root}: respond.content_type \"text/plain; charset=utf-8\" → \"text/html\""
                ),
            ]
        );
        // Sections and listener keys.
        let logged = format!("{BASE}\n[access_log]\npath = \"stdout\"\n");
        assert_eq!(lines(&logged), ["added access_log (stdout, json)"]);
        let combined = logged.replace(
            "path = \"stdout\"",
            "path = \"/var/log/sy.log\"\nformat = \"combined\"",
        );
        assert_eq!(
            lines_between(&logged, &combined),
            [
                "changed access_log: path \"stdout\" → \"/var/log/sy.log\"",
                "changed access_log: format json → combined",
            ]
        );
        let redirecting = edit(
            "listen = \"127.0.0.1:8081\"",
            "listen = \"127.0.0.1:8081\"\nredirect_https = true\nhttps_port = 8443",
        );
        assert_eq!(
            lines(&redirecting),
            [
                "changed listener internal: redirect_https false → true",
                "changed listener internal: https_port none → 8443",
            ]
        );
    }

    /// The walk knows no key: one that the schema does not have yet, anywhere in
    /// the tree, is reported by its path with no code here.
    #[test]
    fn a_key_new_to_the_schema_needs_no_diff_code() {
        let c = parse(BASE);
        let old = tree_of(&c);
        let mut new = old.clone();
        fn table(n: Option<&mut Node>) -> &mut Table {
            match n {
                Some(Node::Table(t)) => t,
                other => panic!("not a table: {other:?}"),
            }
        }
        let bots = table(table(new.get_mut("upstream")).get_mut("bots"));
        bots.entries
            .push(("warmup".into(), Node::Bare("5s".into())));
        let Some(Node::List(servers)) = bots.get_mut("servers") else {
            panic!("servers")
        };
        let Node::Table(first) = &mut servers[0] else {
            panic!("a server")
        };
        first
            .entries
            .push(("zone".into(), Node::Text("eu-1".into())));
        let Some(Node::List(routes)) = new.get_mut("route") else {
            panic!("routes")
        };
        let Node::Table(route) = &mut routes[0] else {
            panic!("a route")
        };
        route.entries.push((
            "cache".into(),
            Node::Table(Table {
                entries: vec![("ttl".into(), Node::Bare("1m".into()))],
                data_keys: false,
            }),
        ));
        new.entries.push((
            "limits".into(),
            Node::Table(Table {
                entries: vec![("rps".into(), Node::Int(100))],
                data_keys: false,
            }),
        ));
        let mut d = Diff {
            old: &c,
            new: &c,
            out: Vec::new(),
        };
        d.root(&old, &new);
        let out: Vec<String> = d.out.iter().map(ToString::to_string).collect();
        assert_eq!(
            out,
            [
                "added route[0] (host api.example.com, path /api/) cache (ttl 1m)",
                "changed upstream bots: warmup none → 5s",
                "changed upstream bots, server 127.0.0.1:9002: zone none → \"eu-1\"",
                "added limits (rps 100)",
            ]
        );
    }

    /// The ordering `pairs` gives is the one of the search it replaced: keys of
    /// `new` in order, each key only in `old` inserted after the last key of `old`
    /// found before it.
    #[test]
    fn pairs_orders_keys_as_the_plain_search_did() {
        fn by_search(old: &Table, new: &Table) -> Vec<String> {
            let mut keys: Vec<&str> = new.entries.iter().map(|(k, _)| k.as_str()).collect();
            let mut at = 0;
            for (k, _) in &old.entries {
                match keys.iter().position(|n| n == k) {
                    Some(i) => at = i + 1,
                    None => {
                        keys.insert(at, k);
                        at += 1;
                    }
                }
            }
            keys.into_iter().map(str::to_owned).collect()
        }
        let table = |keys: &[usize]| Table {
            entries: keys
                .iter()
                .map(|k| (format!("k{k}"), Node::Int(*k as i64)))
                .collect(),
            data_keys: false,
        };
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        for round in 0..2_000 {
            // Small and large tables (a scan and a hash map), keys shuffled.
            let size = if round % 10 == 0 { 40 } else { 8 };
            let mut pick = |n: usize| -> Vec<usize> {
                let mut keys: Vec<usize> = (0..size).filter(|_| next(3) > 0).collect();
                for i in (1..keys.len()).rev() {
                    keys.swap(i, next(i + 1));
                }
                keys.truncate(n.max(1));
                keys
            };
            let (old, new) = (table(&pick(size)), table(&pick(size)));
            let got: Vec<String> = pairs("", &old, &new)
                .iter()
                .map(|p| p.key.to_owned())
                .collect();
            assert_eq!(got, by_search(&old, &new), "{old:?} → {new:?}");
            for p in pairs("", &old, &new) {
                assert_eq!(p.old, old.get(p.key));
                assert_eq!(p.new, new.get(p.key));
            }
        }
    }

    #[test]
    fn changing_a_routes_action_is_one_line() {
        let respond = edit(
            "path = \"/\"\nupstream = \"bots\"",
            "path = \"/\"\nrespond = { status = 503, body = \"later\" }",
        );
        // The proxy settings that went with `upstream` are not listed.
        assert_eq!(
            lines(&respond),
            ["changed route[2] (path /): action upstream bots → respond (status 503, body \"later\", content_type \"text/plain; charset=utf-8\")"]
        );
        let back = respond.replace(
            "respond = { status = 503, body = \"later\" }",
            "upstream = \"api\"\nread_timeout = \"5s\"",
        );
        assert_eq!(
            lines_between(&respond, &back),
            ["changed route[2] (path /): action respond (status 503, body \"later\", content_type \"text/plain; charset=utf-8\") → upstream api"]
        );
        // While the action stays, its settings are compared as usual.
        assert_eq!(
            lines_between(&back, &back.replace("\"5s\"", "\"6s\"")),
            ["changed route[2] (path /): read_timeout 5s → 6s"]
        );
    }

    #[test]
    fn routes_are_told_apart_by_methods_and_path_exact() {
        let old = edit(
            "[[route]]\npath = \"/\"\n",
            "[[route]]\npath = \"/hook\"\nmethods = [\"POST\"]\nupstream = \"api\"\n\n\
             [[route]]\npath_exact = \"/hook\"\nupstream = \"api\"\n\n[[route]]\npath = \"/\"\n",
        );
        let new = old
            .replace(
                "methods = [\"POST\"]\nupstream = \"api\"",
                "methods = [\"POST\"]\nupstream = \"bots\"",
            )
            .replace("path_exact = \"/hook\"", "path = \"/hook\"");
        assert_eq!(
            lines_between(&old, &new),
            [
                "removed route[3] (path_exact /hook, upstream api)",
                "changed route[2] (path /hook, methods [POST]): upstream api → bots",
                "added route[3] (path /hook, upstream api)",
            ]
        );
    }

    /// A directory of certificate files for TLS tests, removed when dropped.
    struct Files(std::path::PathBuf);

    impl Files {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("switchyard-diff-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Files(dir)
        }

        /// Writes `STEM.crt` and `STEM.key` for `names`; a CA certificate (as
        /// `STEM.crt`) when `names` is empty.
        fn certificate(&self, stem: &str, names: &[&str]) {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(
                names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            )
            .unwrap();
            if names.is_empty() {
                params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            }
            let cert = params.self_signed(&key).unwrap();
            std::fs::write(self.0.join(format!("{stem}.crt")), cert.pem()).unwrap();
            std::fs::write(self.0.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
        }

        fn parse(&self, text: &str) -> Config {
            Config::parse(&self.0.join("switchyard.toml"), text)
                .unwrap_or_else(|e| panic!("invalid test config:\n{e}\n---\n{text}"))
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn sni_certificates_are_matched_by_file() {
        let files = Files::new("sni");
        for (stem, name) in [("site", "site.test"), ("a", "a.test"), ("b", "b.test")] {
            files.certificate(stem, &[name]);
        }
        let tls = |sni: &[&str]| {
            let sni: String = sni
                .iter()
                .map(|s| format!("[[listener.tls.sni]]\ncert = \"{s}.crt\"\nkey = \"{s}.key\"\n"))
                .collect();
            edit(
                "name = \"public\"\nlisten = \"127.0.0.1:8080\"\n",
                &format!("name = \"public\"\nlisten = \"127.0.0.1:8080\"\n[listener.tls]\ncert = \"site.crt\"\nkey = \"site.key\"\n{sni}"),
            )
        };
        let (ab, ba, a) = (tls(&["a", "b"]), tls(&["b", "a"]), tls(&["a"]));
        let lines = |o: &str, n: &str| -> Vec<String> {
            diff(&files.parse(o), &files.parse(n))
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(lines(&ab, &ba), Vec::<String>::new(), "reordered");
        let path = |s: &str| format!("{:?}", files.0.join(format!("{s}.crt")));
        assert_eq!(
            lines(&a, &ab),
            [format!(
                "changed listener public: tls.sni [{}] → [{}, {}]",
                path("a"),
                path("a"),
                path("b")
            )]
        );
        // Same files, new content: a rotation.
        let before = files.parse(&ab);
        files.certificate("b", &["b.test"]);
        let out: Vec<String> = diff(&before, &files.parse(&ab))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            out,
            [format!(
                "changed listener public: certificate {} reloaded (new content)",
                path("b")
            )]
        );
    }

    #[test]
    fn a_ca_file_rewritten_in_place_is_reported() {
        let files = Files::new("ca");
        files.certificate("ca", &[]);
        let text = edit(
            "[upstream.api]\n",
            "[upstream.api]\ntls = { ca_file = \"ca.crt\" }\n",
        );
        let before = files.parse(&text);
        assert!(diff(&before, &files.parse(&text)).is_empty());
        files.certificate("ca", &[]);
        let after = files.parse(&text);
        let out: Vec<String> = diff(&before, &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(out, ["changed upstream api: tls.ca_file contents"]);
    }
}
