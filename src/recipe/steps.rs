//! Resolving what the guest gets: variables, the provisioning steps, cloud-init's settings,
//! sysprep operations and customize steps (elements first, then the recipe), the stage cache's
//! settings.

use super::*;

impl Resolver<'_> {
    /// Variables: element defaults < recipe < `--var`; the host name checked where it was set.
    pub(super) fn variables(
        &mut self,
        r: &Recipe,
        loaded: &[elements::Loaded],
        overrides: &[(String, String)],
    ) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::new();
        for el in loaded {
            vars.extend(el.file.vars.clone());
        }
        vars.extend(r.vars.clone());
        for (k, v) in overrides {
            if let Err(m) = values::check_var(v) {
                self.errors.push(Diagnostic {
                    file: PathBuf::from("--var"),
                    line: 1,
                    column: 1,
                    message: format!("{k}: {m}"),
                });
            }
            if !vars.contains_key(k) {
                let known: Vec<&str> = vars.keys().map(String::as_str).collect();
                let hint = suggest(k, known.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                self.errors.push(Diagnostic {
                    file: PathBuf::from("--var"),
                    line: 1,
                    column: 1,
                    message: format!(
                        "unknown variable `{k}`{hint}: declare it under `vars:` in the recipe"
                    ),
                });
            }
            vars.insert(k.clone(), v.clone());
        }

        // The host name goes into meta-data, answer files and the guest's /etc/hostname.
        if let Some(h) = vars.get("hostname") {
            if let Err(m) = values::hostname(h) {
                if overrides.iter().any(|(k, _)| k == "hostname") {
                    self.errors.push(Diagnostic {
                        file: PathBuf::from("--var"),
                        line: 1,
                        column: 1,
                        message: format!("hostname: {m}"),
                    });
                } else if r.vars.contains_key("hostname") {
                    self.err("/vars/hostname", m);
                } else if let Some(el) = loaded
                    .iter()
                    .rev()
                    .find(|e| e.file.vars.contains_key("hostname"))
                {
                    self.errors.push(el.doc.diag("/vars/hostname", m));
                }
            }
        }
        vars
    }

    /// cloud-init runs the provisioning steps in the build VM and is what the golden image is
    /// configured for (the cloud-init stage): a base known to lack it would boot and wait for
    /// nothing until vm.timeout. Image sources are checked before their first boot.
    pub(super) fn require_cloud_init(&mut self, source: Option<&SourcePlan>) {
        let has = |pkgs: &[String]| pkgs.iter().any(|p| p == "cloud-init");
        match source {
            Some(SourcePlan::Bootstrap(b)) if !has(&b.packages) => self.err(
                "/source/bootstrap",
                "the bootstrapped disk would have no cloud-init, which runs the provisioning \
                 steps and which the golden image is configured for: add the `cloud-init` \
                 element (or cloud-init to source.bootstrap.packages)",
            ),
            Some(SourcePlan::Installer(i))
                if i.kind != AnswerKind::Autoinstall && !has(&i.answers.packages) =>
            {
                self.err(
                    "/source/installer",
                    "the installed system would have no cloud-init, which runs the \
                     provisioning steps and which the golden image is configured for: add the \
                     `cloud-init` element (or cloud-init to source.installer.packages)",
                )
            }
            _ => {}
        }
    }

    /// Element packages (image sources only), element steps, recipe steps.
    pub(super) fn provision(
        &mut self,
        r: &Recipe,
        source: Option<&SourcePlan>,
        loaded: &[elements::Loaded],
    ) -> Vec<ProvisionStep> {
        let mut provision = Vec::new();
        if source.is_some_and(SourcePlan::made_elsewhere) {
            let pkgs = dedup(loaded.iter().flat_map(|e| e.file.packages.iter().cloned()));
            if !pkgs.is_empty() {
                provision.push(ProvisionStep::Packages(pkgs));
            }
        }
        for el in loaded {
            for (i, s) in el.file.provision.iter().enumerate() {
                if let Some(step) = step(
                    s,
                    &el.dir,
                    &el.doc,
                    &format!("/provision/{i}"),
                    &mut self.errors,
                ) {
                    provision.push(step);
                }
            }
        }
        for (i, s) in r.provision.iter().enumerate() {
            let dir = self.dir.clone();
            if let Some(step) = step(
                s,
                &dir,
                self.doc,
                &format!("/provision/{i}"),
                &mut self.errors,
            ) {
                provision.push(step);
            }
        }

        provision
    }

    /// cloud-init's datasources and default user: later settings override earlier ones.
    pub(super) fn cloud_init(&mut self, r: &Recipe, loaded: &[elements::Loaded]) -> CloudInitPlan {
        let mut ci = CloudInit::default();
        for c in loaded
            .iter()
            .map(|e| &e.file.cloud_init)
            .chain([&r.cloud_init])
        {
            if c.datasources.is_some() {
                ci.datasources = c.datasources.clone();
            }
            if c.default_user.is_some() {
                ci.default_user = c.default_user.clone();
            }
        }
        let datasources = ci
            .datasources
            .unwrap_or_else(|| DEFAULT_DATASOURCES.iter().map(|s| s.to_string()).collect());
        for (i, d) in datasources.iter().enumerate() {
            if let Err(m) = values::datasource(d) {
                if r.cloud_init
                    .datasources
                    .as_ref()
                    .is_some_and(|l| l.contains(d))
                {
                    self.err(&format!("/cloud_init/datasources/{i}"), m);
                } else if let Some(el) = loaded.iter().find(|e| {
                    e.file
                        .cloud_init
                        .datasources
                        .as_ref()
                        .is_some_and(|l| l.contains(d))
                }) {
                    self.errors.push(el.doc.diag("/cloud_init/datasources", m));
                }
            }
        }
        if datasources.is_empty() {
            self.err(
                "/cloud_init/datasources",
                "expected at least one datasource",
            );
        }

        CloudInitPlan {
            datasources,
            default_user: ci.default_user,
        }
    }

    /// Sysprep operations (element words, then the recipe's; `defaults` when nobody said
    /// anything) and its options with the customize steps (elements' first).
    pub(super) fn sysprep(
        &mut self,
        r: &Recipe,
        loaded: &[elements::Loaded],
    ) -> (Vec<&'static str>, crate::plan::SysprepOptions) {
        let mut words: Vec<(String, String)> = Vec::new(); // (word, pointer-ish origin)
        for el in loaded {
            words.extend(el.file.sysprep.iter().map(|w| (w.clone(), el.name.clone())));
        }
        if let Some(s) = &r.sysprep {
            words.extend(
                s.operations
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (w.clone(), format!("/sysprep/operations/{i}"))),
            );
        }
        if words.is_empty() {
            words.push(("defaults".into(), "/sysprep".into()));
        }
        let plain: Vec<String> = words.iter().map(|(w, _)| w.clone()).collect();
        let sysprep = match crate::sysprep::resolve(&plain) {
            Ok(ops) => ops,
            Err(errs) => {
                for (i, msg) in errs {
                    let origin = &words[i].1;
                    if origin.starts_with('/') {
                        self.err(origin, msg);
                    } else if let Some(el) = loaded.iter().find(|e| &e.name == origin) {
                        let at = el
                            .file
                            .sysprep
                            .iter()
                            .position(|w| w == &words[i].0)
                            .unwrap_or(0);
                        self.errors
                            .push(el.doc.diag(&format!("/sysprep/{at}"), msg));
                    }
                }
                Vec::new()
            }
        };

        // Customize steps: elements' first (paths relative to each element), then the recipe's.
        let mut customize = Vec::new();
        for el in loaded {
            customize.extend(customize_steps(
                &el.file.customize,
                &el.dir,
                self.trust,
                &el.doc,
                &mut self.errors,
            ));
        }
        customize.extend(customize_steps(
            &r.customize,
            &self.dir,
            self.trust,
            self.doc,
            &mut self.errors,
        ));
        let sp = r.sysprep.clone().unwrap_or_default();
        if !sp.scripts.is_empty() && self.trust == super::Trust::Untrusted {
            self.err(
                "/sysprep/scripts",
                "sysprep scripts run on this host (as virt-sysprep --script does): only a trusted recipe may (--trust-recipe)",
            );
        }
        let sysprep_options = crate::plan::SysprepOptions {
            remove_user_accounts: sp.remove_user_accounts,
            keep_user_accounts: sp.keep_user_accounts,
            scripts: sp.scripts,
            customize,
        };
        if !sysprep_options.customize.is_empty()
            && !sysprep.is_empty()
            && !sysprep.contains(&"customize")
        {
            self.err(
                "/customize",
                "customize steps are given but the sysprep operation `customize` is disabled",
            );
        }

        (sysprep, sysprep_options)
    }

    /// `cache:`: how long a provisioned disk stays good, and the remote's URL.
    pub(super) fn cache(&mut self, c: &CacheSettings) -> (Option<u64>, Option<String>) {
        let cache_max_age_secs = match &c.max_age {
            None => None,
            Some(d) => match parse_max_age(d) {
                Ok(s) => Some(s),
                Err(m) => {
                    self.err("/cache/max_age", m);
                    None
                }
            },
        };
        let cache_remote = c
            .remote
            .clone()
            .filter(|u| match crate::remotecache::parse_url(u) {
                Ok(_) => true,
                Err(m) => {
                    self.err("/cache/remote", m);
                    false
                }
            });
        (cache_max_age_secs, cache_remote)
    }
}
