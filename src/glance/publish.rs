//! Creating an image with its data, all or nothing (shared by `kiln image create`, `kiln
//! publish` and the build's glance stage), and publishing a build output: idempotency by
//! name + SHA-512, members, protection, rotation.
//!
//! Glance leaves a `queued` record behind when an upload fails, and an `importing` one when an
//! import fails; kiln deletes the record it created on any failure, retrying while Glance is
//! unreachable, so nothing half-made stays in the catalog.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Glance, GlanceError, UploadOptions};
pub use crate::manifest::GlancePublished as Published;
pub use crate::plan::GlanceSettings as Settings;
use crate::process::Cancel;
pub use crate::vocab::Method;

/// Everything needed to make one image.
#[derive(Debug, Clone)]
pub struct NewImage {
    /// Attributes and properties for `POST /v2/images` (not `protected`: that is set last, or
    /// a failed image could not be deleted).
    pub body: Value,
    pub protected: bool,
    pub members: Vec<String>,
    pub method: Method,
    /// web-download's source.
    pub uri: Option<String>,
    /// Target stores (upload: the one store; imports: all of them).
    pub stores: Vec<String>,
    pub file: Option<PathBuf>,
    /// SHA-512 the data must have (the build's manifest knows it).
    pub expect_sha512: Option<String>,
    /// How long to follow an import before giving up.
    pub import_timeout: Duration,
}

/// Delete a record kiln made, retrying transport errors and 5xx (Glance restarting) until the
/// cleanup timeout. Ignores cancellation (this is the cleanup), but not a second signal.
pub fn delete_created(g: &Glance, id: &str) -> Result<(), GlanceError> {
    let end = Instant::now() + g.env.cleanup_timeout;
    let mut said = false;
    loop {
        match g.delete(id) {
            Ok(()) | Err(GlanceError::Http { status: 404, .. }) => return Ok(()),
            // A DELETE that timed out while Glance hung may have been done after all: Glance
            // then refuses the next one ("transition from deleted to deleted"). Gone is done.
            Err(e @ GlanceError::Http { status: 400, .. }) => {
                let deleted = matches!(g.get(id), Err(GlanceError::Http { status: 404, .. }))
                    || g.get(id).is_ok_and(|v| v["status"] == "deleted");
                return if deleted { Ok(()) } else { Err(e) };
            }
            Err(e @ GlanceError::Transport { .. })
            | Err(e @ GlanceError::Http { status: 500.., .. }) => {
                if Instant::now() >= end || crate::process::urgent() {
                    return Err(e);
                }
                if !said {
                    tracing::warn!(
                        "Glance does not answer ({e}); retrying the deletion of {id} for up to {} s",
                        g.env.cleanup_timeout.as_secs()
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Attach what happened to the half-made record to the error that caused it.
fn with_cleanup(g: &Glance, id: &str, err: GlanceError) -> GlanceError {
    let note = match delete_created(g, id) {
        Ok(()) => format!("the image record {id} was deleted"),
        Err(e) => format!(
            "the image record {id} could NOT be deleted ({e}); remove it with `kiln image delete {id}`"
        ),
    };
    GlanceError::Cleanup {
        source: Box::new(err),
        note,
    }
}

/// Create the record, put the data in, verify it, add members and protection. On any error
/// the record is deleted. Returns the final image.
pub fn create_image(g: &Glance, new: &NewImage, cancel: &Cancel) -> Result<Value, GlanceError> {
    let created = g.create(&new.body)?;
    let id = created["id"].as_str().unwrap_or_default().to_string();
    tracing::info!(
        "created image {id} ({}) in {}",
        created["name"].as_str().unwrap_or(""),
        g.cloud
    );
    match fill(g, &id, new, cancel) {
        Ok(img) => Ok(img),
        Err(e) => Err(with_cleanup(g, &id, e)),
    }
}

fn fill(g: &Glance, id: &str, new: &NewImage, cancel: &Cancel) -> Result<Value, GlanceError> {
    let fail = |message: String| GlanceError::Verify {
        id: id.to_string(),
        message,
    };
    let mut sent = None;
    match new.method {
        Method::Upload | Method::CopyImage | Method::GlanceDirect => {
            let file = new
                .file
                .as_ref()
                .ok_or_else(|| fail("no file to upload".into()))?;
            let stage = new.method == Method::GlanceDirect;
            let store = match (new.method, new.stores.as_slice()) {
                (Method::Upload, [one]) => Some(one.clone()),
                _ => None,
            };
            let t = g.upload(id, file, UploadOptions { stage, store }, cancel)?;
            tracing::info!(
                "{} {} in {:.1} s ({}/s)",
                if stage { "staged" } else { "uploaded" },
                crate::progress::human_bytes(t.size),
                t.seconds,
                crate::progress::human_bytes((t.size as f64 / t.seconds.max(0.001)) as u64)
            );
            if let Some(want) = &new.expect_sha512 {
                if *want != t.sha512 {
                    return Err(fail(format!(
                        "{} changed since it was built: SHA-512 {} expected, {} read",
                        file.display(),
                        want,
                        t.sha512
                    )));
                }
            }
            sent = Some(t);
        }
        Method::WebDownload => {}
    }
    match new.method {
        Method::Upload => {}
        Method::GlanceDirect => {
            let mut body = json!({"method": {"name": "glance-direct"}});
            if !new.stores.is_empty() {
                body["stores"] = json!(new.stores);
            }
            g.import(id, &body)?;
            follow_import(g, id, &[], new.import_timeout, cancel)?;
        }
        Method::WebDownload => {
            let uri = new
                .uri
                .as_deref()
                .ok_or_else(|| fail("web-download needs a uri".into()))?;
            let mut body = json!({"method": {"name": "web-download", "uri": uri}});
            if !new.stores.is_empty() {
                body["stores"] = json!(new.stores);
            }
            g.import(id, &body)?;
            follow_import(g, id, &[], new.import_timeout, cancel)?;
        }
        Method::CopyImage => {
            wait_active(g, id, cancel)?;
            g.import(
                id,
                &json!({"method": {"name": "copy-image"}, "stores": new.stores}),
            )?;
            follow_import(g, id, &new.stores, new.import_timeout, cancel)?;
        }
    }
    let img = g.get(id)?;
    if img["status"] != "active" {
        return Err(fail(format!(
            "the image is `{}` after the data went in, not active",
            img["status"].as_str().unwrap_or("?")
        )));
    }
    // What Glance stored is what was sent (or, for web-download, what was built).
    let want_sha = sent
        .as_ref()
        .map(|t| t.sha512.clone())
        .or(new.expect_sha512.clone());
    if let Some(t) = &sent {
        if img["size"].as_u64() != Some(t.size) {
            return Err(fail(format!(
                "Glance stored {} bytes, {} were sent",
                img["size"], t.size
            )));
        }
    }
    if let (Some(want), Some("sha512")) = (&want_sha, img["os_hash_algo"].as_str()) {
        let got = img["os_hash_value"].as_str().unwrap_or("");
        if got != want {
            return Err(fail(format!(
                "Glance's os_hash_value {got} differs from the data's SHA-512 {want}"
            )));
        }
    }
    for m in &new.members {
        g.add_member(id, m)?;
        tracing::info!("shared {id} with project {m} (pending until it accepts)");
    }
    if new.protected {
        g.patch(
            id,
            &[json!({"op": "replace", "path": "/protected", "value": true})],
        )?;
    }
    g.get(id)
}

fn wait_active(g: &Glance, id: &str, cancel: &Cancel) -> Result<(), GlanceError> {
    for _ in 0..600 {
        let img = g.get(id)?;
        match img["status"].as_str() {
            Some("active") => return Ok(()),
            Some("killed") | Some("deleted") | Some("deactivated") => {
                return Err(GlanceError::Verify {
                    id: id.into(),
                    message: format!("the image went `{}`", img["status"].as_str().unwrap()),
                })
            }
            _ => {}
        }
        if cancel.sleep(Duration::from_millis(500)) {
            break;
        }
    }
    Err(GlanceError::Verify {
        id: id.into(),
        message: "the image did not become active".into(),
    })
}

/// The failure an import reports: the image's `os_glance_failed_import` stores, or a failed
/// task's message.
pub fn import_failure(image: &Value, tasks: &[Value]) -> Option<String> {
    let failed = image["os_glance_failed_import"].as_str().unwrap_or("");
    let task_msg = tasks
        .iter()
        .filter(|t| t["status"] == "failure")
        .filter_map(|t| t["message"].as_str())
        .next_back()
        .map(str::to_string);
    if !failed.is_empty() {
        return Some(match task_msg {
            Some(m) if !m.is_empty() => format!("import failed for store(s) {failed}: {m}"),
            _ => format!("import failed for store(s) {failed}"),
        });
    }
    // Without the property (a single-store import), a failed task is the signal.
    let all_failed = !tasks.is_empty() && tasks.iter().all(|t| t["status"] == "failure");
    if all_failed {
        return Some(format!(
            "import task failed: {}",
            task_msg.unwrap_or_else(|| "no message".into())
        ));
    }
    None
}

/// Follow an import until the image is active (and, for copy-image, in every wanted store),
/// failing as soon as Glance records a failure: a failed import leaves the image `importing`
/// forever, so waiting for `active` alone would hang.
pub fn follow_import(
    g: &Glance,
    id: &str,
    want_stores: &[String],
    timeout: Duration,
    cancel: &Cancel,
) -> Result<Value, GlanceError> {
    let start = Instant::now();
    let mut last_status = String::new();
    let mut last_line = Instant::now();
    loop {
        let img = g.get(id)?;
        let status = img["status"].as_str().unwrap_or("?").to_string();
        let stores: Vec<&str> = img["stores"]
            .as_str()
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .collect();
        let tasks = g.tasks(id).unwrap_or_default();
        if let Some(msg) = import_failure(&img, &tasks) {
            return Err(GlanceError::Verify {
                id: id.into(),
                message: msg,
            });
        }
        let copied = want_stores.iter().all(|s| stores.contains(&s.as_str()));
        let importing = img["os_glance_importing_to_stores"]
            .as_str()
            .unwrap_or("")
            .is_empty();
        if status == "active" && copied && importing {
            return Ok(img);
        }
        if matches!(status.as_str(), "killed" | "deleted" | "deactivated") {
            return Err(GlanceError::Verify {
                id: id.into(),
                message: format!("the image went `{status}` during the import"),
            });
        }
        if status != last_status || last_line.elapsed() >= Duration::from_secs(5) {
            let task = tasks
                .last()
                .and_then(|t| t["status"].as_str())
                .unwrap_or("-");
            tracing::info!(
                "import of {id}: image {status}, task {task}, stores [{}] ({:.0} s)",
                stores.join(","),
                start.elapsed().as_secs_f64()
            );
            last_status = status;
            last_line = Instant::now();
        }
        if start.elapsed() >= timeout {
            return Err(GlanceError::Verify {
                id: id.into(),
                message: format!("the import did not finish within {} s", timeout.as_secs()),
            });
        }
        if cancel.sleep(Duration::from_millis(500)) {
            return Err(GlanceError::Verify {
                id: id.into(),
                message: "interrupted".into(),
            });
        }
    }
}

/// A build output to publish.
#[derive(Debug, Clone)]
pub struct Output {
    pub file: PathBuf,
    pub disk_format: String,
    pub sha512: String,
    pub virtual_size: u64,
    /// The build's SBOM digest (`kiln_sbom_sha256`), when it has one.
    pub sbom_sha256: Option<String>,
}

/// GiB, rounded up: Glance's min_disk unit.
pub fn min_disk_gib(virtual_size: u64) -> u64 {
    virtual_size.div_ceil(1 << 30)
}

/// The `POST /v2/images` body for an output.
pub fn image_body(s: &Settings, name: &str, out: &Output) -> Value {
    let mut body = json!({
        "name": name,
        "disk_format": out.disk_format,
        "container_format": s.container_format,
        // Explicit: Glance's own default is `shared`.
        "visibility": s.visibility,
        "min_disk": s.min_disk.unwrap_or_else(|| min_disk_gib(out.virtual_size)),
        "min_ram": s.min_ram,
        "tags": s.tags,
    });
    for (k, v) in &s.properties {
        body[k] = Value::String(v.clone());
    }
    body["kiln_recipe"] = json!(s.recipe);
    if !s.recipe_id.is_empty() {
        body["kiln_recipe_id"] = json!(s.recipe_id);
    }
    body["kiln_format"] = json!(out.disk_format);
    // What a concurrent publish of the same output finds this image by before its data is in.
    body["kiln_sha512"] = json!(out.sha512);
    if let Some(d) = &out.sbom_sha256 {
        body["kiln_sbom_sha256"] = json!(d);
    }
    body
}

/// Publish one output: reuse an identical active image, else create it (rotation is separate:
/// it runs only once every output is in).
pub fn publish(
    g: &Glance,
    s: &Settings,
    name: &str,
    out: &Output,
    cancel: &Cancel,
) -> Result<Published, GlanceError> {
    let mut q = vec![
        ("name".to_string(), name.to_string()),
        ("status".to_string(), "active".to_string()),
    ];
    if let Some(p) = &g.project_id {
        q.push(("owner".into(), p.clone()));
    }
    let same = g
        .list(&q)?
        .into_iter()
        .find(|i| i["os_hash_value"].as_str() == Some(out.sha512.as_str()));
    let (img, reused) = match same {
        Some(img) => {
            tracing::info!(
                "{} ({}) is already in {} with the same SHA-512: nothing uploaded",
                name,
                img["id"].as_str().unwrap_or(""),
                g.cloud
            );
            (img, true)
        }
        None => {
            let new = NewImage {
                body: image_body(s, name, out),
                protected: s.protected,
                members: s.members.clone(),
                method: s.method,
                uri: s.uris.get(&out.disk_format).cloned(),
                stores: s.stores.clone(),
                file: Some(out.file.clone()),
                expect_sha512: Some(out.sha512.clone()),
                import_timeout: Duration::from_secs(s.import_timeout),
            };
            let made = create_image(g, &new, cancel)?;
            settle(g, name, out, made, cancel)?
        }
    };
    let id = img["id"].as_str().unwrap_or_default().to_string();
    let members = g
        .members(&id)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["member_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(Published {
        cloud: g.cloud.clone(),
        region: g.region.clone(),
        id,
        name: name.to_string(),
        disk_format: out.disk_format.clone(),
        status: img["status"].as_str().unwrap_or("").into(),
        visibility: img["visibility"].as_str().unwrap_or("").into(),
        size: img["size"].as_u64().unwrap_or(0),
        os_hash_value: img["os_hash_value"].as_str().unwrap_or("").into(),
        method: s.method,
        reused,
        members,
        rotated: Vec::new(),
    })
}

/// Two publishes of the same build at once (two CI jobs) each made an image: every publisher
/// sees the same twins (same name, this project, the same `kiln_sha512`, not failed) and keeps
/// the oldest (then the smallest id); a publisher whose image is not that one waits for it to
/// be active, deletes its own and reports the other's as already there. Returns the image to
/// report and whether it is another publisher's.
fn settle(
    g: &Glance,
    name: &str,
    out: &Output,
    ours: Value,
    cancel: &Cancel,
) -> Result<(Value, bool), GlanceError> {
    let id = ours["id"].as_str().unwrap_or_default().to_string();
    let mut q = vec![("name".to_string(), name.to_string())];
    if let Some(p) = &g.project_id {
        q.push(("owner".into(), p.clone()));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let twins = g.list(&q)?;
        let keeper = match keeper_of(&twins, &out.sha512) {
            Some(k) if k["id"] != ours["id"] => k.clone(),
            _ => return Ok((ours, false)),
        };
        let kid = keeper["id"].as_str().unwrap_or_default();
        if keeper["status"] == "active" {
            tracing::info!(
                "{name}: another publish of the same build made {kid} first; deleting this one ({id})"
            );
            delete_created(g, &id)?;
            return Ok((keeper, true));
        }
        if Instant::now() > deadline || cancel.sleep(Duration::from_secs(2)) {
            // The other is still not in: keep ours (it is complete); the other publisher,
            // once done, finds this one.
            return Ok((ours, false));
        }
    }
}

/// The twin every publisher keeps: of the images carrying `sha512` (as `kiln_sha512`, or as
/// the active data's hash) that are not failed, the oldest, then the smallest id.
pub fn keeper_of<'a>(images: &'a [Value], sha512: &str) -> Option<&'a Value> {
    images
        .iter()
        .filter(|i| {
            i["kiln_sha512"].as_str() == Some(sha512)
                || (i["status"] == "active" && i["os_hash_value"].as_str() == Some(sha512))
        })
        .filter(|i| {
            !matches!(
                i["status"].as_str(),
                Some("killed" | "deleted" | "pending_delete" | "deactivated")
            )
        })
        .min_by(|a, b| {
            let key = |i: &Value| {
                (
                    i["created_at"].as_str().unwrap_or("").to_string(),
                    i["id"].as_str().unwrap_or("").to_string(),
                )
            };
            key(a).cmp(&key(b))
        })
}

/// Which images `keep` deletes: given this recipe's images of one format, newest first,
/// everything beyond the newest `keep` (the one just published always counts as kept) that is
/// not protected.
pub fn rotation_victims(images: &[Value], current: &str, keep: usize) -> Vec<Value> {
    let mut kept = 0usize;
    let mut out = Vec::new();
    // The current image first, then the rest in the given (newest-first) order.
    let ordered = images
        .iter()
        .filter(|i| i["id"] == current)
        .chain(images.iter().filter(|i| i["id"] != current));
    for img in ordered {
        if kept < keep.max(1) {
            kept += 1;
            continue;
        }
        if img["protected"] == true {
            continue;
        }
        out.push(img.clone());
    }
    out
}

pub fn rotate(
    g: &Glance,
    s: &Settings,
    disk_format: &str,
    current: &str,
    keep: usize,
) -> Result<Vec<String>, GlanceError> {
    if s.recipe_id.is_empty() {
        // A manifest from before kiln_recipe_id: the name alone could match another
        // recipe's images, so nothing is rotated.
        tracing::warn!("keep {keep}: this build's settings carry no kiln_recipe_id; not rotating");
        return Ok(Vec::new());
    }
    let mut q = vec![
        ("kiln_recipe_id".to_string(), s.recipe_id.clone()),
        ("kiln_recipe".to_string(), s.recipe.clone()),
        ("kiln_format".to_string(), disk_format.to_string()),
        // Only finished images: one still uploading (another build of the same recipe) is
        // never rotated out from under it.
        ("status".to_string(), "active".to_string()),
        ("sort".to_string(), "created_at:desc".to_string()),
    ];
    if let Some(p) = &g.project_id {
        q.push(("owner".into(), p.clone()));
    }
    let images = g.list(&q)?;
    let mut deleted = Vec::new();
    for img in rotation_victims(&images, current, keep) {
        let id = img["id"].as_str().unwrap_or_default();
        g.delete(id)?;
        tracing::info!(
            "keep {keep}: deleted older image {id} ({})",
            img["name"].as_str().unwrap_or("")
        );
        deleted.push(id.to_string());
    }
    Ok(deleted)
}

/// Publish the outputs of a finished build directory (its manifest.json lists them with
/// their SHA-512) and record the images in that manifest, rewritten atomically. All or
/// nothing: if one output fails, the images this call created for the others are deleted.
/// Rotation runs last, once everything is in; its failures are warnings.
pub fn publish_dir(
    dir: &std::path::Path,
    manifest: &crate::manifest::Manifest,
    settings: &Settings,
    cloud: Option<&str>,
    env: &crate::tunables::GlanceEnv,
    cancel: &Cancel,
    on_created: &mut dyn FnMut(&Glance, &str),
) -> anyhow::Result<Vec<Published>> {
    use anyhow::Context as _;
    let mut todo = Vec::new();
    for fmt in &settings.formats {
        let o = manifest
            .outputs
            .iter()
            .find(|o| o.glance_disk_format.as_deref() == Some(fmt.as_str()))
            .with_context(|| format!("{}/manifest.json lists no {fmt} output", dir.display()))?;
        let file = dir.join(&o.path);
        anyhow::ensure!(file.is_file(), "{} is missing", file.display());
        let name = settings
            .names
            .get(fmt)
            .cloned()
            .with_context(|| format!("no image name for {fmt}"))?;
        todo.push((
            name,
            Output {
                file,
                disk_format: fmt.clone(),
                sha512: o.sha512.clone(),
                virtual_size: o.virtual_size,
                sbom_sha256: manifest
                    .inventory
                    .as_ref()
                    .and_then(|i| i["sbom_sha256"].as_str())
                    .map(String::from),
            },
        ));
    }
    let cloud = cloud.or(settings.cloud.as_deref());
    let g = Glance::connect_in(cloud, settings.region.as_deref(), env)
        .context("connecting to Glance")?;
    let mut done: Vec<Published> = Vec::new();
    for (name, out) in &todo {
        match publish(&g, settings, name, out, cancel) {
            Ok(p) => {
                if !p.reused {
                    on_created(&g, &p.id);
                }
                tracing::info!(
                    "published {} as {} ({}) in {}: {}",
                    out.file.display(),
                    p.name,
                    p.id,
                    g.cloud,
                    p.status
                );
                done.push(p);
            }
            Err(e) => {
                for p in done.iter().filter(|p| !p.reused) {
                    match delete_created(&g, &p.id) {
                        Ok(()) => {
                            tracing::warn!("deleted {} ({}): the publish failed", p.id, p.name)
                        }
                        Err(de) => tracing::warn!("could not delete {}: {de}", p.id),
                    }
                }
                return Err(anyhow::Error::new(e).context(format!(
                    "publishing {} to Glance as {name}",
                    out.file.display()
                )));
            }
        }
    }
    if let Some(keep) = settings.keep {
        for p in done.iter_mut() {
            match rotate(&g, settings, &p.disk_format, &p.id, keep) {
                Ok(r) => p.rotated = r,
                Err(e) => tracing::warn!("rotation (keep {keep}) of {}: {e}", p.name),
            }
        }
    }
    Ok(done)
}

/// Settings for `kiln publish` of a build whose recipe had no `publish.glance`: the first
/// output Glance accepts, named NAME-VERSION, private, with the manifest's properties.
pub fn default_settings(manifest: &crate::manifest::Manifest) -> anyhow::Result<Settings> {
    let name = if manifest.name.is_empty() {
        "image"
    } else {
        manifest.name.as_str()
    };
    let version = if manifest.version.is_empty() {
        "0"
    } else {
        manifest.version.as_str()
    };
    let out = manifest
        .outputs
        .iter()
        .find(|o| o.glance_disk_format.is_some())
        .ok_or_else(|| anyhow::anyhow!("the build has no output Glance accepts"))?;
    let fmt = out.glance_disk_format.clone().unwrap_or_default();
    let container = crate::vocab::Format::from_qemu_img(&out.format)
        .map_or("bare", |f| f.facts().glance_container);
    let properties = manifest.properties.clone();
    Ok(Settings {
        cloud: None,
        region: None,
        names: [(fmt.clone(), format!("{name}-{version}"))].into(),
        container_format: container.into(),
        visibility: "private".into(),
        protected: false,
        min_ram: 0,
        min_disk: None,
        tags: Vec::new(),
        properties,
        members: Vec::new(),
        method: Method::Upload,
        uris: Default::default(),
        stores: Vec::new(),
        keep: None,
        formats: vec![fmt],
        import_timeout: 3600,
        recipe: name.to_string(),
        recipe_id: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_disk_rounds_up_to_gib() {
        assert_eq!(min_disk_gib(0), 0);
        assert_eq!(min_disk_gib(1), 1);
        assert_eq!(min_disk_gib(2 << 30), 2);
        assert_eq!(min_disk_gib((2 << 30) + 1), 3);
    }

    #[test]
    fn rotation_keeps_the_newest_and_protected_ones() {
        let imgs: Vec<Value> = [
            ("e", false),
            ("d", true),
            ("c", false),
            ("b", false),
            ("a", false),
        ]
        .iter()
        .map(|(id, p)| json!({"id": id, "protected": p}))
        .collect();
        let ids = |v: Vec<Value>| {
            v.iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        // keep 2: e (current) and d; d is protected anyway; c, b, a go.
        assert_eq!(ids(rotation_victims(&imgs, "e", 2)), ["c", "b", "a"]);
        // The current image is kept even when it is not the newest listed.
        assert_eq!(ids(rotation_victims(&imgs, "b", 1)), ["e", "c", "a"]);
        // keep 0 is treated as 1: the image just published is never deleted.
        assert_eq!(ids(rotation_victims(&imgs, "e", 0)), ["c", "b", "a"]);
    }

    #[test]
    fn body_has_explicit_visibility_string_properties_and_rotation_keys() {
        let s = Settings {
            region: None,
            cloud: None,
            names: Default::default(),
            container_format: "bare".into(),
            visibility: "private".into(),
            protected: true,
            min_ram: 512,
            min_disk: None,
            tags: vec!["golden".into()],
            properties: [("hw_qemu_guest_agent".to_string(), "yes".to_string())].into(),
            members: vec![],
            method: Method::Upload,
            uris: Default::default(),
            stores: vec![],
            keep: None,
            formats: vec!["qcow2".into()],
            import_timeout: 60,
            recipe: "debian-12".into(),
            recipe_id: "path:0123456789abcdef".into(),
        };
        let out = Output {
            file: "x.qcow2".into(),
            disk_format: "qcow2".into(),
            sha512: "00".into(),
            virtual_size: (3 << 30) + 5,
            sbom_sha256: Some("ab".repeat(32)),
        };
        let b = image_body(&s, "debian-12-1.0", &out);
        assert_eq!(b["kiln_sbom_sha256"], "ab".repeat(32));
        assert_eq!(b["visibility"], "private");
        assert_eq!(b["min_disk"], 4);
        assert_eq!(b["min_ram"], 512);
        assert_eq!(b["hw_qemu_guest_agent"], "yes");
        assert_eq!(b["kiln_recipe"], "debian-12");
        assert_eq!(b["kiln_recipe_id"], "path:0123456789abcdef");
        assert_eq!(b["kiln_format"], "qcow2");
        assert!(b.get("protected").is_none(), "protection is set last");
    }

    #[test]
    fn failed_imports_are_recognized() {
        let img = json!({"status": "importing", "os_glance_failed_import": "fs"});
        let tasks = vec![json!({"status": "failure", "message": "404 Not Found"})];
        assert_eq!(
            import_failure(&img, &tasks).unwrap(),
            "import failed for store(s) fs: 404 Not Found"
        );
        let img = json!({"status": "importing", "os_glance_failed_import": ""});
        assert!(import_failure(&img, &[json!({"status": "processing"})]).is_none());
        assert!(import_failure(&img, &tasks).unwrap().contains("404"));
    }

    #[test]
    fn twins_of_one_build_keep_the_oldest_that_did_not_fail() {
        let img = |id: &str, at: &str, status: &str, k: &str| json!({"id": id, "created_at": at, "status": status, "kiln_sha512": k});
        let imgs = vec![
            img("c", "2026-12-07T10:00:02Z", "active", "s"),
            img("b", "2026-12-07T10:00:01Z", "saving", "s"),
            img("a", "2026-12-07T10:00:00Z", "killed", "s"),
            img("0", "2026-12-07T09:00:00Z", "active", "other"),
            img("d", "2026-12-07T10:00:01Z", "queued", "s"),
        ];
        assert_eq!(keeper_of(&imgs, "s").unwrap()["id"], "b");
        // An older build's image of the same bytes, made before kiln_sha512 existed.
        let mut old = imgs.clone();
        old.push(
            json!({"id": "z", "created_at": "2026-01-01T00:00:00Z", "status": "active",
                        "os_hash_value": "s"}),
        );
        assert_eq!(keeper_of(&old, "s").unwrap()["id"], "z");
        assert!(keeper_of(&imgs, "none").is_none());
    }
}
