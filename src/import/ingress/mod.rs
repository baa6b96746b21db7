//! Importing Kubernetes Ingress resources with ingress-nginx annotations, and the
//! Services (and IngressClasses) they name: `switchyard import ingress
//! ingress.yaml [service.yaml …]`. Every file may hold several documents (`---`)
//! and `kind: List` items.
//!
//! What ingress-nginx builds, and so what is written:
//! - listeners `http` (:80) and, with any `tls` section, `https` (:443) with the
//!   Secrets' files and ingress-nginx's default HSTS;
//! - per rule path a route (`Exact` → `path_exact`; `Prefix` `/foo` → `path_exact
//!   = "/foo"` plus `path = "/foo/"`, so `/foobar` does not match, as in
//!   ingress-nginx); with ssl-redirect (default where the host has TLS) the route
//!   is on `https` and a 308 redirect takes its place on `http`;
//! - per Service port an upstream with one DNS-discovered server
//!   `NAME.NAMESPACE.svc.cluster.local:PORT` (`resolve = true`);
//! - the annotations (`annotations.rs`).

mod annotations;
mod yaml;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::out::{self, Block};
use super::{Carried, ImportError, Imported, Origin};
use annotations::Settings;
use yaml::Node;

/// The listeners ingress-nginx's controller serves on.
const HTTP_LISTEN: &str = "0.0.0.0:80";
const HTTPS_LISTEN: &str = "0.0.0.0:443";
/// ingress-nginx's default `hsts` (on, a year, includeSubDomains), sent on HTTPS.
const HSTS: &str = "max-age=31536000; includeSubDomains";
/// ingress-nginx answers an HTTP request on a TLS host with 308 (its
/// `http-redirect-code` default), whatever the method.
const REDIRECT_STATUS: i64 = 308;
/// Where a TLS Secret's files are expected, relative to the configuration file.
const TLS_DIR: &str = "tls";
/// The controller ingress-nginx's IngressClass names.
const NGINX_CONTROLLER: &str = "k8s.io/ingress-nginx";

/// Imports the Ingress and Service manifests in `files`.
pub fn import(files: &[PathBuf]) -> Result<Imported, ImportError> {
    let mut loaded = Vec::new();
    for f in files {
        let text = super::read(f)?;
        loaded.push((f.clone(), yaml::load(f, &text)?));
    }
    let mut objects = Vec::new();
    for (f, docs) in &loaded {
        for d in docs {
            if yaml::str_at(d, "kind").as_deref() == Some("List") {
                for item in yaml::items(yaml::get(d, "items")) {
                    objects.push(Object::new(f, item));
                }
            } else {
                objects.push(Object::new(f, d));
            }
        }
    }
    let mut t = Translation::default();
    // TLS is a host's, whichever Ingress names it (ingress-nginx's servers are
    // per host): known before any path's redirect is decided.
    for o in objects.iter().filter(|o| o.kind == "Ingress") {
        for tl in yaml::items(yaml::path(o.node, &["spec", "tls"])) {
            t.https |= yaml::get(tl, "secretName").is_some();
            t.tls_hosts.extend(
                yaml::items(yaml::get(tl, "hosts"))
                    .iter()
                    .filter_map(yaml::text),
            );
        }
    }
    for o in &objects {
        match o.kind.as_str() {
            "Service" => t.service(o),
            "IngressClass" => {
                let controller = yaml::path(o.node, &["spec", "controller"]).and_then(yaml::text);
                t.classes.insert(o.name.clone(), (controller, o.at()));
            }
            _ => {}
        }
    }
    for o in &objects {
        match o.kind.as_str() {
            "Ingress" => t.ingress(o),
            "Service" | "IngressClass" => {}
            "" => t.out.note(
                &o.at(),
                "kind",
                Carried::Dropped,
                "a document without kind: not a Kubernetes object; not read",
            ),
            k => t.out.note(
                &o.at(),
                format!("kind: {k}"),
                Carried::Info,
                format!(
                    "{} is not read: the import reads Ingress, Service and IngressClass objects",
                    o.id()
                ),
            ),
        }
    }
    Ok(t.finish())
}

/// One Kubernetes object of the input.
struct Object<'a> {
    file: &'a Path,
    node: &'a Node,
    kind: String,
    api: String,
    name: String,
    namespace: String,
}

impl<'a> Object<'a> {
    fn new(file: &'a Path, node: &'a Node) -> Object<'a> {
        let meta = yaml::get(node, "metadata");
        Object {
            file,
            node,
            kind: yaml::str_at(node, "kind").unwrap_or_default(),
            api: yaml::str_at(node, "apiVersion").unwrap_or_default(),
            name: meta
                .and_then(|m| yaml::str_at(m, "name"))
                .unwrap_or_default(),
            namespace: meta
                .and_then(|m| yaml::str_at(m, "namespace"))
                .unwrap_or_else(|| "default".to_owned()),
        }
    }

    fn at(&self) -> Origin {
        self.origin(self.node)
    }

    fn origin(&self, n: &Node) -> Origin {
        Origin {
            file: self.file.to_owned(),
            line: yaml::line(n),
        }
    }

    /// `file:first-last` of `n`, for a block's comment.
    fn lines(&self, n: &Node) -> String {
        let (a, b) = (yaml::line(n), yaml::last_line(n));
        let name = self.file.display();
        if a == b {
            format!("{name}:{a}")
        } else {
            format!("{name}:{a}-{b}")
        }
    }

    fn id(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// What a Service manifest says about its ports.
struct Service {
    headless: bool,
    external: Option<String>,
    /// (name, port, targetPort as written)
    ports: Vec<(Option<String>, i64, Option<String>)>,
    client_ip: Option<Origin>,
    timeout: Option<Origin>,
}

/// A backend's server entry and how to name its upstream.
struct Server {
    entry: toml::Value,
    label: String,
    /// The Service's name resolves to one ClusterIP (or unknown).
    cluster_ip: bool,
    client_ip: bool,
    /// The Service's manifest was given.
    known: bool,
}

/// A route's match: host, `path` or `path_exact`, the path.
type RouteId = (Option<String>, &'static str, String);

#[derive(Default)]
struct Translation {
    out: Imported,
    services: HashMap<(String, String), Service>,
    classes: HashMap<String, (Option<String>, Origin)>,
    routes: Vec<Block>,
    /// name → (identity, block)
    upstreams: BTreeMap<String, (String, Block)>,
    upstream_order: Vec<String>,
    /// What each (host, match key, path) was first routed for.
    seen: HashMap<RouteId, String>,
    /// (secret, hosts, from)
    tls: Vec<(String, Vec<String>, String)>,
    catch_all: bool,
    /// Hosts any Ingress lists under tls, and whether any tls has a Secret
    /// (then there is an https listener).
    tls_hosts: HashSet<String>,
    https: bool,
    /// The upstreams whose ClusterIP note was made.
    noted: HashSet<String>,
}

/// How a path matches.
enum PathMatch {
    Exact(String),
    Prefix(String),
    /// ImplementationSpecific: an nginx prefix location (string prefix).
    Plain(String),
}

impl Translation {
    fn service(&mut self, o: &Object<'_>) {
        let spec = yaml::get(o.node, "spec");
        let cluster_ip = spec.and_then(|s| yaml::str_at(s, "clusterIP"));
        let kind = spec.and_then(|s| yaml::str_at(s, "type"));
        let mut ports = Vec::new();
        for p in yaml::items(spec.and_then(|s| yaml::get(s, "ports"))) {
            let port = yaml::str_at(p, "port").and_then(|v| v.parse().ok());
            if let Some(port) = port {
                ports.push((yaml::str_at(p, "name"), port, yaml::str_at(p, "targetPort")));
            }
        }
        let affinity = spec.and_then(|s| yaml::get(s, "sessionAffinity"));
        let client_ip = affinity
            .filter(|a| yaml::text(a).as_deref() == Some("ClientIP"))
            .map(|a| o.origin(a));
        let timeout = spec
            .and_then(|s| yaml::path(s, &["sessionAffinityConfig", "clientIP", "timeoutSeconds"]))
            .map(|n| o.origin(n));
        self.services.insert(
            (o.namespace.clone(), o.name.clone()),
            Service {
                headless: cluster_ip.as_deref() == Some("None"),
                external: (kind.as_deref() == Some("ExternalName"))
                    .then(|| spec.and_then(|s| yaml::str_at(s, "externalName")))
                    .flatten(),
                ports,
                client_ip,
                timeout,
            },
        );
    }

    fn ingress(&mut self, o: &Object<'_>) {
        let at = o.at();
        let v1 = o.api == "networking.k8s.io/v1";
        if !v1 {
            self.out.note(&at, format!("apiVersion: {}", o.api), Carried::Info, format!(
                "{}: read as networking.k8s.io/v1 (serviceName/servicePort as service.name/port; no pathType as ImplementationSpecific); this version is gone since Kubernetes 1.22", o.id()));
        }
        let meta = yaml::get(o.node, "metadata");
        self.class(o, meta);
        let s = annotations::read(&mut self.out, o.file, meta);
        let spec = yaml::get(o.node, "spec");
        if s.canary {
            // Its notes (canary, canary-weight…) say so.
            return;
        }

        // TLS: the Secrets.
        for t in yaml::items(spec.and_then(|s| yaml::get(s, "tls"))) {
            let hosts: Vec<String> = yaml::items(yaml::get(t, "hosts"))
                .iter()
                .filter_map(yaml::text)
                .collect();
            match yaml::str_at(t, "secretName") {
                Some(secret) => {
                    self.out.note(&o.origin(t), "tls.secretName", Carried::Info, format!(
                        "Secret {ns}/{secret} → listener https: mount it (a Secret volume gives tls.crt and tls.key) at {TLS_DIR}/{secret}/ beside the configuration file; the certificate is chosen by the names it carries (SNI), not by the hosts listed here",
                        ns = o.namespace));
                    self.tls.push((secret, hosts, o.lines(t)));
                }
                None => self.out.note(&o.origin(t), "tls", Carried::Dropped,
                    "no secretName: ingress-nginx serves its default certificate for these hosts; Switchyard has none, add a certificate to the https listener by hand"),
            }
        }
        let first_route = self.routes.len();

        let default =
            spec.and_then(|s| yaml::get(s, "defaultBackend").or_else(|| yaml::get(s, "backend")));
        let default_up = default.and_then(|b| self.backend(o, b, &s));
        let mut hosts_with_root = HashSet::new();
        let mut hosts = Vec::new();
        for rule in yaml::items(spec.and_then(|s| yaml::get(s, "rules"))) {
            let host = yaml::str_at(rule, "host");
            if !hosts.contains(&host) {
                hosts.push(host.clone());
            }
            let tls_host = host.as_ref().is_some_and(|h| self.tls_hosts.contains(h));
            for p in yaml::items(yaml::path(rule, &["http", "paths"])) {
                let path = yaml::str_at(p, "path").unwrap_or_else(|| "/".to_owned());
                let ty = yaml::str_at(p, "pathType");
                if path.contains(['(', '[', '$', '^', '*', '?', '|', '{', '\\']) {
                    self.out.note(&o.origin(p), "path", Carried::Dropped, format!(
                        "{path}: a regular expression (use-regex); Switchyard matches prefixes and exact paths only: route it by hand"));
                    continue;
                }
                if s.regex {
                    self.out.note(&o.origin(p), "path", Carried::Approximate, format!(
                        "{path}: with use-regex or rewrite-target ingress-nginx matches it as the regular expression ~* ^{path} (any case); Switchyard matches it as written (case-sensitive)"));
                }
                let m = match ty.as_deref() {
                    Some("Exact") => PathMatch::Exact(path.clone()),
                    Some("Prefix") => PathMatch::Prefix(path.clone()),
                    Some("ImplementationSpecific") | None => {
                        self.out.note(&o.origin(p), "pathType: ImplementationSpecific", Carried::Info, format!(
                            "{path}: ingress-nginx makes it an nginx prefix location (a string prefix: /foo matches /foobar too); translated so"));
                        PathMatch::Plain(path.clone())
                    }
                    Some(other) => {
                        self.out.note(
                            &o.origin(p),
                            format!("pathType: {other}"),
                            Carried::Dropped,
                            "not a pathType Kubernetes knows; the path is not routed",
                        );
                        continue;
                    }
                };
                if path == "/" && !matches!(m, PathMatch::Exact(_)) {
                    hosts_with_root.insert(host.clone());
                }
                let Some(backend) = yaml::get(p, "backend") else {
                    self.out.note(
                        &o.origin(p),
                        "backend",
                        Carried::Dropped,
                        "a path without a backend: not routed",
                    );
                    continue;
                };
                let Some(up) = self.backend(o, backend, &s) else {
                    continue;
                };
                let redirect = self.redirects(&s, tls_host, o, p);
                let what = format!(
                    "{} rule {} path {path}",
                    o.id(),
                    host.as_deref().unwrap_or("(any host)")
                );
                self.routes_for(o, p, &what, host.as_deref(), &m, &up, &s, redirect);
            }
        }
        if let (Some(up), Some(b)) = (default_up, default) {
            // ingress-nginx sends the paths of the Ingress's hosts that no rule
            // takes, and every host no Ingress names, to spec.defaultBackend.
            let tls_any = false;
            for host in hosts.iter().filter(|h| !hosts_with_root.contains(*h)) {
                let tls_host = host.as_ref().is_some_and(|h| self.tls_hosts.contains(h));
                let redirect = self.redirects(&s, tls_host, o, b);
                let what = format!(
                    "{} defaultBackend for {}",
                    o.id(),
                    host.as_deref().unwrap_or("(any host)")
                );
                self.routes_for(
                    o,
                    b,
                    &what,
                    host.as_deref(),
                    &PathMatch::Plain("/".into()),
                    &up,
                    &s,
                    redirect,
                );
            }
            if !self.catch_all && !hosts.contains(&None) {
                let redirect = self.redirects(&s, tls_any, o, b);
                let what = format!("{} defaultBackend for hosts no rule names", o.id());
                self.routes_for(
                    o,
                    b,
                    &what,
                    None,
                    &PathMatch::Plain("/".into()),
                    &up,
                    &s,
                    redirect,
                );
                self.catch_all = true;
            } else if self.catch_all {
                self.out.note(&o.origin(b), "defaultBackend", Carried::Dropped,
                    "another Ingress's defaultBackend already takes the hosts no rule names (ingress-nginx: the first one it reads); used for this Ingress's own hosts only");
            }
        }
        // ingress-nginx's limit zones are the Ingress's, shared by its paths.
        let limited = self.routes[first_route..]
            .iter()
            .filter(|b| b.get("rate_limit").is_some() || b.get("limit_conn").is_some())
            .count();
        if let (Some(at), true) = (&s.limits_at, limited > 1) {
            self.out.note(at, format!("{}limit-*", annotations::PREFIX), Carried::Approximate, format!(
                "ingress-nginx counts one budget per client address for all paths of the Ingress; Switchyard counts per route, and the Ingress became {limited} routes (a Prefix path is two), so a client may get up to {limited} times the rate across them; merge the paths into fewer routes by hand if that matters"));
        }
    }

    /// The IngressClass check: only ingress-nginx's annotations are understood.
    fn class(&mut self, o: &Object<'_>, meta: Option<&Node>) {
        let by_spec = yaml::path(o.node, &["spec", "ingressClassName"]);
        let by_ann = meta
            .and_then(|m| yaml::get(m, "annotations"))
            .and_then(|a| yaml::get(a, "kubernetes.io/ingress.class"));
        if let (Some(_), Some(a)) = (by_spec, by_ann) {
            self.out.note(
                &o.origin(a),
                "kubernetes.io/ingress.class",
                Carried::Info,
                "deprecated; spec.ingressClassName is set too and wins",
            );
        }
        let Some(n) = by_spec.or(by_ann) else {
            self.out.note(&o.at(), "ingressClassName", Carried::Info, format!(
                "{}: no class: served by the cluster's default IngressClass; read as ingress-nginx's", o.id()));
            return;
        };
        let class = yaml::text(n).unwrap_or_default();
        let at = o.origin(n);
        if by_ann.is_some() && by_spec.is_none() {
            self.out.note(&at, "kubernetes.io/ingress.class", Carried::Info,
                format!("class {class:?} (the deprecated annotation; spec.ingressClassName replaces it)"));
        }
        match self.classes.get(&class) {
            Some((Some(c), _)) if c == NGINX_CONTROLLER => {}
            Some((c, _)) => self.out.note(&at, "ingressClassName", Carried::Approximate, format!(
                "class {class:?} belongs to controller {}: only ingress-nginx's annotations are understood; the rules are translated, other controllers' annotations are reported and not carried",
                c.as_deref().unwrap_or("(none)"))),
            None if class == "nginx" => {}
            None => self.out.note(&at, "ingressClassName", Carried::Info, format!(
                "class {class:?}: no IngressClass manifest given; assumed to be ingress-nginx (only its annotations are understood)")),
        }
    }

    /// Whether the routes of a path redirect HTTP to HTTPS.
    fn redirects(&mut self, s: &Settings, tls_host: bool, o: &Object<'_>, at: &Node) -> bool {
        let wanted = s.force_ssl_redirect || (s.ssl_redirect && tls_host);
        if wanted && !self.https {
            self.out.note(&o.origin(at), format!("{}force-ssl-redirect", annotations::PREFIX), Carried::Dropped,
                "no tls section, so no https listener to redirect to: served on http; add an https listener and the redirect by hand");
            return false;
        }
        wanted
    }

    /// The upstream a backend names, made on first use.
    fn backend(&mut self, o: &Object<'_>, b: &Node, s: &Settings) -> Option<String> {
        if let Some(r) = yaml::get(b, "resource") {
            self.out.note(
                &o.origin(r),
                "backend.resource",
                Carried::Dropped,
                "a resource backend (not a Service) cannot be proxied to; not routed",
            );
            return None;
        }
        let (name, port) = match yaml::get(b, "service") {
            Some(svc) => (
                yaml::str_at(svc, "name"),
                yaml::get(svc, "port")
                    .and_then(|p| yaml::str_at(p, "number").or_else(|| yaml::str_at(p, "name"))),
            ),
            None => (
                yaml::str_at(b, "serviceName"),
                yaml::str_at(b, "servicePort"),
            ),
        };
        let (Some(name), Some(port)) = (name, port) else {
            self.out.note(
                &o.origin(b),
                "backend",
                Carried::Dropped,
                "no service name and port: not routed",
            );
            return None;
        };
        let server = self.server(o, b, &name, &port);
        let mut u = s.clone();
        if server.client_ip && u.balance.is_none() && u.sticky.is_none() {
            u.balance = Some(("hash".to_owned(), Some("client_ip".to_owned())));
        }
        let identity = format!("{}|{}", server.label, u.upstream_key());
        let base: String = format!("{}-{}-{}", o.namespace, name, port)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut uname = base.clone();
        if let Some((id, _)) = self.upstreams.get(&uname) {
            if *id == identity {
                return Some(uname);
            }
            uname = format!("{base}-{}", o.name);
            if self.upstreams.contains_key(&uname) {
                return Some(uname);
            }
        }
        let mut block = Block::new(
            format!("[upstream.{}]", out::key(&uname)),
            format!("from {} ({} backend {name}:{port})", o.lines(b), o.id()),
        );
        if let Some((bal, key)) = &u.balance {
            block.set("balance", bal.as_str());
            if let Some(k) = key {
                block.set("hash_key", k.as_str());
            }
        }
        if let Some(st) = &u.sticky {
            block.set_commented("sticky", st.clone(), "affinity: cookie");
        }
        if let Some(p) = u.protocol {
            block.set_commented("protocol", p, "backend-protocol");
        }
        if u.upstream_tls {
            block.set_commented(
                "tls",
                out::table([("verify", toml::Value::from(false))]),
                "backend-protocol HTTPS/GRPCS: ingress-nginx does not verify the upstream's certificate either (proxy-ssl-verify off)",
            );
        }
        block.set("servers", toml::Value::Array(vec![server.entry]));
        if server.cluster_ip && !s.service_upstream && self.noted.insert(uname.clone()) {
            let carried = if u.balance.is_some() || u.sticky.is_some() {
                Carried::Approximate
            } else {
                Carried::Info
            };
            let what = if server.known {
                "a ClusterIP Service's name"
            } else {
                "taken for a ClusterIP Service's name (its manifest was not given)"
            };
            self.out.note(&o.origin(b), "backend.service", carried, format!(
                "{name}.{}.svc.cluster.local is {what}: it resolves to one address and kube-proxy picks the pod, where ingress-nginx balances over the pods itself; make the Service headless (clusterIP: None) so the name lists the pods (the port is then the pods' port)",
                o.namespace));
        }
        self.upstream_order.push(uname.clone());
        self.upstreams.insert(uname.clone(), (identity, block));
        Some(uname)
    }

    /// The server entry of Service `name` at `port` (a number or a port name).
    fn server(&mut self, o: &Object<'_>, b: &Node, name: &str, port: &str) -> Server {
        let dns = format!("{name}.{}.svc.cluster.local", o.namespace);
        let addr = |host: &str, port: &str| {
            out::table([
                ("addr", toml::Value::from(format!("{host}:{port}"))),
                ("resolve", toml::Value::from(true)),
            ])
        };
        let numeric = port.parse::<i64>().ok();
        let Some(svc) = self.services.get(&(o.namespace.clone(), name.to_owned())) else {
            if numeric.is_some() {
                return Server {
                    entry: addr(&dns, port),
                    label: format!("{dns}:{port}"),
                    cluster_ip: true,
                    client_ip: false,
                    known: false,
                };
            }
            // A named port without the manifest: the Service's SRV record for it
            // gives the port (and, for a headless Service, each pod).
            let srv = format!("_{port}._tcp.{dns}");
            self.out.note(&o.origin(b), "backend.service.port.name", Carried::Info, format!(
                "port {port:?} of Service {name} (its manifest was not given): looked up as the SRV record {srv}, which names the port"));
            return Server {
                entry: out::table([
                    ("service", toml::Value::from(srv.clone())),
                    ("resolve", toml::Value::from(true)),
                ]),
                label: srv,
                cluster_ip: true,
                client_ip: false,
                known: false,
            };
        };
        let client_ip = svc.client_ip.clone();
        if let Some(at) = &client_ip {
            self.out.note(at, "sessionAffinity: ClientIP", Carried::Info, format!(
                "Service {name} → balance = \"hash\", hash_key = \"client_ip\" on its upstreams (unless the Ingress balances otherwise): each client address stays on one server while the servers stay"));
        }
        if let Some(at) = svc.timeout.clone() {
            self.out.note(&at, "sessionAffinityConfig.clientIP.timeoutSeconds", Carried::Approximate,
                "a hash has no timeout: a client stays on its server for as long as that server is up");
        }
        if let (Some(ext), Some(n)) = (svc.external.clone(), numeric) {
            // ExternalName: a CNAME to a name outside; the port as written.
            return Server {
                entry: addr(&ext, &n.to_string()),
                label: format!("{ext}:{n}"),
                cluster_ip: false,
                client_ip: client_ip.is_some(),
                known: true,
            };
        }
        let found = svc.ports.iter().find(|(pn, p, _)| match numeric {
            Some(n) => *p == n,
            None => pn.as_deref() == Some(port),
        });
        let Some((pname, number, target)) = found.cloned() else {
            self.out.note(&o.origin(b), "backend.service.port", Carried::Approximate, format!(
                "Service {name} has no port {port:?}: ingress-nginx would answer 503; written as is"));
            return Server {
                entry: addr(&dns, port),
                label: format!("{dns}:{port}"),
                cluster_ip: true,
                client_ip: client_ip.is_some(),
                known: true,
            };
        };
        if let Some(ext) = svc.external.clone() {
            return Server {
                entry: addr(&ext, &number.to_string()),
                label: format!("{ext}:{number}"),
                cluster_ip: false,
                client_ip: client_ip.is_some(),
                known: true,
            };
        }
        if !svc.headless {
            if numeric.is_none() {
                self.out.note(
                    &o.origin(b),
                    "backend.service.port.name",
                    Carried::Info,
                    format!("port {port:?} of Service {name} is {number}"),
                );
            }
            return Server {
                entry: addr(&dns, &number.to_string()),
                label: format!("{dns}:{number}"),
                cluster_ip: true,
                client_ip: client_ip.is_some(),
                known: true,
            };
        }
        // Headless: the name lists the pods, which listen on targetPort.
        let target = target.unwrap_or_else(|| number.to_string());
        if target.parse::<u16>().is_ok() {
            return Server {
                entry: addr(&dns, &target),
                label: format!("{dns}:{target}"),
                cluster_ip: false,
                client_ip: client_ip.is_some(),
                known: true,
            };
        }
        match pname {
            Some(pn) => {
                let srv = format!("_{pn}._tcp.{dns}");
                self.out.note(&o.origin(b), "backend.service.port", Carried::Info, format!(
                    "headless Service {name} sends port {number} ({pn}) to the pods' port {target:?}: looked up as the SRV record {srv}, which gives each pod with its port"));
                Server {
                    entry: out::table([
                        ("service", toml::Value::from(srv.clone())),
                        ("resolve", toml::Value::from(true)),
                    ]),
                    label: srv,
                    cluster_ip: false,
                    client_ip: client_ip.is_some(),
                    known: true,
                }
            }
            None => {
                self.out.note(&o.origin(b), "backend.service.port", Carried::Approximate, format!(
                    "headless Service {name} sends port {number} to the pods' port {target:?}, which only the pods know: written as {number}; put the pods' port number there"));
                Server {
                    entry: addr(&dns, &number.to_string()),
                    label: format!("{dns}:{number}"),
                    cluster_ip: false,
                    client_ip: client_ip.is_some(),
                    known: true,
                }
            }
        }
    }

    /// The routes of one path (two for a Prefix without its slash), on `https`
    /// with a redirect on `http` when `redirect`.
    #[allow(clippy::too_many_arguments)]
    fn routes_for(
        &mut self,
        o: &Object<'_>,
        n: &Node,
        what: &str,
        host: Option<&str>,
        m: &PathMatch,
        upstream: &str,
        s: &Settings,
        redirect: bool,
    ) {
        let matches: Vec<(&'static str, String)> = match m {
            PathMatch::Exact(p) => vec![("path_exact", p.clone())],
            PathMatch::Plain(p) => vec![("path", p.clone())],
            PathMatch::Prefix(p) if p.ends_with('/') => vec![("path", p.clone())],
            PathMatch::Prefix(p) => vec![("path_exact", p.clone()), ("path", format!("{p}/"))],
        };
        let from = format!("from {} ({what})", o.lines(n));
        for (key, path) in matches {
            let listeners: &[Option<&'static str>] = if redirect {
                &[Some("https"), Some("http")]
            } else {
                &[None]
            };
            // One Ingress path per host and path, whichever listeners it is on
            // (ingress-nginx merges the Ingresses of a host into one server).
            let id = (host.map(str::to_owned), key, path.clone());
            if let Some(first) = self.seen.get(&id) {
                self.out.note(&o.origin(n), "path", Carried::Dropped, format!(
                    "{path} on {} is routed already ({first}); ingress-nginx keeps the oldest Ingress's, the import the first one read",
                    host.unwrap_or("any host")));
                continue;
            }
            self.seen.insert(id, what.to_owned());
            for &l in listeners {
                let mut b = Block::new("[[route]]", from.clone());
                if let Some(l) = l {
                    b.set("listener", l);
                }
                if let Some(h) = host {
                    b.set("host", h);
                }
                b.set(key, path.as_str());
                if l == Some("http") {
                    b.set_commented(
                        "redirect",
                        out::table([
                            ("status", toml::Value::from(REDIRECT_STATUS)),
                            ("location", toml::Value::from("https://$host$request_uri")),
                        ]),
                        "ssl-redirect: ingress-nginx's 308 to HTTPS",
                    );
                } else {
                    b.set("upstream", upstream);
                    for (k, v, c) in &s.route {
                        match c {
                            Some(c) => b.set_commented(k, v.clone(), c.as_str()),
                            None => b.set(k, v.clone()),
                        };
                    }
                }
                self.routes.push(b);
            }
        }
    }

    fn finish(mut self) -> Imported {
        let mut http = Block::new("[[listener]]", "ingress-nginx's HTTP port");
        http.set("name", "http").set("listen", HTTP_LISTEN);
        self.out.doc.push(http);
        if let Some(((first, _, from), rest)) = self.tls.split_first() {
            let mut https = Block::new(
                "[[listener]]",
                "ingress-nginx's HTTPS port (the Ingresses' tls sections)",
            );
            https
                .set("name", "https")
                .set("listen", HTTPS_LISTEN)
                .set_commented("hsts", HSTS, "ingress-nginx's default hsts");
            self.out.doc.push(https);
            let mut tls = Block::new(
                "[listener.tls]",
                format!("from {from}: the Secret {first}, mounted beside this file"),
            );
            tls.set("cert", format!("{TLS_DIR}/{first}/tls.crt"))
                .set("key", format!("{TLS_DIR}/{first}/tls.key"));
            self.out.doc.push(tls);
            let mut done = HashSet::from([first.clone()]);
            for (secret, _, from) in rest {
                if !done.insert(secret.clone()) {
                    continue;
                }
                let mut sni = Block::new(
                    "[[listener.tls.sni]]",
                    format!("from {from}: the Secret {secret}"),
                );
                sni.set("cert", format!("{TLS_DIR}/{secret}/tls.crt"))
                    .set("key", format!("{TLS_DIR}/{secret}/tls.key"));
                self.out.doc.push(sni);
            }
        }
        for r in self.routes {
            self.out.doc.push(r);
        }
        for name in self.upstream_order {
            if let Some((_, b)) = self.upstreams.remove(&name) {
                self.out.doc.push(b);
            }
        }
        self.out
    }
}
