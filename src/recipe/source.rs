//! Resolving `source`: images, bootstraps and installers, and the file references they use.

use super::*;

impl Resolver<'_> {
    /// A `url` + `checksum` or `path` file reference.
    pub(super) fn file_plan(&mut self, ptr: &str, f: &FileSource) -> FilePlan {
        let checksum_url = f
            .checksum
            .as_ref()
            .and_then(|c| c.strip_prefix("file:"))
            .map(str::to_string);
        if let Some(u) = &checksum_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                self.err(
                    &format!("{ptr}/checksum"),
                    "expected `file:` followed by the http(s) URL of a SHA256SUMS or CHECKSUM file",
                );
            } else if u.starts_with("http://") && !values::loopback_url(u) {
                // Over plain http one network attacker would choose both the file and its sum.
                self.err(
                    &format!("{ptr}/checksum"),
                    "a checksum list must come over https (or give `sha256:HEX` in the recipe): over plain http whoever can change the download can change its checksum too",
                );
            }
        }
        let checksum = f
            .checksum
            .as_ref()
            .filter(|_| checksum_url.is_none())
            .and_then(|c| match parse_checksum(c) {
                Ok(c) => Some(c),
                Err(m) => {
                    self.err(&format!("{ptr}/checksum"), m);
                    None
                }
            });
        match (&f.url, &f.path) {
            (Some(_), Some(_)) | (None, None) => {
                self.err(ptr, "expected exactly one of `url` or `path`")
            }
            (Some(url), None) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    self.err(&format!("{ptr}/url"), "expected an http:// or https:// URL");
                }
                if f.checksum.is_none() {
                    self.err(
                        ptr,
                        "missing `checksum` (\"sha256:HEX\", \"sha512:HEX\" or \"file:URL-of-SHA256SUMS\"): downloads are always verified",
                    );
                }
            }
            (None, Some(p)) => {
                let full = self.dir.join(p);
                if !full.is_file() {
                    self.err(
                        &format!("{ptr}/path"),
                        format!("file {} does not exist", full.display()),
                    );
                }
            }
        }
        FilePlan {
            url: f.url.clone(),
            path: f.path.as_ref().map(|p| self.dir.join(p)),
            checksum,
            checksum_url,
        }
    }

    pub(super) fn installer(
        &mut self,
        i: &InstallerSource,
        loaded: &[elements::Loaded],
        vars: &BTreeMap<String, String>,
    ) -> Option<SourcePlan> {
        let kind = i.answers.kind;
        let media = self.installer_media(i);
        let delivery = i.answers.delivery.unwrap_or(match kind {
            AnswerKind::Autoinstall => Delivery::Seed,
            _ => Delivery::Initrd,
        });
        match (kind, delivery) {
            (AnswerKind::Preseed, Delivery::Seed) => self.err(
                "/source/installer/answers/delivery",
                "debian-installer reads a preseed file from its initrd, not from a seed disk: use `initrd`",
            ),
            (AnswerKind::Autoinstall, Delivery::Initrd) => self.err(
                "/source/installer/answers/delivery",
                "subiquity reads autoinstall from a cloud-init `cidata` seed: use `seed`",
            ),
            _ => {}
        }
        let template = i.answers.template.as_ref().map(|t| {
            let full = self.dir.join(t);
            if !full.is_file() {
                self.err(
                    "/source/installer/answers/template",
                    format!("template file {} does not exist", full.display()),
                );
            }
            full
        });
        let user = &i.user;
        self.check_installer_values(i);
        let mirror = i.mirror.clone().unwrap_or_else(|| match kind {
            AnswerKind::Preseed => "http://deb.debian.org/debian".into(),
            AnswerKind::Autoinstall => "http://archive.ubuntu.com/ubuntu".into(),
            AnswerKind::Kickstart => String::new(),
        });
        let (mirror_protocol, mirror_host, mirror_directory) = split_mirror(&mirror);
        if !mirror.is_empty() && mirror_host.is_empty() {
            self.err(
                "/source/installer/mirror",
                "expected an http:// or https:// URL",
            );
        }
        let timeout_secs = match &i.timeout {
            None => 90 * 60,
            Some(d) => parse_duration(d).unwrap_or_else(|m| {
                self.err("/source/installer/timeout", m);
                0
            }),
        };
        for (n, p) in i.packages.iter().enumerate() {
            if let Err(m) = values::package(p) {
                self.err(&format!("/source/installer/packages/{n}"), m);
            }
        }
        let packages = dedup(
            loaded
                .iter()
                .flat_map(|e| e.file.packages.iter().cloned())
                .chain(i.packages.iter().cloned()),
        );
        let cmdline = installer_cmdline(i, kind, delivery, media.as_ref());
        let media = media?;
        Some(SourcePlan::Installer(Box::new(InstallerPlan {
            media,
            kind,
            template,
            delivery,
            cmdline,
            answers: AnswerVars {
                hostname: vars
                    .get("hostname")
                    .cloned()
                    .unwrap_or_else(|| "localhost".into()),
                user: user.name.clone(),
                full_name: user.full_name.clone().unwrap_or_else(|| user.name.clone()),
                password_hash: user.password_hash.clone(),
                timezone: i.timezone.clone().unwrap_or_else(|| "Etc/UTC".into()),
                locale: i.locale.clone().unwrap_or_else(|| "C.UTF-8".into()),
                keyboard: i.keyboard.clone().unwrap_or_else(|| "us".into()),
                disk_layout: match i.disk_layout {
                    DiskLayout::Direct => "direct".into(),
                    DiskLayout::Lvm => "lvm".into(),
                },
                packages,
                mirror,
                mirror_protocol,
                mirror_host,
                mirror_directory,
                suite: i.suite.clone().unwrap_or_default(),
                proxy: i.proxy.clone().unwrap_or_default(),
            },
            timeout_secs,
            mirror_check: i.mirror_check.unwrap_or(kind == AnswerKind::Preseed),
        })))
    }

    /// The installer media: an ISO (kernel and initrd found inside it), or kernel and initrd.
    fn installer_media(&mut self, i: &InstallerSource) -> Option<Media> {
        let kind = i.answers.kind;
        match (&i.iso, &i.kernel, &i.initrd) {
            (Some(iso), None, None) => {
                let iso = self.file_plan("/source/installer/iso", iso);
                let (k, r) = default_iso_paths(kind);
                Some(Media::Iso {
                    iso,
                    kernel_paths: i
                        .kernel_path
                        .clone()
                        .map(|p| vec![p])
                        .unwrap_or_else(|| k.iter().map(|s| s.to_string()).collect()),
                    initrd_paths: i
                        .initrd_path
                        .clone()
                        .map(|p| vec![p])
                        .unwrap_or_else(|| r.iter().map(|s| s.to_string()).collect()),
                })
            }
            (None, Some(k), Some(r)) => {
                if i.kernel_path.is_some() || i.initrd_path.is_some() {
                    self.err(
                        "/source/installer",
                        "`kernel_path`/`initrd_path` name files inside an `iso`",
                    );
                }
                Some(Media::Netboot {
                    kernel: self.file_plan("/source/installer/kernel", k),
                    initrd: self.file_plan("/source/installer/initrd", r),
                })
            }
            _ => {
                self.err(
                    "/source/installer",
                    "expected either `iso`, or `kernel` and `initrd`",
                );
                None
            }
        }
    }

    /// The values that reach the answer file, each checked for what it is.
    fn check_installer_values(&mut self, i: &InstallerSource) {
        let user = &i.user;
        if user.name.is_empty()
            || !user
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c))
        {
            self.err(
                "/source/installer/user/name",
                "expected a user name of lower-case letters, digits, `-` and `_`",
            );
        }
        if let Some(f) = &user.full_name {
            if let Err(m) = values::full_name(f) {
                self.err("/source/installer/user/full_name", m);
            }
        }
        for (key, what, v) in [
            ("timezone", "time zone", &i.timezone),
            ("locale", "locale", &i.locale),
            ("keyboard", "keyboard layout", &i.keyboard),
        ] {
            if let Some(Err(m)) = v.as_deref().map(|v| values::token(what, v)) {
                self.err(&format!("/source/installer/{key}"), m);
            }
        }
        if let Some(Err(m)) = i
            .suite
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(values::suite)
        {
            self.err("/source/installer/suite", m);
        }
        for (key, v) in [("mirror", &i.mirror), ("proxy", &i.proxy)] {
            if let Some(Err(m)) = v.as_deref().filter(|v| !v.is_empty()).map(values::url) {
                self.err(&format!("/source/installer/{key}"), m);
            }
        }
        if let Some(h) = &user.password_hash {
            if !(h.starts_with('$') && h.matches('$').count() >= 3) {
                self.err(
                "/source/installer/user/password_hash",
                "expected a crypt(3) hash such as `$6$salt$…` (mkpasswd -m sha-512), never a plain password",
            );
            }
        }
    }

    pub(super) fn source(
        &mut self,
        r: &Recipe,
        loaded: &[elements::Loaded],
        arch: crate::vocab::Arch,
    ) -> Option<SourcePlan> {
        match (&r.source.image, &r.source.bootstrap) {
            (Some(_), Some(_)) | (None, None) => {
                self.err(
                    "/source",
                    "expected exactly one of `image`, `bootstrap` or `installer` under `source`",
                );
                None
            }
            (Some(img), None) => {
                // url/path/checksum follow the same rules as the installer's files.
                let f = self.file_plan(
                    "/source/image",
                    &FileSource {
                        url: img.url.clone(),
                        path: img.path.clone(),
                        checksum: img.checksum.clone(),
                    },
                );
                if img.url.is_some() == img.path.is_some() {
                    return None;
                }
                Some(SourcePlan::Image(ImagePlan {
                    file: f,
                    format: img.format.clone(),
                }))
            }
            (None, Some(b)) => {
                let size_bytes = match &b.size {
                    None => 2 << 30,
                    Some(s) => match parse_size(s, 1) {
                        Ok(v) if v >= 512 << 20 => v,
                        Ok(_) => {
                            self.err("/source/bootstrap/size", "expected at least 512M");
                            2 << 30
                        }
                        Err(m) => {
                            self.err("/source/bootstrap/size", m);
                            2 << 30
                        }
                    },
                };
                let layout = b.layout.unwrap_or(arch.default_layout());
                let mut packages: Vec<String> = std::iter::once(&arch.kernel_package())
                    .chain(crate::plan::BASE_PACKAGES)
                    .chain(crate::bootstrap::boot_packages(layout, arch))
                    .map(|s| s.to_string())
                    .collect();
                packages.extend(loaded.iter().flat_map(|e| e.file.packages.iter().cloned()));
                packages.extend(b.packages.iter().cloned());
                for (i, p) in b.packages.iter().enumerate() {
                    if !valid_package_name(p) {
                        self.err(
                            &format!("/source/bootstrap/packages/{i}"),
                            format!("`{p}` is not a valid package name"),
                        );
                    }
                }
                // Words of mmdebstrap's argv and lines of sources.list.
                if let Err(m) = values::suite(&b.suite) {
                    self.err("/source/bootstrap/suite", m);
                }
                for (key, v) in [
                    ("mirror", &b.mirror),
                    ("security_mirror", &b.security_mirror),
                ] {
                    if let Some(Err(m)) = v.as_deref().filter(|v| *v != "none").map(values::url) {
                        self.err(&format!("/source/bootstrap/{key}"), m);
                    }
                }
                let security_mirror = match b.security_mirror.as_deref() {
                    Some("none") => None,
                    Some(m) => Some(m.to_string()),
                    None => Some("http://deb.debian.org/debian-security".into()),
                };
                Some(SourcePlan::Bootstrap(BootstrapPlan {
                    distro: "debian".into(),
                    suite: b.suite.clone(),
                    mirror: b
                        .mirror
                        .clone()
                        .unwrap_or_else(|| "http://deb.debian.org/debian".into()),
                    security_mirror,
                    packages: dedup(packages.into_iter()),
                    size_bytes,
                    layout,
                    arch,
                }))
            }
        }
    }
}

/// "sha256:HEX" / "sha512:HEX".
/// Where the kernel and initrd usually are on an installer ISO, in the order tried.
pub fn default_iso_paths(kind: AnswerKind) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        AnswerKind::Preseed => (
            &[
                "install.amd/vmlinuz",
                "install/vmlinuz",
                "install/netboot/ubuntu-installer/amd64/linux",
            ],
            &[
                "install.amd/initrd.gz",
                "install/initrd.gz",
                "install/netboot/ubuntu-installer/amd64/initrd.gz",
            ],
        ),
        AnswerKind::Autoinstall => (&["casper/vmlinuz"], &["casper/initrd"]),
        AnswerKind::Kickstart => (
            &["images/pxeboot/vmlinuz", "isolinux/vmlinuz"],
            &["images/pxeboot/initrd.img", "isolinux/initrd.img"],
        ),
    }
}

/// `http://host:port/dir` → ("http", "host:port", "/dir").
pub fn split_mirror(url: &str) -> (String, String, String) {
    let Some((proto, rest)) = url.split_once("://") else {
        return (String::new(), String::new(), String::new());
    };
    let (host, dir) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (
        proto.to_string(),
        host.to_string(),
        dir.trim_end_matches('/').to_string(),
    )
}

pub fn parse_checksum(s: &str) -> Result<Checksum, String> {
    let (algo, hex) = s.split_once(':').ok_or_else(|| {
        format!("expected \"sha256:HEX\", \"sha512:HEX\" or \"file:URL\", found `{s}`")
    })?;
    let len = match algo {
        "sha256" => 64,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "unsupported checksum algorithm `{algo}`; expected sha256 or sha512"
            ))
        }
    };
    if hex.len() != len || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("expected {len} hex digits after `{algo}:`"));
    }
    Ok(Checksum {
        algorithm: algo.into(),
        hex: hex.to_ascii_lowercase(),
    })
}

/// The installer's kernel command line: the answer kind's own arguments, the repository for a
/// kickstart ISO, the serial console, then the recipe's.
fn installer_cmdline(
    i: &InstallerSource,
    kind: AnswerKind,
    delivery: Delivery,
    media: Option<&Media>,
) -> String {
    let base_cmdline = match (kind, delivery) {
        (AnswerKind::Preseed, _) => "auto=true priority=critical".to_string(),
        (AnswerKind::Autoinstall, _) => "autoinstall ds=nocloud".to_string(),
        (AnswerKind::Kickstart, Delivery::Initrd) => "inst.ks=file:/ks.cfg inst.text".into(),
        (AnswerKind::Kickstart, Delivery::Seed) => {
            "inst.ks=hd:LABEL=OEMDRV:/ks.cfg inst.text".into()
        }
    };
    let repo = match (kind, media) {
        (AnswerKind::Kickstart, Some(Media::Iso { .. })) => " inst.repo=cdrom",
        _ => "",
    };
    format!(
        "{base_cmdline}{repo} console=ttyS0,115200n8{}",
        i.cmdline
            .as_ref()
            .map(|c| format!(" {}", c.trim()))
            .unwrap_or_default()
    )
}
