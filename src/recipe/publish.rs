//! Resolving `publish`: the local catalog and `publish.glance`.

use super::*;

impl Resolver<'_> {
    pub(super) fn publish(
        &mut self,
        r: &Recipe,
        outputs: &[OutputPlan],
        properties: &BTreeMap<String, String>,
        vars: &BTreeMap<String, String>,
        vm: &VmPlan,
    ) -> PublishPlan {
        let p = r.publish.clone().unwrap_or_default();
        let mut glance = Vec::new();
        for (at, g) in p.glance.as_ref().map(|t| t.each()).unwrap_or_default() {
            self.glance_at = at;
            if let Some(s) = self.glance(g, r, outputs, properties, vars, vm) {
                glance.push(s);
            }
        }
        self.distinct_targets(&glance);
        if p.all_or_nothing && glance.len() < 2 {
            self.err(
                "/publish/all_or_nothing",
                "all_or_nothing is for several Glance targets (one target is all or nothing already)",
            );
        }
        PublishPlan {
            local_dir: p.local.and_then(|l| l.dir).map(PathBuf::from),
            glance,
            all_or_nothing: p.all_or_nothing,
        }
    }

    /// The JSON pointer `rest` below the Glance target being resolved.
    fn at(&self, rest: &str) -> String {
        format!("{}{rest}", self.glance_at)
    }

    /// Two targets of one cloud and region would publish the same images twice.
    fn distinct_targets(&mut self, targets: &[crate::plan::GlanceSettings]) {
        for (i, t) in targets.iter().enumerate() {
            let same = |u: &crate::plan::GlanceSettings| u.cloud == t.cloud && u.region == t.region;
            if let Some(j) = targets[..i].iter().position(same) {
                self.err(
                    &format!("/publish/glance/{i}"),
                    format!(
                        "the same cloud and region as target {j} ({} {}): each target is another cloud or region",
                        t.cloud.as_deref().unwrap_or("$OS_CLOUD"),
                        t.region.as_deref().unwrap_or("(its default region)")
                    ),
                );
            }
        }
    }

    /// `publish.glance` → settings with rendered names; every problem reported with its place.
    pub(super) fn glance(
        &mut self,
        g: &GlancePublish,
        r: &Recipe,
        outputs: &[OutputPlan],
        properties: &BTreeMap<String, String>,
        vars: &BTreeMap<String, String>,
        vm: &VmPlan,
    ) -> Option<crate::plan::GlanceSettings> {
        use crate::plan::GlanceSettings as Settings;
        let before = self.errors.len();
        let formats = self.glance_formats(g, outputs);
        let (names, uris) = self.glance_names(g, r, &formats, vars);
        let (cloud, members, visibility) = self.glance_audience(g, r, vars);
        let region = self.glance_region(g, r, vars);
        self.check_glance_method(g);
        let all_props = self.glance_properties(g, properties, vm);
        let recipe_id = self.rotation_id(g);
        if self.errors.len() > before {
            return None;
        }
        Some(Settings {
            cloud,
            region,
            names,
            container_format: g.container_format.clone().unwrap_or_else(|| {
                formats
                    .first()
                    .map_or("bare", |f| f.facts().glance_container)
                    .into()
            }),
            visibility: visibility.as_str().into(),
            protected: g.protected,
            min_ram: g.min_ram,
            min_disk: g.min_disk,
            tags: g.tags.clone(),
            properties: all_props,
            members: members.into_iter().map(|(_, m)| m).collect(),
            method: g.method,
            uris,
            stores: g.stores.clone(),
            keep: g.keep,
            formats: formats
                .iter()
                .filter_map(|f| f.glance_disk_format().map(str::to_string))
                .collect(),
            import_timeout: g.import_timeout.unwrap_or(3600),
            recipe: r.name.clone(),
            recipe_id,
        })
    }

    /// The formats to publish (the first output's by default), each among the outputs and
    /// one Glance knows.
    fn glance_formats(&mut self, g: &GlancePublish, outputs: &[OutputPlan]) -> Vec<Format> {
        let formats: Vec<Format> = if g.formats.is_empty() {
            outputs.iter().map(|o| o.format).take(1).collect()
        } else {
            g.formats.clone()
        };
        for (i, f) in g.formats.iter().enumerate() {
            if !outputs.iter().any(|o| o.format == *f) {
                self.err(
                    &self.at(&format!("/formats/{i}")),
                    format!(
                        "format {} is not among the outputs ({})",
                        f.as_str(),
                        outputs
                            .iter()
                            .map(|o| o.format.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
        for f in &formats {
            if f.glance_disk_format().is_none() {
                let ptr = if g.formats.is_empty() {
                    self.at("")
                } else {
                    self.at("/formats")
                };
                self.err(
                    &ptr,
                    format!(
                        "Glance has no disk_format for {}: publish another output",
                        f.as_str()
                    ),
                );
            }
        }
        formats
    }

    /// Each format's image name (and web-download URI), rendered; names must differ.
    fn glance_names(
        &mut self,
        g: &GlancePublish,
        r: &Recipe,
        formats: &[Format],
        vars: &BTreeMap<String, String>,
    ) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let template = g
            .name
            .clone()
            .unwrap_or_else(|| "{{name}}-{{version}}".into());
        let date = utc_date();
        let mut names = BTreeMap::new();
        let mut uris = BTreeMap::new();
        for f in formats {
            let Some(df) = f.glance_disk_format() else {
                continue;
            };
            let ctx = serde_json::json!({
                "name": r.name, "version": r.version, "format": df, "date": date, "vars": vars,
            });
            match crate::templates::render_str(
                "publish.glance.name",
                &template,
                crate::templates::Format::Plain,
                &ctx,
            ) {
                Ok(n) if n.trim().is_empty() => {
                    self.err(&self.at("/name"), "the image name renders empty")
                }
                Ok(n) => {
                    if names.values().any(|v| v == &n) {
                        self.err(
                &self.at("/name"),
                        format!(
                            "several formats would all be named `{n}`: put {{{{format}}}} in the name"
                        ),
                    );
                    }
                    names.insert(df.to_string(), n);
                }
                Err(e) => self.err(&self.at("/name"), format!("name template: {e}")),
            }
            if let Some(u) = &g.uri {
                match crate::templates::render_str(
                    "publish.glance.uri",
                    u,
                    crate::templates::Format::Plain,
                    &ctx,
                ) {
                    Ok(v) => {
                        uris.insert(df.to_string(), v);
                    }
                    Err(e) => self.err(&self.at("/uri"), format!("uri template: {e}")),
                }
            }
        }
        (names, uris)
    }

    /// The region, rendered (it may use `{{vars.X}}`); empty is the cloud's default.
    fn glance_region(
        &mut self,
        g: &GlancePublish,
        r: &Recipe,
        vars: &BTreeMap<String, String>,
    ) -> Option<String> {
        let var_ctx = serde_json::json!({ "name": r.name, "version": r.version, "vars": vars });
        let rendered = crate::templates::render_str(
            "publish.glance.region",
            g.region.as_deref()?,
            crate::templates::Format::Plain,
            &var_ctx,
        );
        match rendered {
            Ok(v) if v.trim().is_empty() => None,
            Ok(v) if v.chars().any(|c| c.is_control() || c == '/') => {
                self.err(&self.at("/region"), "expected a region name");
                None
            }
            Ok(v) => Some(v.trim().to_string()),
            Err(e) => {
                self.err(&self.at("/region"), format!("region template: {e}"));
                None
            }
        }
    }

    /// Who sees the images: the cloud, the member projects and the visibility they need.
    fn glance_audience(
        &mut self,
        g: &GlancePublish,
        r: &Recipe,
        vars: &BTreeMap<String, String>,
    ) -> (Option<String>, Vec<(usize, String)>, Visibility) {
        // cloud and members may use {{vars.X}} (so one recipe serves several clouds).
        let var_ctx = serde_json::json!({ "name": r.name, "version": r.version, "vars": vars });
        let cloud = match &g.cloud {
            Some(c) => {
                match crate::templates::render_str(
                    "publish.glance.cloud",
                    c,
                    crate::templates::Format::Plain,
                    &var_ctx,
                ) {
                    Ok(v) if v.trim().is_empty() => None,
                    Ok(v) => Some(v),
                    Err(e) => {
                        self.err(&self.at("/cloud"), format!("cloud template: {e}"));
                        None
                    }
                }
            }
            None => None,
        };
        let mut members = Vec::new();
        for (i, m) in g.members.iter().enumerate() {
            match crate::templates::render_str(
                "publish.glance.members",
                m,
                crate::templates::Format::Plain,
                &var_ctx,
            ) {
                Ok(v) if v.trim().is_empty() => {}
                Ok(v) => members.push((i, v.trim().to_string())),
                Err(e) => self.err(&self.at(&format!("/members/{i}")), format!("{e}")),
            }
        }
        let visibility = g.visibility.unwrap_or(if members.is_empty() {
            Visibility::Private
        } else {
            Visibility::Shared
        });
        if !members.is_empty() && visibility != Visibility::Shared {
            self.err(
                &self.at("/visibility"),
                format!(
                    "members need visibility `shared`, not `{}` (Glance refuses members otherwise)",
                    visibility.as_str()
                ),
            );
        }
        for (i, m) in &members {
            if !m.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                self.err(
                    &self.at(&format!("/members/{i}")),
                    "expected a project id (hex digits)",
                );
            }
        }
        (cloud, members, visibility)
    }

    /// The import method's own requirements, the keep count and the tags.
    fn check_glance_method(&mut self, g: &GlancePublish) {
        use crate::vocab::Method;
        match g.method {
            Method::WebDownload if g.uri.is_none() => self.err(
                &self.at("/method"),
                "web-download needs `uri`: where Glance fetches the image",
            ),
            Method::CopyImage if g.stores.is_empty() => self.err(
                &self.at("/method"),
                "copy-image needs `stores`: the stores to copy the image into",
            ),
            Method::Upload if g.stores.len() > 1 => self.err(
                &self.at("/stores"),
                "an upload goes into one store; use method copy-image for several",
            ),
            _ => {}
        }
        if g.uri.is_some() && g.method != Method::WebDownload {
            self.err(&self.at("/uri"), "`uri` is only for method web-download");
        }
        if g.keep == Some(0) {
            self.err(
                &self.at("/keep"),
                "keep must be at least 1 (the image just published)",
            );
        }
        for (i, t) in g.tags.iter().enumerate() {
            if t.is_empty() || t.len() > 255 {
                self.err(
                    &self.at(&format!("/tags/{i}")),
                    "expected a tag of 1 to 255 characters",
                );
            }
        }
    }

    /// The recipe's and the target's properties, none an attribute Glance or kiln sets, with
    /// the hardware the image was built and tested on (what Nova boots it with).
    fn glance_properties(
        &mut self,
        g: &GlancePublish,
        properties: &BTreeMap<String, String>,
        vm: &VmPlan,
    ) -> BTreeMap<String, String> {
        let mut all_props = properties.clone();
        all_props.extend(g.properties.clone());
        for (k, v) in crate::vocab::hardware_properties(vm.arch, vm.firmware, vm.tpm) {
            match all_props.get(k) {
                Some(set) if set != v => {
                    self.err(
                        &property_pointer(&self.glance_at, g, k),
                        format!("`{k}` is {v:?} for this build (from `vm:`), not {set:?}"),
                    );
                }
                _ => {
                    all_props.insert(k.to_string(), v.to_string());
                }
            }
        }
        for k in all_props.keys() {
            let reserved = crate::vocab::GLANCE_CORE_ATTRIBUTES.contains(&k.as_str())
                || crate::vocab::GLANCE_READ_ONLY_ATTRIBUTES.contains(&k.as_str())
                || k.starts_with("os_glance")
                || k == "kiln_recipe"
                || k == "kiln_recipe_id"
                || k == "kiln_format"
                || k == "kiln_sha512";
            if reserved {
                self.err(
                    &property_pointer(&self.glance_at, g, k),
                    format!("`{k}` is an image attribute Glance or kiln sets, not a property"),
                );
            }
        }
        all_props
    }

    /// What rotation knows this recipe's images by: `rotation_id`, else a digest of the
    /// recipe's path.
    fn rotation_id(&mut self, g: &GlancePublish) -> String {
        match &g.rotation_id {
            Some(id) => {
                if id.is_empty() || id.len() > 255 {
                    self.err(&self.at("/rotation_id"), "expected 1 to 255 characters");
                }
                id.clone()
            }
            None => {
                use sha2::Digest as _;
                let path =
                    std::fs::canonicalize(&self.doc.file).unwrap_or_else(|_| self.doc.file.clone());
                let h = sha2::Sha256::digest(path.as_os_str().as_encoded_bytes());
                format!("path:{}", &hex::encode(h)[..16])
            }
        }
    }
}

/// Where property `k` was set: the Glance target's own properties, else the recipe's.
fn property_pointer(at: &str, g: &GlancePublish, k: &str) -> String {
    if g.properties.contains_key(k) {
        format!("{at}/properties/{k}")
    } else {
        format!("/properties/{k}")
    }
}
