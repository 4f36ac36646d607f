//! Every setting kiln takes from its environment, read once (by `cli/`, at start-up) and passed
//! down as a value: nothing below reads the environment itself. A tunable that can change an
//! output's bytes is part of that output's stage-cache key (see `stagecache`).

use std::path::PathBuf;
use std::time::Duration;

/// The streamOptimized VMDK writer (`KILN_VMDK_WRITER`): kiln's parallel one, or qemu-img's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VmdkWriter {
    #[default]
    Kiln,
    QemuImg,
}

/// How kiln reaches a cloud: the standard OpenStack variables and kiln's Glance knobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlanceEnv {
    /// `OS_CLOUD`.
    pub os_cloud: Option<String>,
    /// `OS_CLIENT_CONFIG_FILE`, `OS_CLIENT_SECURE_FILE`: extra clouds.yaml and secure.yaml.
    pub config_file: Option<String>,
    pub secure_file: Option<String>,
    /// `OS_AUTH_URL` is set: credentials come from the `OS_*` variables.
    pub auth_url_set: bool,
    /// `KILN_GLANCE_TIMEOUT` as given (validated where it is used, with its own message).
    pub stall_timeout: Option<String>,
    /// `KILN_GLANCE_CLEANUP_TIMEOUT`: how long a failed record's deletion is retried.
    pub cleanup_timeout: Duration,
    /// `KILN_GLANCE_PAGE_SIZE`: images per listed page (the tests prove paging with it).
    pub page_size: u32,
    /// `HOME`, for `~/` in a cacert path.
    pub home: Option<PathBuf>,
}

/// The S3 variables the remote stage cache checks before it starts (`object_store` reads the
/// credentials themselves).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Env {
    pub access_key_set: bool,
    pub endpoint_url: Option<String>,
    pub region_set: bool,
    /// `KILN_CACHE_SIGNING_KEY`: the file holding the secret key pushes are signed with.
    pub signing_key_file: Option<PathBuf>,
    /// `KILN_CACHE_TRUSTED_KEYS`: public keys (`NAME:BASE64`, space-separated) one of which
    /// must have signed an entry before it is pulled.
    pub trusted_keys: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunables {
    /// `KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
    pub cache_dir: PathBuf,
    /// `KILN_CACHE_REMOTE`: the remote stage cache when neither flag nor recipe names one.
    pub cache_remote: Option<String>,
    /// `KILN_CACHE_MAX_SIZE` as given (a size; parsed where it is used).
    pub cache_max_size: Option<String>,
    /// `KILN_VM_DIR`: where VM files live when qemu runs as another user.
    pub vm_dir: PathBuf,
    /// `KILN_ELEMENTS_PATH` (colon-separated), then `KILN_DATA_DIR/elements`.
    pub elements_path: Vec<PathBuf>,
    /// `KILN_TRUSTED_RECIPES` (colon-separated directories): recipes below them are trusted
    /// as with `--trust-recipe`.
    pub trusted_recipes: Vec<PathBuf>,
    /// The user's kiln configuration file: `KILN_CONFIG`, else `XDG_CONFIG_HOME/kiln/config.yaml`,
    /// else `HOME/.config/kiln/config.yaml` (its `trusted_recipes:` list adds to the above).
    pub user_config: Option<PathBuf>,
    /// `KILN_HOST_PACKAGES=0`: apt runs in the guest instead of on the host.
    pub host_packages: bool,
    /// `KILN_DIRECT_BOOT=0`: the build VM boots through its firmware, GRUB and cloud-init.
    pub direct_boot: bool,
    pub vmdk_writer: VmdkWriter,
    pub glance: GlanceEnv,
    pub s3: S3Env,
    /// `KILN_TOOLS_VENV`: the validators' venv (pyspdxtools, pykickstart); the tests' only.
    pub tools_venv: PathBuf,
}

impl Default for Tunables {
    /// What an empty environment gives (tests, and code that never reads the environment).
    fn default() -> Tunables {
        Tunables::from_lookup(|_| None)
    }
}

impl Tunables {
    /// Read the process's environment (once, in `cli/`).
    pub fn from_env() -> Tunables {
        Tunables::from_lookup(|k| std::env::var(k).ok())
    }

    /// The tunables from any variable lookup (pure: the tests give a table).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Tunables {
        let set = |k: &str| get(k).filter(|v| !v.is_empty());
        let home = get("HOME").map(PathBuf::from);
        let cache_dir = match (get("KILN_CACHE_DIR"), get("XDG_CACHE_HOME")) {
            (Some(d), _) => PathBuf::from(d),
            (None, Some(x)) => PathBuf::from(x).join("kiln"),
            (None, None) => home
                .clone()
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".cache/kiln"),
        };
        let mut elements_path: Vec<PathBuf> = get("KILN_ELEMENTS_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(d) = set("KILN_DATA_DIR") {
            elements_path.push(PathBuf::from(d).join("elements"));
        }
        Tunables {
            cache_dir,
            cache_remote: get("KILN_CACHE_REMOTE"),
            cache_max_size: get("KILN_CACHE_MAX_SIZE"),
            vm_dir: get("KILN_VM_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/lib/kiln/vm")),
            elements_path,
            user_config: set("KILN_CONFIG").map(PathBuf::from).or_else(|| {
                set("XDG_CONFIG_HOME")
                    .map(PathBuf::from)
                    .or_else(|| home.as_ref().map(|h| h.join(".config")))
                    .map(|d| d.join("kiln/config.yaml"))
            }),
            trusted_recipes: get("KILN_TRUSTED_RECIPES")
                .map(|p| {
                    p.split(':')
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
            host_packages: get("KILN_HOST_PACKAGES").as_deref() != Some("0"),
            direct_boot: get("KILN_DIRECT_BOOT").as_deref() != Some("0"),
            vmdk_writer: match get("KILN_VMDK_WRITER").as_deref() {
                Some("qemu-img") => VmdkWriter::QemuImg,
                _ => VmdkWriter::Kiln,
            },
            glance: GlanceEnv {
                os_cloud: set("OS_CLOUD"),
                config_file: get("OS_CLIENT_CONFIG_FILE"),
                secure_file: get("OS_CLIENT_SECURE_FILE"),
                auth_url_set: get("OS_AUTH_URL").is_some(),
                stall_timeout: get("KILN_GLANCE_TIMEOUT"),
                cleanup_timeout: Duration::from_secs(
                    get("KILN_GLANCE_CLEANUP_TIMEOUT")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(120),
                ),
                page_size: get("KILN_GLANCE_PAGE_SIZE")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(100),
                home,
            },
            s3: S3Env {
                access_key_set: get("AWS_ACCESS_KEY_ID").is_some(),
                endpoint_url: get("AWS_ENDPOINT_URL"),
                region_set: get("AWS_REGION").is_some() || get("AWS_DEFAULT_REGION").is_some(),
                signing_key_file: get("KILN_CACHE_SIGNING_KEY").map(PathBuf::from),
                trusted_keys: get("KILN_CACHE_TRUSTED_KEYS"),
            },
            tools_venv: PathBuf::from(
                get("KILN_TOOLS_VENV").unwrap_or_else(|| "/opt/kiln-tools-venv".into()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Tunables {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Tunables::from_lookup(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn the_cache_directory_follows_kiln_then_xdg_then_home() {
        assert_eq!(with(&[]).cache_dir, PathBuf::from("/root/.cache/kiln"));
        assert_eq!(
            with(&[("HOME", "/h")]).cache_dir,
            PathBuf::from("/h/.cache/kiln")
        );
        assert_eq!(
            with(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]).cache_dir,
            PathBuf::from("/x/kiln")
        );
        assert_eq!(
            with(&[("KILN_CACHE_DIR", "/k"), ("XDG_CACHE_HOME", "/x")]).cache_dir,
            PathBuf::from("/k")
        );
    }

    #[test]
    fn switches_are_on_unless_set_to_zero() {
        let d = with(&[]);
        assert!(d.host_packages && d.direct_boot);
        assert_eq!(d.vmdk_writer, VmdkWriter::Kiln);
        let off = with(&[
            ("KILN_HOST_PACKAGES", "0"),
            ("KILN_DIRECT_BOOT", "0"),
            ("KILN_VMDK_WRITER", "qemu-img"),
        ]);
        assert!(!off.host_packages && !off.direct_boot);
        assert_eq!(off.vmdk_writer, VmdkWriter::QemuImg);
        assert!(with(&[("KILN_HOST_PACKAGES", "1")]).host_packages);
    }

    #[test]
    fn elements_path_then_data_dir() {
        let t = with(&[("KILN_ELEMENTS_PATH", "/a::/b"), ("KILN_DATA_DIR", "/d")]);
        assert_eq!(
            t.elements_path,
            [
                PathBuf::from("/a"),
                PathBuf::from("/b"),
                PathBuf::from("/d/elements")
            ]
        );
        assert!(with(&[("KILN_DATA_DIR", "")]).elements_path.is_empty());
    }

    #[test]
    fn glance_and_s3_settings() {
        let t = with(&[
            ("OS_CLOUD", ""),
            ("OS_AUTH_URL", "http://k"),
            ("KILN_GLANCE_PAGE_SIZE", "2"),
            ("KILN_GLANCE_CLEANUP_TIMEOUT", "5"),
            ("AWS_DEFAULT_REGION", "r"),
        ]);
        assert_eq!(t.glance.os_cloud, None);
        assert!(t.glance.auth_url_set);
        assert_eq!(t.glance.page_size, 2);
        assert_eq!(t.glance.cleanup_timeout, Duration::from_secs(5));
        assert!(t.s3.region_set && !t.s3.access_key_set);
        assert_eq!(with(&[]).glance.page_size, 100);
    }
}
