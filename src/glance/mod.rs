//! Glance (OpenStack Image service v2). Authentication, clouds.yaml/secure.yaml and the service
//! catalog come from `openstack_sdk`; the image calls themselves go through kiln's blocking
//! HTTP client with the session's token, for control over streaming, progress, filters that
//! the generated bindings lack (custom properties), and Glance's JSON error messages.

pub mod publish;
pub use crate::vocab::{
    GLANCE_CORE_ATTRIBUTES as CORE_ATTRIBUTES, GLANCE_READ_ONLY_ATTRIBUTES as READ_ONLY_ATTRIBUTES,
};
mod transfer;

pub use transfer::{verify, Transferred, UploadOptions};

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

/// PATCH bodies are JSON Patch in Glance's own media type.
const PATCH_TYPE: &str = "application/openstack-images-v2.1-json-patch";

#[derive(Debug, thiserror::Error)]
pub enum GlanceError {
    #[error("cloud configuration: {0}")]
    Config(String),
    #[error("authenticating to {cloud}: {message}")]
    Auth { cloud: String, message: String },
    #[error("Glance {method} {path}: HTTP {status}: {message}{hint}")]
    Http {
        method: String,
        path: String,
        status: u16,
        message: String,
        hint: String,
    },
    #[error("Glance {method} {path}: {message}")]
    Transport {
        method: String,
        path: String,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    /// The data went in but is not what it should be, or an import failed.
    #[error("image {id}: {message}")]
    Verify { id: String, message: String },
    /// A failure after kiln created a record, and what became of that record.
    #[error("{source}; {note}")]
    Cleanup {
        source: Box<GlanceError>,
        note: String,
    },
}

impl GlanceError {
    /// Invalid input (exit 2) rather than a failed operation: unknown image names, bad cloud
    /// configuration.
    pub fn is_user_error(&self) -> bool {
        match self {
            GlanceError::Config(_) | GlanceError::NotFound(_) => true,
            // 415: the data is not in the declared disk_format.
            GlanceError::Http { status, .. } => *status == 415,
            GlanceError::Cleanup { source, .. } => source.is_user_error(),
            _ => false,
        }
    }
}

/// A transport error of `method path` (no answer, a broken connection, cancellation).
fn transport(method: &str, path: &str, message: String) -> GlanceError {
    GlanceError::Transport {
        method: method.into(),
        path: path.into(),
        message,
    }
}

/// An authenticated session with the image endpoint.
pub struct Glance {
    /// Base URL of the image service, without a trailing slash (e.g. http://host:9292).
    pub endpoint: String,
    token: SecretString,
    http: reqwest::blocking::Client,
    /// How long a request may go without progress (no answer, no byte accepted).
    stall: std::time::Duration,
    /// The cloud's name, for messages.
    pub cloud: String,
    /// The region whose endpoint this session uses (the cloud's `region_name` unless another
    /// was asked for; none: the catalog's only one).
    pub region: Option<String>,
    /// The token's project (owner of the images this session creates).
    pub project_id: Option<String>,
    /// The environment's settings (page size, cleanup timeout).
    pub env: crate::tunables::GlanceEnv,
}

impl std::fmt::Debug for Glance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Glance")
            .field("endpoint", &self.endpoint)
            .field("cloud", &self.cloud)
            .finish_non_exhaustive()
    }
}

/// `KILN_GLANCE_TIMEOUT` (seconds, default 120): how long any Glance request may make no
/// progress before kiln gives up on it.
fn stall_timeout(setting: Option<&str>) -> Result<std::time::Duration, String> {
    match setting {
        None => Ok(std::time::Duration::from_secs(120)),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=86_400).contains(&n) => Ok(std::time::Duration::from_secs(n)),
            _ => Err(format!(
                "KILN_GLANCE_TIMEOUT={v}: expected whole seconds from 1 to 86400"
            )),
        },
    }
}

/// The HTTP client for the image endpoint, with the cloud's TLS settings (`cacert`, `verify`
/// from clouds.yaml or OS_CACERT, as the SDK uses them for Keystone).
fn http_client(
    home: Option<&std::path::Path>,
    cacert: Option<&str>,
    verify: Option<bool>,
    stall: std::time::Duration,
) -> Result<reqwest::blocking::Client, String> {
    // No redirects: the token travels in X-Auth-Token, which a redirect to another host
    // would carry along (only standard credentials headers are dropped on the way).
    // No overall timeout (an upload takes as long as it takes); a dead peer is noticed by
    // TCP (keepalive, unacknowledged data) and a silent one by the per-request stall limit.
    let mut b = reqwest::blocking::Client::builder()
        .timeout(None)
        .connect_timeout(std::time::Duration::from_secs(10))
        .tcp_keepalive(std::time::Duration::from_secs(15))
        .tcp_user_timeout(stall)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = cacert {
        let expanded = match path.strip_prefix("~/") {
            Some(rest) => home.map(|h| h.join(rest)).unwrap_or_else(|| path.into()),
            None => path.into(),
        };
        let pem =
            std::fs::read(&expanded).map_err(|e| format!("cacert {}: {e}", expanded.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("cacert {}: {e}", expanded.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "cacert {}: no PEM certificate in it",
                expanded.display()
            ));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if verify == Some(false) {
        tracing::warn!("TLS certificates of the image endpoint are not verified (verify: false)");
        b = b.tls_danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| e.to_string())
}

/// Glance's message from an error body (`{"message": …}`, HTML tags dropped), or the body.
pub fn error_message(body: &str) -> String {
    let raw = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("error").and_then(|e| e.get("message")))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.to_string());
    let mut out = String::new();
    let mut in_tag = false;
    for c in raw.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What to try next for an HTTP status.
pub fn hint(status: u16) -> &'static str {
    match status {
        401 => " (check the credentials of the cloud; the token may have expired)",
        403 => " (the project's role does not allow this; some calls need admin)",
        404 => " (no such image, or not visible to this project)",
        409 => " (the image's state does not allow this right now)",
        413 => " (the image is larger than Glance's size limit or the project's quota)",
        415 => " (the data does not match the disk_format)",
        _ => "",
    }
}

/// Load a cloud: `cloud` (or $OS_CLOUD) from clouds.yaml/secure.yaml in the standard places
/// (and $OS_CLIENT_CONFIG_FILE, which python-openstackclient honours), or the OS_* variables.
fn cloud_config(
    cloud: Option<&str>,
    env: &crate::tunables::GlanceEnv,
) -> Result<(String, openstack_sdk::config::CloudConfig), GlanceError> {
    use openstack_sdk::config::{CloudConfig, ConfigFile};
    let name = cloud.map(str::to_string).or_else(|| env.os_cloud.clone());
    match name {
        Some(name) => {
            // python-openstackclient's variables for extra clouds.yaml / secure.yaml files.
            let cfg = ConfigFile::new_with_user_specified_configs(
                env.config_file.as_deref(),
                env.secure_file.as_deref(),
            )
            .map_err(|e| GlanceError::Config(e.to_string()))?;
            let profile = cfg
                .get_cloud_config(&name)
                .map_err(|e| GlanceError::Config(e.to_string()))?
                .ok_or_else(|| {
                    GlanceError::Config(format!(
                        "no cloud `{name}` in clouds.yaml (looked in ./clouds.yaml, \
                         ~/.config/openstack/, /etc/openstack/ and $OS_CLIENT_CONFIG_FILE)"
                    ))
                })?;
            Ok((name, profile))
        }
        None => {
            if !env.auth_url_set {
                return Err(GlanceError::Config(
                    "no cloud given: use --os-cloud NAME, OS_CLOUD, or the OS_* variables \
                     (OS_AUTH_URL, OS_USERNAME, …)"
                        .into(),
                ));
            }
            let profile =
                CloudConfig::from_env().map_err(|e| GlanceError::Config(e.to_string()))?;
            Ok(("environment".into(), profile))
        }
    }
}

impl Glance {
    /// Authenticate and find the image endpoint in the catalog.
    pub fn connect(
        cloud: Option<&str>,
        env: &crate::tunables::GlanceEnv,
    ) -> Result<Glance, GlanceError> {
        Self::connect_in(cloud, None, env)
    }

    /// `connect`, to the image service of `region` (default: the cloud's `region_name`).
    pub fn connect_in(
        cloud: Option<&str>,
        region: Option<&str>,
        env: &crate::tunables::GlanceEnv,
    ) -> Result<Glance, GlanceError> {
        use openstack_sdk::types::ServiceType;
        // The SDK finds its auth plugins through `inventory`; a plugin crate that nothing
        // references is dropped by the linker (then `v3applicationcredential` is "not a
        // supported type"), so reference it.
        std::hint::black_box(&openstack_sdk_auth_applicationcredential::ANCHOR);
        let (name, mut profile) = cloud_config(cloud, env)?;
        if let Some(r) = region {
            profile.region_name = Some(r.to_string());
        }
        // The SDK mis-joins Keystone's URL when `interface` is not public (it POSTs to
        // /auth/tokens without /v3), so it authenticates with the default and kiln picks the
        // image endpoint for the wanted interface from the token's catalog itself.
        let interface = profile
            .interface
            .replace("public".into())
            .unwrap_or_else(|| "public".into());
        let region = profile.region_name.clone();
        let auth = |message: String| GlanceError::Auth {
            cloud: name.clone(),
            message,
        };
        // No token cache on disk: a token is a secret.
        let os = openstack_sdk::OpenStack::builder(&profile)
            .disable_auth_cache(true)
            .build()
            .map_err(|e| {
                auth(format!(
                    "{e} (check the auth_url, user name, password or application credential \
                     of the cloud)"
                ))
            })?;
        let project_id = os.get_current_project().and_then(|p| p.id);
        let token = os
            .get_auth_token()
            .ok_or_else(|| auth("Keystone returned no token".into()))?;
        let catalog = os
            .get_auth_info()
            .and_then(|a| serde_json::to_value(a.token.catalog).ok())
            .unwrap_or(Value::Null);
        let mut endpoint = match pick_endpoint(&catalog, "image", &interface, region.as_deref()) {
            Ok(url) => url,
            Err(e) => {
                // Token without a catalog (unusual): ask the SDK.
                use openstack_sdk::api::Client as _;
                if catalog.is_null() {
                    os.get_service_endpoint(&ServiceType::Image, None)
                        .map_err(|e| auth(format!("no image service in the catalog: {e}")))?
                        .url_str()
                        .to_string()
                } else {
                    return Err(auth(e));
                }
            }
        };
        endpoint = endpoint.trim_end_matches('/').to_string();
        // The catalog may name the versioned root; calls below add /v2 themselves.
        for suffix in ["/v2", "/v2.0"] {
            if let Some(base) = endpoint.strip_suffix(suffix) {
                endpoint = base.to_string();
            }
        }
        let stall = stall_timeout(env.stall_timeout.as_deref()).map_err(&auth)?;
        let http = http_client(
            env.home.as_deref(),
            profile.cacert.as_deref(),
            profile.verify,
            stall,
        )
        .map_err(auth)?;
        Ok(Glance {
            endpoint,
            token,
            http,
            stall,
            cloud: name,
            region: profile.region_name.clone(),
            project_id,
            env: env.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.endpoint)
        };
        tracing::debug!("glance: {method} {url}");
        self.http
            .request(method, url)
            .header("X-Auth-Token", self.token.expose_secret())
            .header("Accept", "application/json")
    }

    /// Send a request; idempotent ones (GET, HEAD, PUT, DELETE) are tried up to three times
    /// when Glance answers 500/502/503/504 or cannot be reached (a busy or restarting
    /// server), 0.5 s and 1 s apart.
    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        f: impl Fn(reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, GlanceError> {
        use reqwest::Method;
        let idempotent = [Method::GET, Method::HEAD, Method::PUT, Method::DELETE].contains(&method);
        let mut delay = std::time::Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            match self.send_once(method.clone(), path, &f) {
                Err(e) if idempotent && attempt < 3 && is_transient(&e) => {
                    tracing::debug!("glance: {e}; retrying in {delay:?}");
                    std::thread::sleep(delay);
                    delay *= 2;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// One attempt. Without a body stream the request has the stall limit for an answer
    /// (and each read of the answer's body has it again).
    fn send_once(
        &self,
        method: reqwest::Method,
        path: &str,
        f: impl FnOnce(reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, GlanceError> {
        let req = f(self.request(method.clone(), path).timeout(self.stall));
        let resp = req
            .send()
            .map_err(|e| self.transport_error(&method, path, &e))?;
        self.check_status(&method, path, resp)
    }

    fn transport_error(
        &self,
        method: &reqwest::Method,
        path: &str,
        e: &reqwest::Error,
    ) -> GlanceError {
        let message = if e.is_timeout() {
            format!(
                "no answer for {} s (KILN_GLANCE_TIMEOUT): is Glance at {} stalled?",
                self.stall.as_secs(),
                self.endpoint
            )
        } else {
            // The whole chain: "error sending request" alone hides a certificate problem.
            let mut m = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                m.push_str(&format!(": {s}"));
                src = s.source();
            }
            if m.contains("certificate") {
                format!(
                    "{m} (name the CA that signed {}'s certificate with `cacert:` in clouds.yaml or OS_CACERT)",
                    self.endpoint
                )
            } else {
                format!("{m} (is Glance at {} reachable?)", self.endpoint)
            }
        };
        GlanceError::Transport {
            method: method.to_string(),
            path: path.to_string(),
            message,
        }
    }

    /// Send a request whose body is a stream (an upload) on a thread of its own, watched:
    /// it ends with an error as soon as the build is cancelled, or when `sent` has not moved
    /// and no answer came for the stall limit, even if the connection itself still hangs.
    fn send_streaming(
        &self,
        method: reqwest::Method,
        path: &str,
        req: reqwest::blocking::RequestBuilder,
        sent: &dyn Fn() -> u64,
        cancel: &crate::process::Cancel,
    ) -> Result<reqwest::blocking::Response, GlanceError> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("glance-upload".into())
            .spawn(move || {
                let _ = tx.send(req.send());
            })
            .map_err(|e| {
                transport(
                    method.as_str(),
                    path,
                    format!("starting the upload thread: {e}"),
                )
            })?;
        let mut last = (sent(), std::time::Instant::now());
        loop {
            match rx.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(Ok(resp)) => return self.check_status(&method, path, resp),
                Ok(Err(e)) => return Err(self.transport_error(&method, path, &e)),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(transport(
                        method.as_str(),
                        path,
                        "the upload thread ended without an answer".into(),
                    ))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if cancel.is_cancelled() {
                // The thread is left blocked on the socket; it ends with the process.
                return Err(transport(method.as_str(), path, "interrupted".into()));
            }
            let now = sent();
            if now != last.0 {
                last = (now, std::time::Instant::now());
            } else if last.1.elapsed() >= self.stall {
                return Err(transport(
                    method.as_str(),
                    path,
                    format!(
                        "Glance at {} took no data and gave no answer for {} s after {now} bytes (KILN_GLANCE_TIMEOUT)",
                        self.endpoint,
                        self.stall.as_secs()
                    ),
                ));
            }
        }
    }

    fn check_status(
        &self,
        method: &reqwest::Method,
        path: &str,
        resp: reqwest::blocking::Response,
    ) -> Result<reqwest::blocking::Response, GlanceError> {
        let status = resp.status().as_u16();
        if status >= 400 {
            let body = resp.text().unwrap_or_default();
            return Err(GlanceError::Http {
                method: method.to_string(),
                path: path.to_string(),
                status,
                message: error_message(&body),
                hint: hint(status).to_string(),
            });
        }
        Ok(resp)
    }

    fn json(&self, method: reqwest::Method, path: &str) -> Result<Value, GlanceError> {
        let p = path.to_string();
        self.send(method.clone(), path, |r| r)?
            .json()
            .map_err(|e| GlanceError::Transport {
                method: method.to_string(),
                path: p,
                message: format!("bad JSON: {e}"),
            })
    }

    /// Every image matching `query` (`name=…&tag=…&sort=…`), following `next` links.
    pub fn list(&self, query: &[(String, String)]) -> Result<Vec<Value>, GlanceError> {
        let mut q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect();
        // KILN_GLANCE_PAGE_SIZE: a debugging knob (the tests use it to prove paging).
        let limit = self.env.page_size;
        q.push(format!("limit={limit}"));
        let mut next = Some(format!("/v2/images?{}", q.join("&")));
        let mut out = Vec::new();
        while let Some(path) = next.take() {
            let page = self.json(reqwest::Method::GET, &path)?;
            if let Some(images) = page.get("images").and_then(Value::as_array) {
                out.extend(images.iter().cloned());
            }
            next = match page.get("next").and_then(Value::as_str) {
                // Glance's `next` is a path on the same endpoint; anything else would send the
                // token elsewhere.
                Some(n) if n.starts_with('/') && !n.starts_with("//") => Some(n.to_string()),
                Some(n) => {
                    return Err(GlanceError::Transport {
                        method: "GET".into(),
                        path,
                        message: format!("refusing a `next` link that leaves the endpoint: {n}"),
                    })
                }
                None => None,
            };
        }
        Ok(out)
    }

    pub fn get(&self, id: &str) -> Result<Value, GlanceError> {
        self.json(reqwest::Method::GET, &format!("/v2/images/{id}"))
    }

    /// An image by id, or by a name that exactly one visible image has.
    pub fn find(&self, id_or_name: &str) -> Result<Value, GlanceError> {
        if looks_like_uuid(id_or_name) {
            match self.get(id_or_name) {
                Ok(v) => return Ok(v),
                Err(GlanceError::Http { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let hits = self.list(&[("name".into(), id_or_name.into())])?;
        match hits.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(GlanceError::NotFound(format!(
                "no image `{id_or_name}` visible to cloud {}",
                self.cloud
            ))),
            many => Err(GlanceError::NotFound(format!(
                "{} images are named `{id_or_name}`: use an id ({})",
                many.len(),
                many.iter()
                    .filter_map(|i| i["id"].as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// The URL of `service_type` for `interface` (and `region`, when given) in a Keystone v3
/// catalog (`[{"type", "endpoints": [{"interface", "region", "region_id", "url"}]}]`).
pub fn pick_endpoint(
    catalog: &Value,
    service_type: &str,
    interface: &str,
    region: Option<&str>,
) -> Result<String, String> {
    let interface = interface.trim_end_matches("URL");
    let mut seen = Vec::new();
    for svc in catalog.as_array().into_iter().flatten() {
        if svc["type"] != service_type {
            continue;
        }
        for ep in svc["endpoints"].as_array().into_iter().flatten() {
            let ep_region = ep["region_id"]
                .as_str()
                .or(ep["region"].as_str())
                .unwrap_or("");
            let ep_iface = ep["interface"].as_str().unwrap_or("");
            if ep_iface == interface && region.is_none_or(|r| r == ep_region) {
                if let Some(url) = ep["url"].as_str() {
                    return Ok(url.to_string());
                }
            }
            seen.push(format!("{ep_iface}@{ep_region}"));
        }
    }
    Err(if seen.is_empty() {
        format!("no {service_type} service in the catalog")
    } else {
        format!(
            "no {service_type} endpoint for interface {interface}{} in the catalog (it has {})",
            region
                .map(|r| format!(" in region {r}"))
                .unwrap_or_default(),
            seen.join(", ")
        )
    })
}

impl Glance {
    fn expect_json(
        &self,
        method: reqwest::Method,
        path: &str,
        resp: reqwest::blocking::Response,
    ) -> Result<Value, GlanceError> {
        resp.json().map_err(|e| GlanceError::Transport {
            method: method.to_string(),
            path: path.to_string(),
            message: format!("bad JSON: {e}"),
        })
    }

    fn json_body(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, GlanceError> {
        let resp = self.send(method.clone(), path, |r| r.json(body))?;
        self.expect_json(method, path, resp)
    }

    fn no_content(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(), GlanceError> {
        self.send(method, path, |r| match body {
            Some(b) => r.json(b),
            None => r,
        })?;
        Ok(())
    }

    /// `POST /v2/images`: a `queued` record.
    pub fn create(&self, body: &Value) -> Result<Value, GlanceError> {
        self.json_body(reqwest::Method::POST, "/v2/images", body)
    }

    pub fn delete(&self, id: &str) -> Result<(), GlanceError> {
        self.no_content(reqwest::Method::DELETE, &format!("/v2/images/{id}"), None)
    }

    /// JSON Patch operations (`{"op": "replace", "path": "/name", "value": …}`).
    pub fn patch(&self, id: &str, ops: &[Value]) -> Result<Value, GlanceError> {
        let path = format!("/v2/images/{id}");
        let body = Value::Array(ops.to_vec());
        let resp = self.send(reqwest::Method::PATCH, &path, |r| {
            r.header("Content-Type", PATCH_TYPE).body(body.to_string())
        })?;
        self.expect_json(reqwest::Method::PATCH, &path, resp)
    }

    pub fn add_tag(&self, id: &str, tag: &str) -> Result<(), GlanceError> {
        let path = format!("/v2/images/{id}/tags/{}", urlencode(tag));
        self.no_content(reqwest::Method::PUT, &path, None)
    }

    pub fn remove_tag(&self, id: &str, tag: &str) -> Result<(), GlanceError> {
        let path = format!("/v2/images/{id}/tags/{}", urlencode(tag));
        self.no_content(reqwest::Method::DELETE, &path, None)
    }

    pub fn members(&self, id: &str) -> Result<Vec<Value>, GlanceError> {
        let v = self.json(reqwest::Method::GET, &format!("/v2/images/{id}/members"))?;
        Ok(v["members"].as_array().cloned().unwrap_or_default())
    }

    pub fn add_member(&self, id: &str, project: &str) -> Result<Value, GlanceError> {
        self.json_body(
            reqwest::Method::POST,
            &format!("/v2/images/{id}/members"),
            &json!({ "member": project }),
        )
    }

    pub fn remove_member(&self, id: &str, project: &str) -> Result<(), GlanceError> {
        let path = format!("/v2/images/{id}/members/{project}");
        self.no_content(reqwest::Method::DELETE, &path, None)
    }

    /// The member project accepts, rejects or leaves pending a shared image.
    pub fn set_member_status(
        &self,
        id: &str,
        project: &str,
        status: &str,
    ) -> Result<Value, GlanceError> {
        self.json_body(
            reqwest::Method::PUT,
            &format!("/v2/images/{id}/members/{project}"),
            &json!({ "status": status }),
        )
    }

    /// `deactivate` or `reactivate`.
    pub fn action(&self, id: &str, action: &str) -> Result<(), GlanceError> {
        let path = format!("/v2/images/{id}/actions/{action}");
        self.no_content(reqwest::Method::POST, &path, None)
    }

    /// Start an interoperable import (`{"method": {"name": …}, "stores": […]}`).
    pub fn import(&self, id: &str, body: &Value) -> Result<(), GlanceError> {
        let path = format!("/v2/images/{id}/import");
        self.no_content(reqwest::Method::POST, &path, Some(body))
    }

    pub fn tasks(&self, id: &str) -> Result<Vec<Value>, GlanceError> {
        let v = self.json(reqwest::Method::GET, &format!("/v2/images/{id}/tasks"))?;
        Ok(v["tasks"].as_array().cloned().unwrap_or_default())
    }

    /// Import methods and stores the deployment offers.
    pub fn import_info(&self) -> Result<Value, GlanceError> {
        self.json(reqwest::Method::GET, "/v2/info/import")
    }

    pub fn stores(&self) -> Result<Vec<String>, GlanceError> {
        let v = self.json(reqwest::Method::GET, "/v2/info/stores")?;
        Ok(v["stores"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `GET /v2/cache`: `{"cached_images": […], "queued_images": […]}` (admin).
    pub fn cache_list(&self) -> Result<Value, GlanceError> {
        self.json(reqwest::Method::GET, "/v2/cache")
    }

    pub fn cache_queue(&self, id: &str) -> Result<(), GlanceError> {
        self.no_content(reqwest::Method::PUT, &format!("/v2/cache/{id}"), None)
    }

    pub fn cache_delete(&self, id: &str) -> Result<(), GlanceError> {
        self.no_content(reqwest::Method::DELETE, &format!("/v2/cache/{id}"), None)
    }

    /// Empty the cache, the queue, or both (`target` "cache", "queue" or "").
    pub fn cache_clear(&self, target: &str) -> Result<(), GlanceError> {
        self.send(reqwest::Method::DELETE, "/v2/cache", |r| {
            r.header("x-image-cache-clear-target", target)
        })?;
        Ok(())
    }

    /// Run the cache's `clean` (invalid and stalled entries) or `prune` (down to the size
    /// limit) job.
    pub fn cache_job(&self, job: &str) -> Result<(), GlanceError> {
        self.no_content(reqwest::Method::POST, &format!("/v2/cache/{job}"), None)
    }
}

/// JSON Patch operations that make `image` carry `props` (add or replace as needed).
pub fn set_ops(image: &Value, props: &[(String, Value)]) -> Vec<Value> {
    props
        .iter()
        .map(|(k, v)| {
            let op = if image.get(k).is_some() {
                "replace"
            } else {
                "add"
            };
            json!({ "op": op, "path": pointer(k), "value": v })
        })
        .collect()
}

/// A JSON Pointer to a top-level key (`~` and `/` escaped).
pub fn pointer(key: &str) -> String {
    format!("/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// A failure worth one more try: the server erred or was not reachable.
fn is_transient(e: &GlanceError) -> bool {
    matches!(
        e,
        GlanceError::Http {
            status: 500 | 502 | 503 | 504,
            ..
        } | GlanceError::Transport { .. }
    )
}

pub fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            matches!(i, 8 | 13 | 18 | 23) == (c == '-') && (c == '-' || c.is_ascii_hexdigit())
        })
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glance_messages_lose_their_html() {
        assert_eq!(
            error_message(
                r#"{"message": "Image upload failed<br /><br />\nData does not match", "code": "415 Unsupported Media Type", "title": "Unsupported Media Type"}"#
            ),
            "Image upload failed Data does not match"
        );
        assert_eq!(error_message("plain text"), "plain text");
    }

    #[test]
    fn endpoints_by_interface_and_region() {
        let cat = json!([
            {"type": "identity", "endpoints": [{"interface": "public", "region_id": "R1", "url": "http://k"}]},
            {"type": "image", "endpoints": [
                {"interface": "public", "region_id": "R1", "region": "R1", "url": "http://pub1"},
                {"interface": "internal", "region_id": "R1", "url": "http://int1"},
                {"interface": "public", "region_id": "R2", "url": "http://pub2"}
            ]}
        ]);
        assert_eq!(
            pick_endpoint(&cat, "image", "public", None).unwrap(),
            "http://pub1"
        );
        assert_eq!(
            pick_endpoint(&cat, "image", "public", Some("R2")).unwrap(),
            "http://pub2"
        );
        assert_eq!(
            pick_endpoint(&cat, "image", "internal", Some("R1")).unwrap(),
            "http://int1"
        );
        assert_eq!(
            pick_endpoint(&cat, "image", "internalURL", None).unwrap(),
            "http://int1"
        );
        let e = pick_endpoint(&cat, "image", "admin", None).unwrap_err();
        assert!(e.contains("public@R1") && e.contains("internal@R1"), "{e}");
        assert!(pick_endpoint(&cat, "image", "public", Some("R3")).is_err());
        assert!(pick_endpoint(&cat, "volume", "public", None)
            .unwrap_err()
            .contains("no volume service"));
    }

    #[test]
    fn uuids_and_query_encoding() {
        assert!(looks_like_uuid("ef92cabc-3092-4813-9b14-504f33598b4e"));
        assert!(!looks_like_uuid("debian-12"));
        assert_eq!(urlencode("a b&c=d"), "a%20b%26c%3Dd");
        assert_eq!(urlencode("created_at:desc"), "created_at:desc");
    }
}
