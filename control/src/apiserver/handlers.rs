//! Routing and the verbs on resources: get, list, create, update, patch, delete,
//! deletecollection (watch is in `watch`, subresources in `subresources`). Objects are JSON
//! values; kind-specific rules (defaults, validation, allocation) come from `validate` and the
//! admission steps here.

use super::auth::{self, Attributes, User};
use super::error::{ApiError, ApiResult, Cause};
use super::objects::{self, carry_over, check_type, prepare_create};
use super::patch::{self, PatchType};
use super::resources::{self, Resource};
use super::selectors::{FieldSelector, LabelSelector};
use super::table::{self, IncludeObject};
use super::{ApiServer, discovery, openapi, subresources, validate, watch};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A parsed request, authenticated.
pub struct Request {
    pub method: http::Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub user: User,
}

impl Request {
    pub fn param(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn wants_table(&self) -> bool {
        self.header("accept").contains("as=Table")
    }

    pub fn include_object(&self) -> IncludeObject {
        match self.param("includeObject") {
            Some("Object") => IncludeObject::Object,
            Some("None") => IncludeObject::None,
            _ => IncludeObject::Metadata,
        }
    }

    fn dry_run(&self) -> bool {
        self.param("dryRun").is_some_and(|d| d == "All")
    }

    /// The patch flavour named by Content-Type, or 415.
    pub fn patch_type(&self) -> ApiResult<PatchType> {
        PatchType::from_content_type(self.header("content-type")).ok_or_else(|| ApiError::UnsupportedMediaType {
            accepted: "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml".into(),
        })
    }

    /// The body as a JSON value, whatever its encoding.
    pub fn json_body(&self) -> ApiResult<Value> {
        let ct = self
            .header("content-type")
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        if self.body.is_empty() {
            return Err(ApiError::bad_request("the request body is empty"));
        }
        match ct.as_str() {
            "application/vnd.kubernetes.protobuf" => super::protobuf::decode(&self.body),
            "application/yaml" | "application/apply-patch+yaml" => {
                serde_yaml::from_slice::<Value>(&self.body).map_err(|e| {
                    ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
                })
            }
            ""
            | "application/json"
            | "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "*/*" => serde_json::from_slice(&self.body).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
            }),
            other => Err(ApiError::UnsupportedMediaType {
                accepted: format!(
                    "application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other})"
                ),
            }),
        }
    }
}

/// What a handler answers.
pub enum Reply {
    Json(u16, Value),
    Raw(u16, &'static str, Vec<u8>),
    /// A streamed body (watch events, followed logs) with its content type.
    Stream(&'static str, mpsc::Receiver<Bytes>),
}

/// The resource a path names.
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

fn parse_target(group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let lookup = |plural: &str| resources::find(group, version, plural).ok_or(ApiError::NoRoute);
    let owned = |s: &&str| s.to_string();
    let t = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !matches!(*plural, "status" | "finalize") || !tail.is_empty() =>
        {
            let r = lookup(plural)?;
            if !r.namespaced {
                return Err(ApiError::NoRoute);
            }
            Target {
                resource: r,
                namespace: Some(ns.to_string()),
                name: tail.first().map(owned),
                sub: tail.get(1).map(owned),
            }
        }
        [plural, tail @ ..] => {
            let r = lookup(plural)?;
            if r.namespaced && !tail.is_empty() {
                return Err(ApiError::NoRoute);
            }
            Target {
                resource: r,
                namespace: None,
                name: tail.first().map(owned),
                sub: tail.get(1).map(owned),
            }
        }
        [] => return Err(ApiError::NoRoute),
    };
    if rest.len() > 5 || (t.sub.is_some() && rest.len() > if t.namespace.is_some() { 5 } else { 3 })
    {
        return Err(ApiError::NoRoute);
    }
    Ok(t)
}

fn is_public(path: &str) -> bool {
    matches!(path, "/version" | "/healthz" | "/livez" | "/readyz")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// Routes one request.
pub async fn dispatch(api: &ApiServer, req: Request) -> ApiResult<Reply> {
    let path = req.path.trim_end_matches('/').to_string();
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    if is_public(&path) {
        return Ok(match path.as_str() {
            "/version" => Reply::Json(200, discovery::version()),
            _ => Reply::Raw(200, "text/plain", b"ok".to_vec()),
        });
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let Some(reply) = super::metrics::route(api, &req, &segs).await {
        return reply;
    }
    let anonymous_denied = || {
        auth::forbidden(
            &req.user,
            &Attributes {
                verb: "get",
                resource: None,
                subresource: None,
                namespace: None,
                name: None,
                node_selector: None,
            },
            None,
        )
    };
    let server_address = format!("{}:{}", api.settings.advertise_address, api.settings.port);
    let (group, version, rest) = match segs.as_slice() {
        ["api"] => {
            return if req.user.is_anonymous() {
                Err(anonymous_denied())
            } else {
                Ok(Reply::Json(200, discovery::api_versions(&server_address)))
            };
        }
        ["apis"] => {
            return if req.user.is_anonymous() {
                Err(anonymous_denied())
            } else {
                Ok(Reply::Json(
                    200,
                    discovery::api_group_list(&[(super::metrics::GROUP, super::metrics::VERSION)]),
                ))
            };
        }
        ["openapi", "v2"] => {
            return Ok(Reply::Raw(
                200,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                openapi::v2_protobuf(),
            ));
        }
        ["openapi", "v3"] => return Ok(Reply::Json(200, openapi::v3_index())),
        ["openapi", "v3", gv @ ..] => {
            return openapi::v3_group_version(&gv.join("/"))
                .map(|d| Reply::Json(200, d))
                .ok_or(ApiError::NoRoute);
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group] => {
            return if req.user.is_anonymous() {
                Err(anonymous_denied())
            } else {
                discovery::api_group(group)
                    .map(|g| Reply::Json(200, g))
                    .ok_or(ApiError::NoRoute)
            };
        }
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::NoRoute),
    };
    if rest.is_empty() {
        if req.user.is_anonymous() {
            return Err(anonymous_denied());
        }
        return discovery::resource_list(group, version)
            .map(|l| Reply::Json(200, l))
            .ok_or(ApiError::NoRoute);
    }
    let target = parse_target(group, version, rest)?;
    let watching = req.param("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (&req.method, target.name.is_some()) {
        (&http::Method::GET, false) if watching => "watch",
        (&http::Method::GET, false) => "list",
        (&http::Method::GET, true) => "get",
        (&http::Method::POST, false) => "create",
        (&http::Method::POST, true) if target.sub.is_some() => "create",
        (&http::Method::PUT, true) => "update",
        (&http::Method::PATCH, true) => "patch",
        (&http::Method::DELETE, true) => "delete",
        (&http::Method::DELETE, false) => "deletecollection",
        _ => return Err(ApiError::MethodNotAllowed),
    };
    let node_selector = req
        .param("fieldSelector")
        .and_then(|f| FieldSelector::parse(f, "Pod").ok())
        .and_then(|f| f.equals("spec.nodeName").map(str::to_string));
    auth::authorize(
        api,
        &req.user,
        &Attributes {
            verb,
            resource: Some(target.resource),
            subresource: target.sub.as_deref(),
            namespace: target.namespace.as_deref(),
            name: target.name.as_deref(),
            node_selector: node_selector.as_deref(),
        },
    )
    .await?;
    if let Some(sub) = target.sub.clone() {
        return subresources::handle(api, &req, &target, &sub, verb).await;
    }
    let r = target.resource;
    let ns = target.namespace.as_deref();
    match verb {
        "get" => {
            let obj = get(api, r, ns, target.name.as_deref().unwrap_or_default()).await?;
            Ok(if req.wants_table() {
                Reply::Json(
                    200,
                    table::table(r.kind, &[obj], json!({}), req.include_object(), true),
                )
            } else {
                Reply::Json(200, obj)
            })
        }
        "list" => list(api, &req, r, ns).await,
        "watch" => watch::watch(api, &req, r, ns).await,
        "create" => {
            let mut obj = req.json_body()?;
            let created = create(api, r, ns, &mut obj, &req.user, req.dry_run()).await?;
            Ok(Reply::Json(201, created))
        }
        "update" => {
            let body = req.json_body()?;
            let name = target.name.clone().unwrap_or_default();
            Ok(Reply::Json(
                200,
                update(api, r, ns, &name, body, req.dry_run()).await?,
            ))
        }
        "patch" => {
            let name = target.name.clone().unwrap_or_default();
            patch_object(api, &req, r, ns, &name).await
        }
        "delete" => {
            let name = target.name.clone().unwrap_or_default();
            let opts = delete_options(&req)?;
            Ok(Reply::Json(
                200,
                delete(api, r, ns, &name, &opts, req.dry_run()).await?,
            ))
        }
        _ => delete_collection(api, &req, r, ns).await,
    }
}

pub async fn get(api: &ApiServer, r: &Resource, ns: Option<&str>, name: &str) -> ApiResult<Value> {
    let kv = api
        .store
        .get(&r.key(ns, name))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound {
            resource: super::error::qualified(r.plural, r.group),
            name: name.into(),
            group: r.group.into(),
        })?;
    objects::decode(r, &kv)
}

#[derive(Clone)]
pub struct Selection {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selection {
    pub fn from_request(req: &Request, r: &Resource) -> ApiResult<Selection> {
        Ok(Selection {
            labels: LabelSelector::parse(req.param("labelSelector").unwrap_or_default())?,
            fields: FieldSelector::parse(req.param("fieldSelector").unwrap_or_default(), r.kind)?,
        })
    }

    pub fn matches(&self, kind: &str, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(kind, obj)
    }

    /// Narrows a list to one namespace when the field selector pins it.
    pub fn prefix(&self, r: &Resource, ns: Option<&str>) -> String {
        let ns = ns.or(self.fields.equals("metadata.namespace"));
        r.list_prefix(ns)
    }
}

/// Every matching object and the revision they were read at.
pub async fn list_objects(
    api: &ApiServer,
    r: &Resource,
    prefix: &str,
    sel: &Selection,
) -> ApiResult<(Vec<Value>, i64)> {
    let page = api
        .store
        .list(prefix, None, 0)
        .await
        .map_err(ApiError::internal)?;
    let mut out = Vec::with_capacity(page.items.len());
    for kv in &page.items {
        let obj = objects::decode(r, kv)?;
        if sel.matches(r.kind, &obj) {
            out.push(obj);
        }
    }
    Ok((out, page.revision))
}

async fn list(
    api: &ApiServer,
    req: &Request,
    r: &'static Resource,
    ns: Option<&str>,
) -> ApiResult<Reply> {
    let sel = Selection::from_request(req, r)?;
    let prefix = sel.prefix(r, ns);
    let limit: usize = req.param("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let start = match req.param("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|k| k.starts_with(&prefix))
                .ok_or_else(|| ApiError::bad_request("continue key is not valid: the token was not issued by this server for this list"))?,
        ),
        None => None,
    };
    let page = api
        .store
        .list(&prefix, start.as_deref(), limit)
        .await
        .map_err(ApiError::internal)?;
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if page.more
        && let Some(last) = page.items.last()
    {
        meta["continue"] =
            json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&last.key));
    }
    let (table, include) = (req.wants_table(), req.include_object());
    // Each item is decoded, filtered and written out in turn, so a large list costs about
    // the size of its answer, not the size of every object as a JSON tree.
    let body = tokio::task::spawn_blocking(move || -> ApiResult<Vec<u8>> {
        let mut out = Vec::with_capacity(page.items.iter().map(|kv| kv.value.len() + 64).sum::<usize>() + 256);
        let head = if table {
            json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": table::column_definitions(r.kind)})
        } else {
            json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": meta})
        };
        let head = serde_json::to_vec(&head).map_err(ApiError::internal)?;
        out.extend_from_slice(&head[..head.len() - 1]);
        out.extend_from_slice(if table { b",\"rows\":[" } else { b",\"items\":[" });
        let now = chrono::Utc::now();
        let mut first = true;
        for kv in &page.items {
            let obj = objects::decode(r, kv)?;
            if !sel.matches(r.kind, &obj) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            let item = if table { table::row(r.kind, &obj, include, now) } else { obj };
            serde_json::to_writer(&mut out, &item).map_err(ApiError::internal)?;
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Reply::Raw(200, "application/json", body))
}

async fn namespace_admission(api: &ApiServer, r: &Resource, ns: Option<&str>) -> ApiResult<()> {
    let Some(ns) = ns.filter(|_| r.namespaced) else {
        return Ok(());
    };
    let nsr = resources::find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("namespaces resource missing"))?;
    let obj = get(api, nsr, None, ns).await?;
    if obj.pointer("/metadata/deletionTimestamp").is_some() && r.plural != "events" {
        return Err(ApiError::Forbidden {
            message: format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                r.plural, ""
            ),
            kind: r.plural.into(),
            name: String::new(),
        });
    }
    Ok(())
}

fn invalid(r: &Resource, obj: &Value, causes: Vec<Cause>) -> ApiError {
    ApiError::Invalid {
        kind: r.kind.into(),
        name: objects::name(obj).into(),
        group: r.group.into(),
        causes,
    }
}

/// Create, as POST does it: metadata, admission, defaults, validation, store.
pub async fn create(
    api: &ApiServer,
    r: &Resource,
    ns: Option<&str>,
    obj: &mut Value,
    user: &User,
    dry_run: bool,
) -> ApiResult<Value> {
    check_type(r, obj)?;
    prepare_create(r, obj, ns)?;
    if objects::name(obj).is_empty() {
        return Err(invalid(
            r,
            obj,
            vec![Cause {
                field: "metadata.name".into(),
                reason: "FieldValueRequired",
                message: "Required value: name or generateName is required".into(),
            }],
        ));
    }
    auth::node_restriction(user, r, obj)?;
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_string);
    namespace_admission(api, r, ns.as_deref()).await?;
    match r.kind {
        "Pod" => {}
        "Deployment" | "ReplicaSet" | "DaemonSet" => obj["status"] = json!({}),
        "CertificateSigningRequest" => {
            obj["spec"]["username"] = json!(user.name);
            obj["spec"]["groups"] = json!(user.groups);
            obj["status"] = json!({});
        }
        _ => {}
    }
    let causes =
        validate::default_and_validate(r.kind, obj, api.settings.default_toleration_seconds);
    if !causes.is_empty() {
        return Err(invalid(r, obj, causes));
    }
    if r.kind == "Pod" {
        obj["status"] = validate::initial_pod_status(obj);
    }
    let _alloc = if r.kind == "Service" {
        Some(api.alloc_lock.lock().await)
    } else {
        None
    };
    if r.kind == "Service" {
        subresources::allocate_service(api, obj)
            .await
            .map_err(|c| invalid(r, obj, c))?;
    }
    if dry_run {
        return Ok(obj.clone());
    }
    let name = objects::name(obj).to_string();
    let kv = api
        .store
        .create(&r.key(ns.as_deref(), &name), objects::encode(obj)?)
        .await
        .map_err(|e| ApiError::from_store(e, r.plural, r.group, &name))?;
    let created = objects::decode(r, &kv)?;
    after_write(api, r, &created).await;
    Ok(created)
}

/// Hooks run after a write: the bootstrap signer keeps `cluster-info` signed for every token.
async fn after_write(api: &ApiServer, r: &Resource, obj: &Value) {
    if r.kind == "Secret"
        && obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some("kube-system")
        && objects::name(obj).starts_with("bootstrap-token-")
        && let Err(e) = crate::tokens::sign_cluster_info(
            api.store.as_ref(),
            &api.settings.ca_pem,
            &crate::tokens::server_url(&api.settings),
        )
        .await
    {
        tracing::warn!(error = %e, "could not re-sign cluster-info");
    }
}

/// How a read-modify-write treats conflicts and deletion state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A client's PUT: a stale resourceVersion is the client's conflict.
    Put,
    /// Patches and server-side changes: re-read and retry on conflicts.
    Retry,
    /// The deletion itself, which sets deletionTimestamp.
    Delete,
}

/// The shared read-modify-write loop of update, patch and the subresources. `f` gets the
/// current object and returns the new one; conflicts are retried when `retry` is set.
pub async fn guaranteed_update<F>(
    api: &ApiServer,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
    mode: Mode,
    dry_run: bool,
    mut f: F,
) -> ApiResult<Value>
where
    F: FnMut(&Value) -> ApiResult<Value>,
{
    let key = r.key(ns, name);
    for _ in 0..8 {
        let current = get(api, r, ns, name).await?;
        let rev = objects::resource_version(&current).unwrap_or(0);
        let mut new = f(&current)?;
        check_type(r, &mut new)?;
        carry_over(r, &mut new, &current, mode == Mode::Delete);
        let causes = validate::default_and_validate(
            r.kind,
            &mut new,
            api.settings.default_toleration_seconds,
        );
        let mut causes = causes;
        causes.extend(subresources::immutable_fields(r.kind, &new, &current));
        if !causes.is_empty() {
            return Err(invalid(r, &new, causes));
        }
        if dry_run {
            return Ok(new);
        }
        match api.store.update(&key, rev, objects::encode(&new)?).await {
            Ok(kv) => {
                let updated = objects::decode(r, &kv)?;
                if objects::deletion_complete(&updated) {
                    let _ = api.store.delete(&key, Some(kv.mod_rev)).await;
                }
                after_write(api, r, &updated).await;
                return Ok(updated);
            }
            Err(crate::store::StoreError::Conflict { .. }) if mode != Mode::Put => continue,
            Err(e) => return Err(ApiError::from_store(e, r.plural, r.group, name)),
        }
    }
    Err(ApiError::from_store(
        crate::store::StoreError::Conflict {
            key,
            expected: 0,
            actual: 0,
        },
        r.plural,
        r.group,
        name,
    ))
}

/// PUT: the body replaces the object, except status (kinds with a status subresource).
pub async fn update(
    api: &ApiServer,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
    body: Value,
    dry_run: bool,
) -> ApiResult<Value> {
    let mut body = body;
    check_type(r, &mut body)?;
    if objects::name(&body) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            objects::name(&body)
        )));
    }
    let wanted_rev = objects::resource_version(&body);
    let has_status = r.subresources.contains(&"status");
    guaranteed_update(api, r, ns, name, Mode::Put, dry_run, |cur| {
        if let Some(want) = wanted_rev
            && Some(want) != objects::resource_version(cur)
        {
            return Err(ApiError::from_store(
                crate::store::StoreError::Conflict {
                    key: String::new(),
                    expected: want,
                    actual: 0,
                },
                r.plural,
                r.group,
                name,
            ));
        }
        let mut new = body.clone();
        if has_status {
            keep_status(&mut new, cur);
        }
        Ok(new)
    })
    .await
}

async fn patch_object(
    api: &ApiServer,
    req: &Request,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
) -> ApiResult<Reply> {
    let ty = req.patch_type()?;
    let body = req.json_body()?;
    let has_status = r.subresources.contains(&"status");
    if ty == PatchType::Apply {
        // Server-side apply, simplified: create when absent, else merge the applied config.
        if get(api, r, ns, name).await.is_err() {
            let mut obj = body.clone();
            return Ok(Reply::Json(
                201,
                create(api, r, ns, &mut obj, &req.user, req.dry_run()).await?,
            ));
        }
    }
    let out = guaranteed_update(api, r, ns, name, Mode::Retry, req.dry_run(), |cur| {
        let mut new = patch::apply(true, ty, cur, &body)?;
        if has_status {
            keep_status(&mut new, cur);
        }
        if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        Ok(new)
    })
    .await?;
    Ok(Reply::Json(200, out))
}

/// The main resource of a kind with a status subresource never changes status.
fn keep_status(new: &mut Value, cur: &Value) {
    match cur.get("status") {
        Some(s) => new["status"] = s.clone(),
        None => {
            if let Some(o) = new.as_object_mut() {
                o.remove("status");
            }
        }
    }
}

/// DeleteOptions from the body and the query.
pub struct DeleteOptions {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

fn delete_options(req: &Request) -> ApiResult<DeleteOptions> {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        req.json_body()?
    };
    let mut propagation = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_string);
    if body.get("orphanDependents").and_then(Value::as_bool) == Some(true)
        || req.param("orphanDependents") == Some("true")
    {
        propagation = Some("Orphan".into());
    }
    if let Some(p) = req.param("propagationPolicy") {
        propagation = Some(p.to_string());
    }
    if let Some(p) = propagation.as_deref()
        && !["Orphan", "Background", "Foreground"].contains(&p)
    {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy \"{p}\" is not one of Orphan, Background, Foreground"
        )));
    }
    let grace = req
        .param("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or(body.get("gracePeriodSeconds").and_then(Value::as_i64));
    Ok(DeleteOptions {
        grace,
        propagation,
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// DELETE: finalizers and graceful pod termination mark the object; otherwise it goes at once.
pub async fn delete(
    api: &ApiServer,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
    dry_run: bool,
) -> ApiResult<Value> {
    // Without preconditions a concurrent write is not the client's conflict: decide again on
    // the new version, as kube-apiserver's deletion does.
    let mut attempts = 0;
    loop {
        match delete_once(api, r, ns, name, opts, dry_run).await {
            Err(ApiError::Conflict { .. })
                if opts.uid.is_none() && opts.resource_version.is_none() && attempts < 8 =>
            {
                attempts += 1;
            }
            other => return other,
        }
    }
}

async fn delete_once(
    api: &ApiServer,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
    dry_run: bool,
) -> ApiResult<Value> {
    if r.kind == "Namespace" && SYSTEM_NAMESPACES.contains(&name) {
        return Err(ApiError::Forbidden {
            message: format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            ),
            kind: "namespaces".into(),
            name: name.into(),
        });
    }
    let current = get(api, r, ns, name).await?;
    let conflict = |what: &str, want: &str, got: &str| ApiError::Conflict {
        resource: r.plural.into(),
        name: name.into(),
        group: r.group.into(),
        message: format!(
            "Precondition failed: {what} in precondition: {want}, {what} in object meta: {got}"
        ),
    };
    if let Some(uid) = &opts.uid {
        let got = current
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if uid != got {
            return Err(conflict("UID", uid, got));
        }
    }
    if let Some(rv) = &opts.resource_version {
        let got = current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if rv != got {
            return Err(conflict("ResourceVersion", rv, got));
        }
    }
    let mut add = Vec::new();
    match opts.propagation.as_deref() {
        Some("Foreground") => add.push("foregroundDeletion"),
        Some("Orphan") => add.push("orphan"),
        _ => {}
    }
    let bound_pod = r.kind == "Pod"
        && current
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
    let grace = if bound_pod {
        let spec_grace = current
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30);
        opts.grace.unwrap_or(spec_grace).max(0)
    } else {
        0
    };
    let namespace_pending = r.kind == "Namespace"
        && current
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    let existing = objects::finalizers(&current);
    let already = current.pointer("/metadata/deletionTimestamp").is_some();
    if existing.is_empty() && add.is_empty() && grace == 0 && !namespace_pending {
        if dry_run {
            return Ok(current);
        }
        let rev = objects::resource_version(&current);
        api.store
            .delete(&r.key(ns, name), rev)
            .await
            .map_err(|e| ApiError::from_store(e, r.plural, r.group, name))?;
        after_write(api, r, &current).await;
        return Ok(current);
    }
    if already && add.is_empty() && opts.grace.is_none() {
        return Ok(current);
    }
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(grace);
    guaranteed_update(api, r, ns, name, Mode::Delete, dry_run, |cur| {
        let mut new = cur.clone();
        let meta = &mut new["metadata"];
        let mut fins = objects::finalizers(cur);
        for f in &add {
            if !fins.iter().any(|x| x == f) {
                fins.push((*f).to_string());
            }
        }
        if !fins.is_empty() {
            meta["finalizers"] = json!(fins);
        }
        let keep_earlier = meta
            .get("deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_some_and(|g| g <= grace);
        if !keep_earlier || meta.get("deletionTimestamp").is_none() {
            meta["deletionTimestamp"] =
                json!(deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            meta["deletionGracePeriodSeconds"] = json!(grace);
        }
        if r.kind == "Namespace" {
            new["status"]["phase"] = json!("Terminating");
        }
        Ok(new)
    })
    .await
}

async fn delete_collection(
    api: &ApiServer,
    req: &Request,
    r: &Resource,
    ns: Option<&str>,
) -> ApiResult<Reply> {
    let sel = Selection::from_request(req, r)?;
    let (objs, rev) = list_objects(api, r, &sel.prefix(r, ns), &sel).await?;
    let opts = delete_options(req)?;
    let mut out = Vec::new();
    for obj in objs {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        match delete(
            api,
            r,
            ns.as_deref(),
            objects::name(&obj),
            &opts,
            req.dry_run(),
        )
        .await
        {
            Ok(v) => out.push(v),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Reply::Json(
        200,
        json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": out}),
    ))
}
