//! Writing the TOML: the admin block for the status page, a listener per bind,
//! the routes of each frontend's plan (one plan for its plain listeners and one
//! for its TLS ones, `ssl_fc` being known on each), and an upstream (with its
//! health check) per backend.

use super::*;

/// Client addresses a frontend allows and denies, and the lines that say so.
pub(super) struct Access {
    allow: Option<Vec<String>>,
    deny: Vec<String>,
    lines: Vec<usize>,
}

impl Access {
    /// Writes `allow`/`deny` on a listener or route block.
    fn set(&self, blk: &mut Block, lines: &mut Vec<usize>) {
        let list = |v: &[String]| toml::Value::Array(v.iter().map(|a| a.as_str().into()).collect());
        if let Some(a) = &self.allow {
            blk.set("allow", list(a));
        }
        if !self.deny.is_empty() {
            blk.set("deny", list(&self.deny));
        }
        lines.extend(&self.lines);
    }
}

impl Tr<'_> {
    /// Writes the TOML: admin, listeners, routes, upstreams.
    pub(super) fn emit(&mut self) {
        let file = self.file_name();
        let fronts = std::mem::take(&mut self.fronts);
        let mut admin_lines = Vec::new();
        // Stats: a section that only serves them becomes the admin listener.
        for f in &fronts {
            if f.stats.is_empty() {
                continue;
            }
            let stats_only = f.use_rules.is_empty()
                && (f.default_backend.is_none()
                    || (f.is_listen
                        && self
                            .backs
                            .get(&f.name)
                            .is_some_and(|b| b.servers.is_empty())));
            let lines = f.stats.clone();
            let first = lines[0];
            if self.admin.is_some() {
                self.note_at(first, "stats", Carried::Dropped, "Switchyard has one status page ([admin]): already placed from an earlier section");
                continue;
            }
            let (addr, carried, msg) = match (stats_only, f.binds.first()) {
                (true, Some(b)) if b.addr == "127.0.0.1" || b.addr == "[::1]" => {
                    let a = format!("{}:{}", b.addr, b.port);
                    (a.clone(), Carried::Info, format!("the status page is now http://{a}/status (HTML) and /status.json, metrics /metrics, on the admin listener ([admin])"))
                }
                (true, Some(b)) => {
                    let a = format!("127.0.0.1:{}", b.port);
                    (a.clone(), Carried::Approximate, format!("the status page is now http://{a}/status (and /status.json, /metrics) on the admin listener, bound to loopback because it also takes commands (drain, weights, reload); to expose it set [admin] listen and token"))
                }
                _ => (ADMIN_DEFAULT.to_owned(), Carried::Approximate, format!("the status page is no longer on this frontend's port: it is http://{ADMIN_DEFAULT}/status (and /status.json, /metrics) on the admin listener ([admin])")),
            };
            self.note_at(first, "stats", carried, msg);
            for l in &lines[1..] {
                let d = self
                    .sections
                    .iter()
                    .flat_map(|s| &s.lines)
                    .find(|x| x.line == *l)
                    .map(directive)
                    .unwrap_or_default();
                match d.as_str() {
                    "stats auth" | "stats realm" | "stats http-request" => self.note_at(*l, d, Carried::Dropped, "the admin listener takes a bearer token instead ([admin] token)"),
                    "stats admin" => self.note_at(*l, d, Carried::Info, "the admin API drains servers and sets weights (POST /upstreams/NAME/servers/ADDR/drain)"),
                    "stats uri" => self.note_at(*l, d, Carried::Info, "the page is at /status on the admin listener"),
                    "stats enable" => {}
                    "stats refresh" => self.note_at(*l, d, Carried::Info, "the status page reloads itself every few seconds (fixed)"),
                    _ => self.note_at(*l, d, Carried::Dropped, "not translated: the status page has no such setting"),
                }
            }
            let mut cited = lines.clone();
            if stats_only {
                cited.extend(f.binds.iter().map(|b| b.line));
                cited.extend(f.mode_line);
            }
            self.admin = Some((addr, first));
            admin_lines = cited;
        }
        if let Some((addr, _)) = self.admin.clone() {
            let mut b = Block::new(
                "[admin]",
                format!("from {file}:{} (stats)", lines_of(&admin_lines)),
            );
            b.set("listen", addr);
            self.out.doc.push(b);
        }
        let mut route_blocks = Vec::new();
        let mut cited: HashSet<usize> = HashSet::new();
        let mut never_taken: Vec<usize> = Vec::new();
        let mut used_backs: HashSet<String> = HashSet::new();
        let listeners_total: usize = fronts
            .iter()
            .filter(|f| !self.stats_only(f))
            .map(|f| f.binds.len())
            .sum();
        for f in &fronts {
            if self.stats_only(f) {
                continue;
            }
            if f.binds.is_empty() && f.is_listen {
                continue;
            }
            if f.binds.is_empty() {
                self.note_at(
                    f.line,
                    format!("frontend {}", f.name),
                    Carried::Dropped,
                    "no `bind`: the section takes no traffic and is not translated",
                );
                continue;
            }
            let access = self.access(f);
            let names = listener_names(f);
            for (bind, lname) in f.binds.iter().zip(&names) {
                let (blk, lines) = self.listener(f, bind, lname, listeners_total, &file, &access);
                cited.extend(lines);
                self.out.doc.push(blk);
            }
            // Rules no route of a plan takes, on listeners of one kind.
            let mut never = Vec::new();
            // One plan per kind of listener (TLS or not).
            for ssl in [false, true] {
                let ls: Vec<&String> = f
                    .binds
                    .iter()
                    .zip(&names)
                    .filter(|(b, _)| b.tls.is_some() == ssl)
                    .map(|(_, n)| n)
                    .collect();
                if ls.is_empty() {
                    continue;
                }
                let (targets, plan, sources, rule_targets) = self.plan(f, ssl);
                // A rule no route stands for was translated by a route to the
                // same target that takes its requests: cite it there.
                let mut extra: Vec<Vec<usize>> = vec![Vec::new(); plan.len()];
                for (ri, t) in rule_targets.iter().enumerate() {
                    if plan.iter().any(|r| r.rule == Some(ri)) {
                        continue;
                    }
                    match plan.iter().position(|r| r.target == *t) {
                        Some(at) => extra[at].extend(&sources[ri + 1]),
                        None => never.push(*sources[ri + 1].last().expect("the rule's line")),
                    }
                }
                for lname in ls {
                    for (ri, r) in plan.iter().enumerate() {
                        let target = &targets[r.target];
                        let mut lines = sources[r.rule.map_or(0, |i| i + 1)].clone();
                        lines.extend(&extra[ri]);
                        if let Target::Backend(b) = target {
                            used_backs.insert(b.clone());
                        }
                        let mut blk = Block::new("[[route]]", String::new());
                        blk.set("listener", lname.as_str());
                        if let Some(h) = &r.host {
                            blk.set("host", h.key());
                        }
                        match &r.path {
                            PathPat::Prefix(p) if p == "/" => {}
                            PathPat::Prefix(p) => {
                                blk.set("path", p.as_str());
                            }
                            PathPat::Exact(p) => {
                                blk.set("path_exact", p.as_str());
                            }
                        }
                        lines.extend(self.action(&mut blk, target, &f.headers));
                        if !f.monitor.is_empty() && *target != Target::Monitor {
                            access.set(&mut blk, &mut lines);
                        }
                        lines.sort_unstable();
                        cited.extend(&lines);
                        blk.comments = vec![format!(
                            "from {file}:{} ({} {})",
                            lines_of(&lines),
                            if f.is_listen { "listen" } else { "frontend" },
                            f.name
                        )];
                        route_blocks.push(blk);
                    }
                }
            }
            never_taken.extend(never);
        }
        for line in never_taken {
            if !cited.contains(&line) {
                self.note_at(
                    line,
                    "use_backend",
                    Carried::Info,
                    "never taken: earlier rules take every request it matches, in HAProxy too",
                );
            }
        }
        for b in route_blocks {
            self.out.doc.push(b);
        }
        // ACLs that no translated route uses: their rules were reported.
        for f in &fronts {
            for (name, defs) in &f.acls {
                for (line, def) in defs {
                    let noted = self.out.notes.iter().any(|n| n.at.line == *line);
                    if def.is_ok() && !cited.contains(line) && !noted {
                        self.note_at(*line, "acl", Carried::Info, format!("acl {name}: used by no translated rule (those using it are reported)"));
                    }
                }
            }
        }
        let stats_only: HashSet<&str> = fronts
            .iter()
            .filter(|f| self.stats_only(f))
            .map(|f| f.name.as_str())
            .collect();
        let backs = std::mem::take(&mut self.backs);
        for b in backs.values() {
            if b.servers.is_empty() {
                let used = fronts
                    .iter()
                    .filter(|f| !stats_only.contains(f.name.as_str()))
                    .any(|f| {
                        f.use_rules
                            .iter()
                            .any(|r| r.target == Target::Backend(b.name.clone()))
                            || f.default_backend
                                .as_ref()
                                .is_some_and(|(d, _)| *d == b.name)
                    });
                if used {
                    let what = format!("backend {}", b.name);
                    self.note_at(
                        b.line,
                        what,
                        Carried::Info,
                        "no server: HAProxy answers 503, and so do the routes that would use it",
                    );
                }
                continue;
            }
            self.upstream(b, &file);
        }
        self.backs = backs;
    }

    fn stats_only(&self, f: &Front) -> bool {
        !f.stats.is_empty()
            && f.use_rules.is_empty()
            && (f.default_backend.is_none()
                || (f.is_listen
                    && self
                        .backs
                        .get(&f.name)
                        .is_some_and(|b| b.servers.is_empty())))
    }

    fn listener(
        &mut self,
        f: &Front,
        bind: &Bind,
        name: &str,
        total: usize,
        file: &str,
        access: &Access,
    ) -> (Block, Vec<usize>) {
        let mut lines = vec![bind.line];
        lines.extend(&bind.extra_lines);
        lines.extend(f.mode_line);
        let mut blk = Block::new("[[listener]]", String::new());
        blk.set("name", name);
        blk.set("listen", format!("{}:{}", bind.addr, bind.port));
        if bind.accept_proxy {
            blk.set_commented("proxy_protocol", true, "bind … accept-proxy");
        }
        // The process-wide cap also bounds every frontend's.
        let own = bind.maxconn.map(|m| (m, bind.line)).or(f.maxconn);
        let maxconn = match (own, self.global.maxconn) {
            (Some(o), Some(g)) => {
                lines.push(g.1);
                Some(if g.0 < o.0 { g } else { o })
            }
            (o, g) => o.or(g),
        };
        if let Some((m, line)) = maxconn {
            lines.push(line);
            if Some((m, line)) == self.global.maxconn && total > 1 {
                self.note_at(line, "maxconn", Carried::Approximate, format!("the global maxconn is the whole process's; Switchyard caps each listener ({total} here) at {m}"));
            }
            blk.set("max_connections", i64::from(m));
        }
        if let Some((d, line)) = &f.timeout_http_request {
            lines.push(*line);
            blk.set("client_header_timeout", d.as_str());
        }
        if let Some((d, line)) = &f.timeout_client {
            lines.push(*line);
            blk.set("client_body_timeout", d.as_str());
            self.note_at(*line, "timeout client", Carried::Approximate, "bounds each pause in a request body here (client_body_timeout); a request head has client_header_timeout (timeout http-request) and a slow reader of a response no timeout");
        }
        // HAProxy's keep-alive wait: http-keep-alive, else http-request, else client.
        if let Some((d, line)) = f
            .timeout_keep_alive
            .as_ref()
            .or(f.timeout_http_request.as_ref())
            .or(f.timeout_client.as_ref())
        {
            lines.push(*line);
            blk.set("keepalive_timeout", d.as_str());
        }
        // With a monitor-uri, which HAProxy answers before any rule, the
        // routes carry them instead (every route but the monitor's).
        if f.monitor.is_empty() {
            access.set(&mut blk, &mut lines);
        }
        if let Some(tls) = &bind.tls {
            // `bind` keeps no TLS bind without a certificate.
            let cert = tls.certs.first().expect("a TLS bind has a crt");
            let mut t = toml::Table::new();
            t.insert("cert".into(), cert.clone().into());
            t.insert("key".into(), cert.clone().into());
            let min = tls.min_version.clone().or_else(|| {
                self.global.min_version.clone().map(|(v, l)| {
                    lines.push(l);
                    v
                })
            });
            if let Some(v) = min {
                match v.as_str() {
                    "TLSv1.3" => {
                        t.insert("min_version".into(), "1.3".into());
                    }
                    "TLSv1.2" => {
                        t.insert("min_version".into(), "1.2".into());
                    }
                    _ => self.note_at(
                        bind.line,
                        "ssl-min-ver",
                        Carried::Approximate,
                        format!("{v}: Switchyard speaks TLS 1.2 and 1.3 only"),
                    ),
                }
            }
            if let Some(l) = self.global.no_tickets {
                lines.push(l);
                t.insert("session_tickets".into(), false.into());
            }
            if tls.certs.len() > 1 {
                let sni: Vec<toml::Value> = tls.certs[1..]
                    .iter()
                    .map(|c| out::table([("cert", c.as_str().into()), ("key", c.as_str().into())]))
                    .collect();
                t.insert("sni".into(), toml::Value::Array(sni));
            }
            if cert.ends_with('/') || Path::new(cert).is_dir() {
                self.note_at(bind.line, "bind", Carried::Dropped, format!("crt {cert} is a directory: list each certificate file (cert = key = the PEM holding both) in [listener.tls] and [[listener.tls.sni]]"));
            } else {
                self.note_at(
                    bind.line,
                    "bind",
                    Carried::Info,
                    "the crt PEM (certificate and key in one file) is both tls.cert and tls.key",
                );
            }
            blk.set("tls", toml::Value::Table(t));
        }
        blk.comments = vec![format!(
            "from {file}:{} ({} {})",
            lines_of(&lines),
            if f.is_listen { "listen" } else { "frontend" },
            f.name
        )];
        (blk, lines)
    }

    /// The route plan of a frontend for its plain or TLS listeners: the targets,
    /// the routes, for each rule (index + 1; 0: the default) its lines, and each
    /// rule's target.
    #[allow(clippy::type_complexity)]
    fn plan(
        &mut self,
        f: &Front,
        ssl: bool,
    ) -> (Vec<Target>, Vec<routes::Route>, Vec<Vec<usize>>, Vec<usize>) {
        // A backend without servers answers 503, as no backend does.
        let empty: HashSet<String> = self
            .backs
            .values()
            .filter(|b| b.servers.is_empty())
            .map(|b| b.name.clone())
            .collect();
        let serving = |t: &Target| match t {
            Target::Backend(b) if empty.contains(b) => Target::NoBackend,
            t => t.clone(),
        };
        let default = match &f.default_backend {
            Some((b, _)) => serving(&Target::Backend(b.clone())),
            None => Target::NoBackend,
        };
        let mut targets = vec![default];
        let mut sources = vec![f
            .default_backend
            .as_ref()
            .map_or(vec![f.line], |(_, l)| vec![*l])];
        let mut rules = Vec::new();
        for r in f
            .monitor
            .iter()
            .chain(&f.hr_redirects)
            .chain(&f.redirects)
            .chain(&f.use_rules)
        {
            let l = self
                .sections
                .iter()
                .flat_map(|s| &s.lines)
                .find(|x| x.line == r.line)
                .cloned();
            match self.condition(f, &r.cond, ssl) {
                Ok((any_of, acl_lines, notes)) => {
                    if let Some(l) = &l {
                        for (c, m) in notes {
                            self.note(l, c, m);
                        }
                    }
                    if any_of.is_empty() {
                        continue;
                    }
                    let t = serving(&r.target);
                    let target = match targets.iter().position(|x| *x == t) {
                        Some(i) => i,
                        None => {
                            targets.push(t);
                            targets.len() - 1
                        }
                    };
                    let mut ls = acl_lines;
                    ls.push(r.line);
                    sources.push(ls);
                    rules.push(routes::Rule { target, any_of });
                }
                Err(why) => {
                    if let Some(l) = &l {
                        self.note(l, Carried::Dropped, format!("not translated: {why}"));
                    }
                }
            }
        }
        let rule_targets = rules.iter().map(|r| r.target).collect();
        (targets, routes::plan(&rules, 0), sources, rule_targets)
    }

    /// `http-request deny if { src … }` (or a named `src` ACL) → the listener's
    /// `deny`; `deny if !trusted` / `unless trusted` → its `allow` (one such
    /// rule: two would intersect). Both answer 403 before anything else, as
    /// HAProxy's http-request rules run before its redirects and backends.
    fn access(&mut self, f: &Front) -> Access {
        let mut cited = Vec::new();
        let (mut deny, mut allow): (Vec<String>, Option<Vec<String>>) = (Vec::new(), None);
        for (line, words) in &f.deny_rules {
            if let Some(r) = f.hr_redirects.iter().find(|r| r.line < *line) {
                let m = format!("Switchyard refuses these addresses before the redirect of line {}, which HAProxy answers first (http-request rules run in order)", r.line);
                self.note_at(*line, "http-request deny", Carried::Approximate, m);
            }
            let mut notes = Vec::new();
            let (kw, cond) = words.split_first().expect("deny has a condition");
            let parsed = if kw == "if" || kw == "unless" {
                self.terms(f, cond, &mut notes)
            } else {
                Err("only `deny if|unless CONDITION` translates".to_owned())
            };
            let addrs = parsed.and_then(|(d, acl_lines)| match d.as_slice() {
                [t] if t.len() == 1 => {
                    let (neg, alts) = &t[0];
                    let mut v = Vec::new();
                    for a in alts {
                        match a {
                            Alt::Src(x) => v.extend(x.iter().cloned()),
                            _ => return Err("only conditions on the client's address (src) translate, to allow/deny".to_owned()),
                        }
                    }
                    Ok((neg ^ (kw == "unless"), v, acl_lines))
                }
                _ => Err("only one condition on the client's address (src) translates, to allow/deny".to_owned()),
            });
            match addrs {
                Ok((false, v, acl_lines)) => {
                    deny.extend(v);
                    cited.push(*line);
                    cited.extend(acl_lines);
                }
                Ok((true, v, acl_lines)) if allow.is_none() => {
                    allow = Some(v);
                    cited.push(*line);
                    cited.extend(acl_lines);
                }
                Ok(_) => self.note_at(*line, "http-request deny", Carried::Dropped, "a second `deny if !ADDRESSES` would narrow the allowed addresses: not translated, write the intersection in `allow`"),
                Err(why) => self.note_at(*line, "http-request deny", Carried::Dropped, format!("not translated: {why}")),
            }
        }
        Access {
            allow,
            deny,
            lines: cited,
        }
    }

    /// A condition's words as disjuncts of terms, each term (negated or not) the
    /// alternatives it matches; with the ACL lines it uses.
    #[allow(clippy::type_complexity)]
    fn terms(
        &self,
        f: &Front,
        words: &[String],
        notes: &mut Notes,
    ) -> Result<(Vec<Vec<(bool, Vec<Alt>)>>, Vec<usize>), String> {
        let mut lines = Vec::new();
        // Terms, as alternatives each; disjuncts split by `||` / `or`.
        let mut disjuncts: Vec<Vec<(bool, Vec<Alt>)>> = vec![Vec::new()];
        let mut i = 0;
        while i < words.len() {
            let w = words[i].as_str();
            if w == "||" || w == "or" {
                disjuncts.push(Vec::new());
                i += 1;
                continue;
            }
            let (neg, w) = match w.strip_prefix('!') {
                Some("") => {
                    i += 1;
                    (true, words.get(i).map(String::as_str).unwrap_or(""))
                }
                Some(rest) => (true, rest),
                None => (false, w),
            };
            let alts: Vec<Alt> = if w == "{" {
                let end = words[i..]
                    .iter()
                    .position(|x| x == "}")
                    .ok_or("unclosed {")?
                    + i;
                let inner = &words[i + 1..end];
                i = end;
                let (alt, n) = criterion(inner)?;
                notes.extend(n);
                vec![alt]
            } else {
                match w {
                    "TRUE" => vec![Alt::Const(true)],
                    "FALSE" => vec![Alt::Const(false)],
                    _ => {
                        let defs = f
                            .acls
                            .get(w)
                            .ok_or_else(|| format!("acl `{w}` is not defined in this section"))?;
                        let mut v = Vec::new();
                        for (line, d) in defs {
                            lines.push(*line);
                            v.extend(
                                d.clone()
                                    .map_err(|e| format!("acl {w} (line {line}): {e}"))?,
                            );
                        }
                        v
                    }
                }
            };
            disjuncts.last_mut().expect("one").push((neg, alts));
            i += 1;
        }
        Ok((disjuncts, lines))
    }

    /// A condition (`if`/`unless` and its words) on a plain (`ssl` false) or TLS
    /// listener, as conjunctions (none: never), with the ACL lines it uses.
    fn condition(
        &self,
        f: &Front,
        cond: &[String],
        ssl: bool,
    ) -> Result<(Vec<Conj>, Vec<usize>, Notes), String> {
        let mut notes = Vec::new();
        let Some((kw, words)) = cond.split_first() else {
            return Ok((vec![Conj::default()], Vec::new(), notes));
        };
        let (disjuncts, lines) = self.terms(f, words, &mut notes)?;
        let negate_all = kw == "unless";
        if negate_all && (disjuncts.len() != 1 || disjuncts[0].len() != 1) {
            return Err("`unless` with more than one term has no route equivalent".into());
        }
        let mut out = Vec::new();
        for d in disjuncts {
            // Each term: one alternative of it must hold; product over terms.
            let mut conjs: Vec<Option<Conj>> = vec![Some(Conj::default())];
            for (neg, alts) in d {
                let neg = neg ^ negate_all;
                if alts.iter().any(|a| matches!(a, Alt::Src(_))) {
                    return Err("a condition on the client's address has no route equivalent (allow/deny apply to a whole listener or route)".into());
                }
                let alts: Vec<Alt> = alts
                    .into_iter()
                    .map(|a| match a {
                        Alt::Ssl => Alt::Const(ssl),
                        a => a,
                    })
                    .collect();
                let alts = if neg {
                    if alts.iter().all(|a| matches!(a, Alt::Const(_))) {
                        vec![Alt::Const(
                            !alts.iter().any(|a| matches!(a, Alt::Const(true))),
                        )]
                    } else {
                        return Err(
                            "a negated host or path condition has no route equivalent".into()
                        );
                    }
                } else {
                    alts
                };
                let mut next = Vec::new();
                for c in &conjs {
                    for a in &alts {
                        next.push(c.as_ref().and_then(|c| and(c, a)));
                    }
                }
                conjs = next;
                if conjs.len() > 256 {
                    return Err("too many combinations of conditions".into());
                }
            }
            out.extend(conjs.into_iter().flatten());
        }
        Ok((out, lines, notes))
    }

    fn action(&self, blk: &mut Block, target: &Target, front: &Headers) -> Vec<usize> {
        let mut lines = Vec::new();
        match target {
            Target::Backend(name) => {
                blk.set("upstream", name.as_str());
                let Some(b) = self.backs.get(name) else {
                    return lines;
                };
                if let Some((d, _)) = &b.timeout_connect {
                    blk.set("connect_timeout", d.as_str());
                }
                if let Some((d, _)) = &b.timeout_server {
                    blk.set("read_timeout", d.as_str());
                    blk.set("send_timeout", d.as_str());
                }
                if let Some((d, _)) = &b.timeout_tunnel {
                    blk.set("tunnel_timeout", d.as_str());
                }
                let retries = b.retries.map_or(DEFAULT_RETRIES, |(n, _)| n);
                blk.set_commented(
                    "next_upstream",
                    toml::Value::Array(Vec::new()),
                    "HAProxy retries failed connects only (retry-on connect-failure)",
                );
                blk.set_commented(
                    "next_upstream_tries",
                    i64::from(retries) + 1,
                    format!("retries {retries}, plus the first attempt"),
                );
                // The frontend's rules first, then the backend's (HAProxy's order).
                for (key, list) in [
                    ("set_headers", [&front.request, &b.headers.request]),
                    ("response_headers", [&front.response, &b.headers.response]),
                ] {
                    let mut t = toml::Table::new();
                    for (n, v, l) in list.into_iter().flatten() {
                        t.retain(|k, _| !k.eq_ignore_ascii_case(n));
                        t.insert(n.clone(), v.as_str().into());
                        lines.push(*l);
                    }
                    if !t.is_empty() {
                        blk.set(key, toml::Value::Table(t));
                    }
                }
            }
            Target::Redirect { status, location } => {
                blk.set(
                    "redirect",
                    out::table([
                        ("status", i64::from(*status).into()),
                        ("location", location.as_str().into()),
                    ]),
                );
            }
            Target::NoBackend => {
                blk.set_commented(
                    "respond",
                    out::table([
                        ("status", 503.into()),
                        ("body", NO_BACKEND_BODY.into()),
                        ("content_type", "text/html".into()),
                    ]),
                    "HAProxy's answer when no backend takes a request",
                );
            }
            Target::Monitor => {
                blk.set_commented(
                    "respond",
                    out::table([
                        ("status", 200.into()),
                        ("body", MONITOR_BODY.into()),
                        ("content_type", "text/html".into()),
                    ]),
                    "monitor-uri",
                );
            }
        }
        lines
    }

    fn upstream(&mut self, b: &Back, file: &str) {
        let range = |a: usize, b: usize| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        };
        let mut lines = range(b.line, b.end);
        if let Some((s, e)) = b.defaults {
            lines = format!("{}, {lines}", range(s, e));
        }
        let mut blk = Block::new(
            format!("[upstream.{}]", out::key(&b.name)),
            format!("from {file}:{lines} (backend {})", b.name),
        );
        if let Some(((balance, key), _)) = &b.balance {
            blk.set("balance", balance.as_str());
            if let Some(k) = key {
                blk.set("hash_key", k.as_str());
            }
        }
        if let Some((f, line)) = b.hash_balance_factor {
            if b.balance
                .as_ref()
                .is_some_and(|((bal, _), _)| bal == "hash")
            {
                blk.set("hash_balance_factor", f);
            } else {
                self.note_at(line, "hash-balance-factor", Carried::Dropped, "applies to hashing balance algorithms only (as in HAProxy): nothing to translate");
            }
        }
        if let Some((cookie, _)) = &b.sticky {
            blk.set("sticky", out::table([("cookie", cookie.as_str().into())]));
            if b.servers.iter().all(|s| s.cookie.is_none()) {
                self.note_at(b.sticky.as_ref().map_or(b.line, |s| s.1), "cookie", Carried::Approximate, "no server has a `cookie` value, so HAProxy never made clients stick; Switchyard's sticky does");
            }
        }
        if let Some(tls) = &b.tls {
            blk.set("tls", tls.clone());
        }
        if let Some((d, _)) = &b.timeout_queue {
            if b.servers
                .iter()
                .any(|s| s.entry.iter().any(|(k, _)| *k == "max_conns"))
            {
                blk.set("queue", out::table([("timeout", d.as_str().into())]));
            }
        }
        if let Some((n, line)) = b.retries {
            if b.redispatch.is_some() {
                self.note_at(line, "retries", Carried::Info, "on routes to this upstream: next_upstream_tries (retries + 1); each retry goes to another server");
            } else {
                self.note_at(line, "retries", Carried::Approximate, format!("next_upstream_tries = {} on routes to this upstream; Switchyard retries on another server, never the same one (HAProxy without option redispatch retries the same server)", n + 1));
            }
        }
        let backups: Vec<&Server> = b
            .servers
            .iter()
            .filter(|s| s.entry.iter().any(|(k, _)| *k == "backup"))
            .collect();
        if backups.len() > 1 && !b.allbackups {
            self.note_at(
                backups[1].line,
                "server",
                Carried::Approximate,
                "HAProxy sends traffic to the first backup server only (no option allbackups); Switchyard balances over all of them while no primary is eligible",
            );
        }
        if let Some(line) = b.redispatch {
            self.note_at(
                line,
                "option redispatch",
                Carried::Info,
                "Switchyard always sends a retry to a server not yet tried",
            );
        }
        let servers: Vec<toml::Value> = b
            .servers
            .iter()
            .map(|s| out::table(s.entry.iter().map(|(k, v)| (*k, v.clone()))))
            .collect();
        blk.set_commented("servers", toml::Value::Array(servers), "max_fails = 0: HAProxy does not rest a server for failed requests, only for failed checks");
        self.out.doc.push(blk);
        self.health(b, file);
    }

    fn health(&mut self, b: &Back, file: &str) {
        let checked: Vec<&Server> = b.servers.iter().filter(|s| s.check).collect();
        let Some(first) = checked.first() else {
            if let Some((_, line)) = &b.httpchk {
                self.note_at(
                    *line,
                    "option httpchk",
                    Carried::Info,
                    "no server has `check`: HAProxy does not check them, nor does Switchyard",
                );
            }
            return;
        };
        let Some(((method, path, host), line)) = &b.httpchk else {
            self.note_at(first.line, "check", Carried::Dropped, "TCP connect checks (check without option httpchk) have no equivalent: add [upstream.NAME.health_check] with a path the servers answer; failed connects still move requests to other servers");
            return;
        };
        let mut lines = vec![*line];
        if checked.len() < b.servers.len() {
            self.note_at(
                *line,
                "option httpchk",
                Carried::Approximate,
                "Switchyard checks every server of the upstream, including those without `check`",
            );
        }
        let same = |f: &dyn Fn(&Server) -> String| checked.iter().all(|s| f(s) == f(first));
        if !same(&|s| format!("{:?}{:?}{:?}{:?}", s.inter, s.rise, s.fall, s.port)) {
            self.note_at(first.line, "server", Carried::Approximate, "inter/rise/fall/port differ between servers: the upstream's health_check takes the first checked server's");
        }
        let mut blk = Block::new(
            format!("[upstream.{}.health_check]", out::key(&b.name)),
            String::new(),
        );
        blk.set("method", method.as_str());
        blk.set("path", path.as_str());
        if let Some(h) = host {
            blk.set("host", h.as_str());
        }
        if let Some(p) = first.port {
            blk.set("port", i64::from(p));
        }
        let inter = first
            .inter
            .clone()
            .unwrap_or_else(|| DEFAULT_INTER.to_owned());
        blk.set("interval", inter.as_str());
        // Without `timeout check`, HAProxy bounds a whole check by `inter`.
        let timeout = b.timeout_check.as_ref().map_or(inter, |(d, l)| {
            lines.push(*l);
            d.clone()
        });
        blk.set("timeout", timeout);
        if let Some((n, l)) = self.global.spread_checks {
            lines.push(l);
            blk.set("jitter", format!("{n}%"));
        }
        blk.set("rise", i64::from(first.rise.unwrap_or(DEFAULT_RISE)));
        blk.set("fall", i64::from(first.fall.unwrap_or(DEFAULT_FALL)));
        if let Some(((key, v), l)) = &b.expect {
            lines.push(*l);
            blk.set(key, v.as_str());
        }
        lines.push(first.line);
        blk.comments = vec![format!(
            "from {file}:{} (option httpchk, server … check)",
            lines_of(&lines)
        )];
        self.out.doc.push(blk);
    }
}

/// Listener names: the section's name, with the port when it has several binds
/// (and an index when ports repeat).
fn listener_names(f: &Front) -> Vec<String> {
    if f.binds.len() == 1 {
        return vec![f.name.clone()];
    }
    let mut names: Vec<String> = Vec::new();
    for (i, b) in f.binds.iter().enumerate() {
        let mut n = format!("{}-{}", f.name, b.port);
        if names.contains(&n) {
            n = format!("{n}-{}", i + 1);
        }
        names.push(n);
    }
    names
}
