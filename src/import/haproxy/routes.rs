//! From HAProxy's ordered rules to Switchyard's routes. HAProxy takes the first
//! `redirect` or `use_backend` rule whose condition holds, else `default_backend`;
//! Switchyard picks the most specific route (exact host, then wildcards, then no
//! host; within it the exact path, then the longest prefix). The two agree only
//! when the routes are laid out for it, so the plan does not translate rule by
//! rule: it takes every host and path the conditions name, makes one candidate
//! route per (host, path) pair whose target is what HAProxy would choose for
//! requests there, then removes each candidate whose removal changes no answer,
//! checked by running both choices on one request of every class the patterns
//! divide requests into. What is left answers every request as HAProxy would (a
//! later, more specific rule never steals an earlier rule's requests; a prefix
//! ending in `/` gets the bare path as its own route where HAProxy would not have
//! sent it to the same place, as Switchyard would otherwise answer it with 301).

/// A host condition, as Switchyard can match it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum HostPat {
    /// `hdr(host) -i example.com` (lower case).
    Exact(String),
    /// `hdr_end(host) -i .example.com`: the suffix, with its leading dot.
    Suffix(String),
}

impl HostPat {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPat::Exact(h) => h == host,
            HostPat::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }

    /// The `host` key of a route.
    pub(crate) fn key(&self) -> String {
        match self {
            HostPat::Exact(h) => h.clone(),
            HostPat::Suffix(s) => format!("*{s}"),
        }
    }
}

/// A path condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum PathPat {
    /// `path_beg /api/`
    Prefix(String),
    /// `path /ping`
    Exact(String),
}

impl PathPat {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathPat::Prefix(p) => path.starts_with(p.as_str()),
            PathPat::Exact(e) => e == path,
        }
    }
}

/// Conditions that must all hold: any of `hosts` (none: every host) and any of
/// `paths` (none: every path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Conj {
    pub hosts: Option<Vec<HostPat>>,
    pub paths: Option<Vec<PathPat>>,
}

impl Conj {
    fn matches(&self, host: &str, path: &str) -> bool {
        self.hosts
            .as_ref()
            .is_none_or(|hs| hs.iter().any(|h| h.matches(host)))
            && self
                .paths
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| p.matches(path)))
    }
}

/// One rule: its target (an index the caller gives meaning to) when any of its
/// conjunctions holds.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub target: usize,
    pub any_of: Vec<Conj>,
}

/// A route of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub host: Option<HostPat>,
    pub path: PathPat,
    pub target: usize,
    /// The rule HAProxy takes there (`None`: the default).
    pub rule: Option<usize>,
}

/// What HAProxy does with a request: the first rule that holds, else the default.
fn haproxy(rules: &[Rule], default: usize, host: &str, path: &str) -> (usize, Option<usize>) {
    rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.any_of.iter().any(|c| c.matches(host, path)))
        .map_or((default, None), |(i, r)| (r.target, Some(i)))
}

/// The routes of each host, most specific host first, as Switchyard's router
/// groups them.
struct Groups(Vec<(Option<HostPat>, Vec<usize>)>);

impl Groups {
    fn new(routes: &[Route]) -> Groups {
        let mut groups: Vec<(Option<HostPat>, Vec<usize>)> = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            match groups.iter_mut().find(|(h, _)| *h == r.host) {
                Some((_, v)) => v.push(i),
                None => groups.push((r.host.clone(), vec![i])),
            }
        }
        groups.sort_by_key(|(h, _)| match h {
            Some(HostPat::Exact(_)) => (0, 0),
            Some(HostPat::Suffix(s)) => (1, usize::MAX - s.len()),
            None => (2, 0),
        });
        Groups(groups)
    }

    /// What Switchyard's router does (`pipeline::route`) with the routes
    /// `keep` leaves: `None` is a 404 or the added-slash redirect, which no
    /// HAProxy rule gives.
    fn answer(&self, routes: &[Route], keep: &[bool], host: &str, path: &str) -> Option<usize> {
        for (h, members) in &self.0 {
            if h.as_ref().is_some_and(|h| !h.matches(host)) {
                continue;
            }
            let group = members.iter().filter(|&&i| keep[i]).map(|&i| &routes[i]);
            let mut exact = None;
            let mut best: Option<(usize, usize)> = None;
            let (mut slashed, mut bare) = (false, false);
            for r in group {
                match &r.path {
                    PathPat::Exact(e) if e == path => exact = Some(r.target),
                    PathPat::Exact(_) => {}
                    PathPat::Prefix(p) => {
                        if p.len() == path.len() + 1 && p.ends_with('/') && p.starts_with(path) {
                            slashed = true;
                        }
                        if p == path {
                            bare = true;
                        }
                        if path.starts_with(p.as_str()) && best.is_none_or(|(len, _)| p.len() > len)
                        {
                            best = Some((p.len(), r.target));
                        }
                    }
                }
            }
            if exact.is_some() {
                return exact;
            }
            if !path.ends_with('/') && slashed && !bare {
                return None;
            }
            if let Some((_, t)) = best {
                return Some(t);
            }
        }
        None
    }
}

/// A marker no configured host or path contains, for requests that match no
/// longer pattern.
const OTHER: &str = "~switchyard-other~";

/// The routes that answer every request as `rules` then `default` do.
pub(crate) fn plan(rules: &[Rule], default: usize) -> Vec<Route> {
    let mut hosts: Vec<HostPat> = Vec::new();
    let mut paths: Vec<PathPat> = vec![PathPat::Prefix("/".to_owned())];
    for c in rules.iter().flat_map(|r| &r.any_of) {
        for h in c.hosts.iter().flatten() {
            if !hosts.contains(h) {
                hosts.push(h.clone());
            }
        }
        for p in c.paths.iter().flatten() {
            if !paths.contains(p) {
                paths.push(p.clone());
            }
            // The bare form of a slashed prefix, which Switchyard would redirect.
            if let PathPat::Prefix(x) = p {
                if x.len() > 1 && x.ends_with('/') {
                    let bare = PathPat::Exact(x[..x.len() - 1].to_owned());
                    if !paths.contains(&bare) {
                        paths.push(bare);
                    }
                }
            }
        }
    }
    // One request of each class: a host of each pattern and one of none; each
    // path pattern, just inside it, and one outside every prefix.
    let host_rep = |h: &Option<HostPat>| match h {
        Some(HostPat::Exact(h)) => h.clone(),
        Some(HostPat::Suffix(s)) => format!("{OTHER}{s}"),
        None => format!("{OTHER}.invalid"),
    };
    let path_rep = |p: &PathPat| match p {
        PathPat::Prefix(x) => format!("{x}{OTHER}"),
        PathPat::Exact(e) => e.clone(),
    };
    let host_keys: Vec<Option<HostPat>> = hosts
        .iter()
        .cloned()
        .map(Some)
        .chain(std::iter::once(None))
        .collect();
    let host_reps: Vec<String> = host_keys.iter().map(host_rep).collect();
    let mut path_reps: Vec<String> = paths.iter().map(path_rep).collect();
    for p in &paths {
        if let PathPat::Prefix(x) = p {
            path_reps.push(x.clone());
        }
    }
    path_reps.push(format!("/{OTHER}"));

    let mut routes: Vec<Route> = Vec::new();
    for h in &host_keys {
        for p in &paths {
            let (target, rule) = haproxy(rules, default, &host_rep(h), &path_rep(p));
            routes.push(Route {
                host: h.clone(),
                path: p.clone(),
                target,
                rule,
            });
        }
    }
    // What HAProxy answers for each class, computed once.
    let expected: Vec<Vec<usize>> = host_reps
        .iter()
        .map(|h| {
            path_reps
                .iter()
                .map(|p| haproxy(rules, default, h, p).0)
                .collect()
        })
        .collect();
    let groups = Groups::new(&routes);
    // Whether the routes `keep` leaves answer as HAProxy for the classes
    // `near` lets through.
    let agrees = |keep: &[bool], near: &dyn Fn(&str, &str) -> bool| {
        host_reps.iter().zip(&expected).all(|(h, row)| {
            path_reps
                .iter()
                .zip(row)
                .all(|(p, want)| !near(h, p) || groups.answer(&routes, keep, h, p) == Some(*want))
        })
    };
    debug_assert!(
        agrees(&vec![true; routes.len()], &|_, _| true),
        "the full plan answers as HAProxy"
    );
    // Most specific first: they are the ones a less specific route can stand in for.
    let specificity = |r: &Route| {
        let h = match &r.host {
            Some(HostPat::Exact(_)) => 0,
            Some(HostPat::Suffix(_)) => 1,
            None => 2,
        };
        let p = match &r.path {
            PathPat::Exact(_) => 0,
            PathPat::Prefix(x) => usize::MAX - x.len(),
        };
        (h, p)
    };
    let mut order: Vec<usize> = (0..routes.len()).collect();
    order.sort_by_key(|&i| specificity(&routes[i]));
    let mut keep = vec![true; routes.len()];
    // Until nothing more can go: a bare path's route can go only once the
    // slashed prefix that needed it has gone.
    let mut changed = true;
    while changed {
        changed = false;
        for &i in &order {
            if !keep[i] {
                continue;
            }
            keep[i] = false;
            // Removing a route changes answers only where it could match: its
            // hosts, its paths, and the bare form of its slashed prefix.
            let r = &routes[i];
            let near = |h: &str, p: &str| {
                r.host.as_ref().is_none_or(|x| x.matches(h))
                    && (r.path.matches(p)
                        || matches!(&r.path, PathPat::Prefix(x) if x.strip_suffix('/') == Some(p)))
            };
            if agrees(&keep, &near) {
                changed = true;
            } else {
                keep[i] = true;
            }
        }
    }
    let mut kept: Vec<Route> = routes
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(r, _)| r)
        .collect();
    // In the order a reader expects: by host as written, then most specific path.
    kept.sort_by_key(|r| {
        let hi = r
            .host
            .as_ref()
            .and_then(|h| hosts.iter().position(|x| x == h))
            .unwrap_or(usize::MAX);
        (hi, specificity(r).1)
    });
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> Conj {
        Conj {
            hosts: Some(vec![HostPat::Exact(h.to_owned())]),
            paths: None,
        }
    }

    fn prefix(p: &str) -> Conj {
        Conj {
            hosts: None,
            paths: Some(vec![PathPat::Prefix(p.to_owned())]),
        }
    }

    fn keys(routes: &[Route]) -> Vec<(Option<String>, PathPat, usize)> {
        routes
            .iter()
            .map(|r| (r.host.as_ref().map(HostPat::key), r.path.clone(), r.target))
            .collect()
    }

    #[test]
    fn independent_rules_give_one_route_each() {
        let rules = [
            Rule {
                target: 1,
                any_of: vec![host("api.example.com")],
            },
            Rule {
                target: 2,
                any_of: vec![prefix("/static")],
            },
        ];
        assert_eq!(
            keys(&plan(&rules, 0)),
            [
                (
                    Some("api.example.com".into()),
                    PathPat::Prefix("/".into()),
                    1
                ),
                (None, PathPat::Prefix("/static".into()), 2),
                (None, PathPat::Prefix("/".into()), 0),
            ]
        );
    }

    #[test]
    fn an_earlier_path_rule_keeps_its_requests_on_a_later_host() {
        // HAProxy: /static on api.example.com goes to 2 (first match); a lone
        // host route would take it in Switchyard.
        let rules = [
            Rule {
                target: 2,
                any_of: vec![prefix("/static")],
            },
            Rule {
                target: 1,
                any_of: vec![host("api.example.com")],
            },
        ];
        let r = plan(&rules, 0);
        assert!(keys(&r).contains(&(
            Some("api.example.com".into()),
            PathPat::Prefix("/static".into()),
            2
        )));
        // A shorter prefix first shadows a longer one entirely.
        let rules = [
            Rule {
                target: 1,
                any_of: vec![prefix("/api")],
            },
            Rule {
                target: 2,
                any_of: vec![prefix("/api/v2")],
            },
        ];
        assert_eq!(
            keys(&plan(&rules, 0)),
            [
                (None, PathPat::Prefix("/api".into()), 1),
                (None, PathPat::Prefix("/".into()), 0),
            ]
        );
    }

    #[test]
    fn a_slashed_prefix_keeps_the_bare_path_where_haproxy_sends_it() {
        let rules = [Rule {
            target: 1,
            any_of: vec![prefix("/api/")],
        }];
        assert_eq!(
            keys(&plan(&rules, 0)),
            [
                (None, PathPat::Exact("/api".into()), 0),
                (None, PathPat::Prefix("/api/".into()), 1),
                (None, PathPat::Prefix("/".into()), 0),
            ]
        );
    }

    /// Random rule lists over overlapping hosts and paths: the plan answers every
    /// request of a fixed set (not the classes the plan itself picked) as the
    /// rules do.
    #[test]
    fn random_rule_lists_answer_as_haproxy() {
        let hosts = [
            HostPat::Exact("a.ex.com".into()),
            HostPat::Exact("b.ex.com".into()),
            HostPat::Suffix(".ex.com".into()),
            HostPat::Suffix(".b.ex.com".into()),
        ];
        let paths = [
            PathPat::Prefix("/a".into()),
            PathPat::Prefix("/a/".into()),
            PathPat::Prefix("/a/b".into()),
            PathPat::Prefix("/ab".into()),
            PathPat::Prefix("/b/".into()),
            PathPat::Exact("/a".into()),
            PathPat::Exact("/a/b".into()),
        ];
        let req_hosts = [
            "a.ex.com",
            "b.ex.com",
            "x.b.ex.com",
            "z.ex.com",
            "ex.com",
            "other.org",
        ];
        let req_paths = [
            "/", "/a", "/a/", "/a/b", "/a/bc", "/a/b/", "/ab", "/abc", "/b", "/b/", "/b/x", "/c",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..400 {
            let mut rules = Vec::new();
            for _ in 0..1 + next(5) {
                let mut any_of = Vec::new();
                for _ in 0..1 + next(2) {
                    let hs = match next(3) {
                        0 => None,
                        _ => Some(
                            (0..1 + next(2))
                                .map(|_| hosts[next(hosts.len())].clone())
                                .collect(),
                        ),
                    };
                    let ps = match next(3) {
                        0 => None,
                        _ => Some(
                            (0..1 + next(2))
                                .map(|_| paths[next(paths.len())].clone())
                                .collect(),
                        ),
                    };
                    any_of.push(Conj {
                        hosts: hs,
                        paths: ps,
                    });
                }
                rules.push(Rule {
                    target: 1 + next(3),
                    any_of,
                });
            }
            let plan = plan(&rules, 0);
            let groups = Groups::new(&plan);
            let keep = vec![true; plan.len()];
            for h in req_hosts {
                for p in req_paths {
                    assert_eq!(
                        groups.answer(&plan, &keep, h, p),
                        Some(haproxy(&rules, 0, h, p).0),
                        "{h}{p}: rules {rules:?}, plan {plan:?}"
                    );
                }
            }
        }
    }
}
