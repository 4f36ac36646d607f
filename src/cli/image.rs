//! `kiln image …`: Glance images, shaped like `openstack image` (same flag names where one
//! exists). Images are named by id or by a unique name.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::cancel_on_signals;
use crate::exit;
use crate::glance::publish::{self, Method, NewImage};
use crate::glance::{Glance, GlanceError};

pub use super::image_args::*;

fn fail(e: GlanceError) -> i32 {
    errln!("error: {e}");
    if e.is_user_error() {
        exit::INVALID_INPUT
    } else {
        exit::BUILD_FAILED
    }
}

fn print_image(img: &Value, format: OutFormat) {
    match format {
        OutFormat::Json => outln!("{}", serde_json::to_string_pretty(img).expect("json")),
        OutFormat::Table => {
            if let Some(o) = img.as_object() {
                for (k, v) in o {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Array(a) => a
                            .iter()
                            .map(|x| x.as_str().map(str::to_string).unwrap_or(x.to_string()))
                            .collect::<Vec<_>>()
                            .join(", "),
                        other => other.to_string(),
                    };
                    outln!("{k:<24} {v}");
                }
            }
        }
    }
}

fn print_rows(rows: &[Value], cols: &[(&str, &str, usize)], format: OutFormat) {
    match format {
        OutFormat::Json => outln!("{}", serde_json::to_string_pretty(rows).expect("json")),
        OutFormat::Table => {
            let line = |cells: Vec<String>| {
                let mut s = String::new();
                for (c, (_, _, w)) in cells.iter().zip(cols) {
                    s.push_str(&format!("{c:<w$}  ", w = *w));
                }
                outln!("{}", s.trim_end());
            };
            line(cols.iter().map(|(h, _, _)| h.to_string()).collect());
            for r in rows {
                line(
                    cols.iter()
                        .map(|(_, k, _)| match &r[*k] {
                            Value::String(s) => s.clone(),
                            Value::Null => String::new(),
                            v => v.to_string(),
                        })
                        .collect(),
                );
            }
        }
    }
}

/// Resolve an image for a member project: pending shared images are not in the default
/// listing, so look at every membership status.
fn find_shared(g: &Glance, image: &str) -> Result<Value, GlanceError> {
    if crate::glance::looks_like_uuid(image) {
        return g.get(image);
    }
    let hits = g.list(&[
        ("name".into(), image.into()),
        ("member_status".into(), "all".into()),
        ("visibility".into(), "shared".into()),
    ])?;
    match hits.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(GlanceError::NotFound(format!(
            "no image `{image}` shared with cloud {}",
            g.cloud
        ))),
        _ => Err(GlanceError::NotFound(format!(
            "several shared images are named `{image}`: use an id"
        ))),
    }
}

fn id_of(img: &Value) -> String {
    img["id"].as_str().unwrap_or_default().to_string()
}

pub fn run(cloud: Option<&str>, region: Option<&str>, command: ImageCommand) -> i32 {
    // Flag combinations are checked before connecting.
    if let ImageCommand::Create(a) = &command {
        if let Some(f) = &a.file {
            if !f.is_file() {
                return super::usage_error(format!("--file {} does not exist", f.display()));
            }
        }
        match a.import_method {
            Method::WebDownload if a.uri.is_none() => {
                return super::usage_error("--import-method web-download needs --uri")
            }
            Method::GlanceDirect | Method::CopyImage if a.file.is_none() => {
                return super::usage_error(format!(
                    "--import-method {} needs --file",
                    a.import_method.as_str()
                ));
            }
            Method::CopyImage if a.stores.is_empty() => {
                return super::usage_error("--import-method copy-image needs --store")
            }
            _ => {}
        }
        if !a.member.is_empty() && matches!(a.visibility.get(), Some(v) if v != "shared") {
            return super::usage_error(
                "--member needs a shared image (not --private/--public/--community)",
            );
        }
    }
    let g = match Glance::connect_in(cloud, region, &super::tunables().glance) {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    let cancel = cancel_on_signals();
    match dispatch(&g, command, &cancel) {
        Ok(code) => code,
        Err(e) if cancel.is_cancelled() => {
            errln!("interrupted: {e}");
            exit::INTERRUPTED
        }
        Err(e) => fail(e),
    }
}

fn dispatch(
    g: &Glance,
    command: ImageCommand,
    cancel: &crate::process::Cancel,
) -> Result<i32, GlanceError> {
    let cancel = cancel.clone();
    match command {
        ImageCommand::List {
            name,
            tag,
            status,
            visibility,
            property,
            sort,
            format,
        } => {
            let mut q: Vec<(String, String)> = Vec::new();
            q.extend(name.map(|n| ("name".to_string(), n)));
            q.extend(tag.into_iter().map(|t| ("tag".to_string(), t)));
            q.extend(status.map(|v| ("status".to_string(), v)));
            q.extend(visibility.map(|v| ("visibility".to_string(), v)));
            q.extend(property);
            q.extend(sort.map(|v| ("sort".to_string(), v)));
            list(g, &q, format)?
        }
        ImageCommand::Show { image, format } => print_image(&g.find(&image)?, format),
        ImageCommand::Create(a) => return create(g, *a, &cancel),
        ImageCommand::Set(a) => set(g, *a)?,
        ImageCommand::Unset {
            image,
            property,
            tag,
        } => unset(g, &image, &property, &tag)?,
        ImageCommand::Tag { command } => match command {
            TagCommand::Add { image, tags } => {
                let id = id_of(&g.find(&image)?);
                for t in &tags {
                    g.add_tag(&id, t)?;
                }
            }
            TagCommand::Remove { image, tags } => {
                let img = g.find(&image)?;
                let id = id_of(&img);
                for t in &tags {
                    let has = img["tags"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == t.as_str()));
                    if !has {
                        return Err(GlanceError::NotFound(format!(
                            "image {id} has no tag `{t}`"
                        )));
                    }
                    g.remove_tag(&id, t)?;
                }
            }
        },
        ImageCommand::Member { command } => match command {
            MemberCommand::Add { image, project } => {
                let id = id_of(&g.find(&image)?);
                let m = g.add_member(&id, &project)?;
                print_image(&m, OutFormat::Table);
            }
            MemberCommand::Remove { image, project } => {
                let id = id_of(&g.find(&image)?);
                g.remove_member(&id, &project)?;
            }
            MemberCommand::List { image, format } => {
                let id = id_of(&g.find(&image)?);
                print_rows(
                    &g.members(&id)?,
                    &[
                        ("Image ID", "image_id", 36),
                        ("Member ID", "member_id", 32),
                        ("Status", "status", 8),
                    ],
                    format,
                );
            }
        },
        ImageCommand::Accept { image } => member_status(g, &image, "accepted")?,
        ImageCommand::Reject { image } => member_status(g, &image, "rejected")?,
        ImageCommand::Deactivate { image } => {
            g.action(&id_of(&g.find(&image)?), "deactivate")?;
        }
        ImageCommand::Reactivate { image } => {
            g.action(&id_of(&g.find(&image)?), "reactivate")?;
        }
        ImageCommand::Download { image, file } => {
            let img = g.find(&image)?;
            let t = g.download(&img, &file, &cancel)?;
            errln!(
                "downloaded {} ({}) to {} in {:.1} s, {} verified",
                id_of(&img),
                crate::progress::human_bytes(t.size),
                file.display(),
                t.seconds,
                if t.sha512.is_empty() {
                    "MD5"
                } else {
                    "SHA-512"
                }
            );
        }
        ImageCommand::Delete { images } => {
            // Resolve all first: a typo must not leave half the list deleted.
            let ids = images
                .iter()
                .map(|i| g.find(i).map(|v| id_of(&v)))
                .collect::<Result<Vec<_>, _>>()?;
            for id in ids {
                g.delete(&id)?;
                errln!("deleted {id}");
            }
        }
        ImageCommand::Import {
            image,
            method,
            file,
            uri,
            stores,
            timeout,
        } => {
            let how = Import {
                method,
                file,
                uri,
                stores,
                timeout: Duration::from_secs(timeout),
            };
            import(g, &image, how, &cancel)?
        }
        ImageCommand::Tasks { image, format } => {
            let id = id_of(&g.find(&image)?);
            print_rows(
                &g.tasks(&id)?,
                &[
                    ("ID", "id", 36),
                    ("Type", "type", 8),
                    ("Status", "status", 10),
                    ("Message", "message", 0),
                ],
                format,
            );
        }
        ImageCommand::Cache { command } => cache(g, command)?,
    }
    Ok(exit::OK)
}

/// `kiln image list`: the images the query selects, every page.
fn list(g: &Glance, q: &[(String, String)], format: OutFormat) -> Result<(), GlanceError> {
    let images = g.list(q)?;
    print_rows(
        &images,
        &[
            ("ID", "id", 36),
            ("Name", "name", 30),
            ("Status", "status", 11),
            ("Format", "disk_format", 6),
            ("Visibility", "visibility", 10),
            ("Size", "size", 12),
        ],
        format,
    );
    Ok(())
}

/// `kiln image set`: core attributes and properties in one patch, then tags.
fn set(g: &Glance, a: SetArgs) -> Result<(), GlanceError> {
    let img = g.find(&a.image)?;
    let id = id_of(&img);
    let mut props: Vec<(String, Value)> = Vec::new();
    props.extend(a.name.map(|v| ("name".to_string(), json!(v))));
    props.extend(
        a.visibility
            .get()
            .map(|v| ("visibility".to_string(), json!(v))),
    );
    props.extend(
        a.protected
            .get()
            .map(|v| ("protected".to_string(), json!(v))),
    );
    props.extend(a.min_disk.map(|v| ("min_disk".to_string(), json!(v))));
    props.extend(a.min_ram.map(|v| ("min_ram".to_string(), json!(v))));
    props.extend(a.disk_format.map(|v| ("disk_format".to_string(), json!(v))));
    props.extend(
        a.container_format
            .map(|v| ("container_format".to_string(), json!(v))),
    );
    props.extend(a.property.into_iter().map(|(k, v)| (k, json!(v))));
    if !props.is_empty() {
        g.patch(&id, &crate::glance::set_ops(&img, &props))?;
    }
    for t in &a.tag {
        g.add_tag(&id, t)?;
    }
    print_image(&g.get(&id)?, OutFormat::Table);
    Ok(())
}

/// `kiln image unset`: properties (each must exist) and tags.
fn unset(g: &Glance, image: &str, property: &[String], tag: &[String]) -> Result<(), GlanceError> {
    let img = g.find(image)?;
    let id = id_of(&img);
    let missing: Vec<&String> = property.iter().filter(|k| img.get(*k).is_none()).collect();
    if !missing.is_empty() {
        return Err(GlanceError::NotFound(format!(
            "image {id} has no propert{} {}",
            if missing.len() == 1 { "y" } else { "ies" },
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let ops: Vec<Value> = property
        .iter()
        .map(|k| json!({"op": "remove", "path": crate::glance::pointer(k)}))
        .collect();
    if !ops.is_empty() {
        g.patch(&id, &ops)?;
    }
    for t in tag {
        g.remove_tag(&id, t)?;
    }
    Ok(())
}

/// `kiln image import`'s options.
struct Import {
    method: ImportMethod,
    file: Option<PathBuf>,
    uri: Option<String>,
    stores: Vec<String>,
    timeout: Duration,
}

/// `kiln image import`: stage or name the data, start the import, follow it to its end.
fn import(
    g: &Glance,
    image: &str,
    a: Import,
    cancel: &crate::process::Cancel,
) -> Result<(), GlanceError> {
    let Import {
        method,
        file,
        uri,
        stores,
        timeout,
    } = a;
    let img = g.find(image)?;
    let id = id_of(&img);
    let with_stores = |mut body: Value| {
        if !stores.is_empty() {
            body["stores"] = json!(stores);
        }
        body
    };
    match method {
        ImportMethod::GlanceDirect => {
            if let Some(f) = &file {
                g.upload(
                    &id,
                    f,
                    crate::glance::UploadOptions {
                        stage: true,
                        store: None,
                    },
                    cancel,
                )?;
            }
            g.import(
                &id,
                &with_stores(json!({"method": {"name": "glance-direct"}})),
            )?;
        }
        ImportMethod::WebDownload => {
            let uri = uri.ok_or_else(|| GlanceError::Config("web-download needs --uri".into()))?;
            g.import(
                &id,
                &with_stores(json!({"method": {"name": "web-download", "uri": uri}})),
            )?;
        }
        ImportMethod::CopyImage => {
            if stores.is_empty() {
                return Err(GlanceError::Config("copy-image needs --store".into()));
            }
            g.import(&id, &with_stores(json!({"method": {"name": "copy-image"}})))?;
        }
    }
    let want = if method == ImportMethod::CopyImage {
        stores.clone()
    } else {
        Vec::new()
    };
    let img = publish::follow_import(g, &id, &want, timeout, cancel)?;
    print_image(&img, OutFormat::Table);
    Ok(())
}

/// `kiln image cache`: Glance's image cache (admin).
fn cache(g: &Glance, command: CacheCommand) -> Result<(), GlanceError> {
    match command {
        CacheCommand::List { format } => {
            let v = g.cache_list()?;
            match format {
                OutFormat::Json => {
                    outln!("{}", serde_json::to_string_pretty(&v).expect("json"))
                }
                OutFormat::Table => {
                    outln!("{:<36}  {:<7}  {:>12}  Hits", "ID", "State", "Size");
                    for c in v["cached_images"].as_array().into_iter().flatten() {
                        outln!(
                            "{:<36}  {:<7}  {:>12}  {}",
                            c["image_id"].as_str().unwrap_or(""),
                            "cached",
                            c["size"],
                            c["hits"]
                        );
                    }
                    for q in v["queued_images"].as_array().into_iter().flatten() {
                        outln!("{:<36}  {:<7}", q.as_str().unwrap_or(""), "queued");
                    }
                }
            }
        }
        CacheCommand::Queue { images } => {
            for i in &images {
                let id = id_of(&g.find(i)?);
                g.cache_queue(&id)?;
                errln!("queued {id} for caching");
            }
        }
        CacheCommand::Delete { images } => {
            for i in &images {
                let id = id_of(&g.find(i)?);
                g.cache_delete(&id)?;
                errln!("removed {id} from the cache");
            }
        }
        CacheCommand::Clear { target } => g.cache_clear(target.as_deref().unwrap_or(""))?,
        CacheCommand::Clean => g.cache_job("clean")?,
        CacheCommand::Prune => g.cache_job("prune")?,
    }
    Ok(())
}

/// This project's answer to an image shared with it.
fn member_status(g: &Glance, image: &str, status: &str) -> Result<(), GlanceError> {
    let project = g.project_id.clone().ok_or_else(|| {
        GlanceError::Config(
            "the token names no project: accept/reject needs a project-scoped cloud".into(),
        )
    })?;
    let id = id_of(&find_shared(g, image)?);
    g.set_member_status(&id, &project, status)?;
    errln!("{status} image {id} for project {project}");
    Ok(())
}

fn create(g: &Glance, a: CreateArgs, cancel: &crate::process::Cancel) -> Result<i32, GlanceError> {
    // qemu-img probes the format and the virtual size (for min_disk); a raw file given as
    // raw needs neither.
    let needs_probe = a.disk_format.is_none()
        || (a.min_disk.is_none() && a.disk_format.as_deref() != Some("raw"));
    let raw_size = match (&a.file, a.disk_format.as_deref()) {
        (Some(f), Some("raw")) => std::fs::metadata(f).ok().map(|m| m.len()),
        _ => None,
    };
    let info = match &a.file {
        Some(f) if needs_probe => Some(
            crate::qemu_img::info(f, cancel)
                .map_err(|e| GlanceError::Config(format!("probing {}: {e}", f.display())))?,
        ),
        _ => None,
    };
    let disk_format = match (&a.disk_format, &info) {
        (Some(d), _) => d.clone(),
        (None, Some(i)) => crate::vocab::Format::from_qemu_img(&i.format)
            .and_then(|f| f.glance_disk_format())
            .unwrap_or(&i.format)
            .to_string(),
        (None, None) => "raw".into(),
    };
    let visibility = a.visibility.get().unwrap_or(if a.member.is_empty() {
        "private"
    } else {
        "shared"
    });
    let min_disk = a.min_disk.unwrap_or_else(|| {
        info.as_ref()
            .map(|i| i.virtual_size)
            .or(raw_size)
            .map(publish::min_disk_gib)
            .unwrap_or(0)
    });
    let mut body = json!({
        "name": a.name,
        "disk_format": disk_format,
        "container_format": a.container_format,
        "visibility": visibility,
        "min_disk": min_disk,
        "min_ram": a.min_ram,
        "tags": a.tag,
    });
    for (k, v) in &a.property {
        body[k] = json!(v);
    }
    let img = match &a.file {
        None if a.import_method == Method::WebDownload => {
            let new = NewImage {
                body,
                protected: a.protected.get().unwrap_or(false),
                members: a.member,
                method: Method::WebDownload,
                uri: a.uri,
                stores: a.stores,
                file: None,
                expect_sha512: None,
                import_timeout: Duration::from_secs(3600),
            };
            publish::create_image(g, &new, cancel)?
        }
        None => {
            // A queued record, to be filled by `kiln image import`.
            if a.protected.get() == Some(true) {
                body["protected"] = json!(true);
            }
            g.create(&body)?
        }
        Some(f) => {
            let new = NewImage {
                body,
                protected: a.protected.get().unwrap_or(false),
                members: a.member,
                method: a.import_method,
                uri: a.uri,
                stores: a.stores,
                file: Some(f.clone()),
                expect_sha512: None,
                import_timeout: Duration::from_secs(3600),
            };
            publish::create_image(g, &new, cancel)?
        }
    };
    print_image(&img, a.format);
    Ok(exit::OK)
}
