//! virt-customize's operations, in its argument syntax (`--write FILE:CONTENT`,
//! `--root-password password:…`), applied through libguestfs in the same appliance launch as
//! sysprep. One parser serves `kiln sysprep` flags and a recipe's `customize:` list; host files
//! (copy-in, upload, run, password files, ssh keys) are read when parsed, so a plan is complete
//! before anything is launched.

use std::path::{Path, PathBuf};

/// Carrying the steps out in a guest (this module, the types and the parser, needs no guest).
pub mod apply;

/// Names (virt-customize's flag names), argument shape and description, in the order `kiln
/// sysprep --help` and the README list them.
pub const OPERATIONS: &[(&str, &str, &str)] = &[
    (
        "write",
        "FILE:CONTENT",
        "Write CONTENT to FILE (no newline added)",
    ),
    (
        "append-line",
        "FILE:LINE",
        "Append LINE to FILE, adding a line ending first if missing",
    ),
    (
        "copy-in",
        "LOCALPATH:REMOTEDIR",
        "Copy a host file or directory (recursively) into REMOTEDIR",
    ),
    (
        "upload",
        "LOCALFILE:DEST",
        "Upload a host file to DEST (a file, or a directory to put it in)",
    ),
    ("mkdir", "DIR", "Create a directory and its parents"),
    (
        "delete",
        "PATH",
        "Delete a file or directory tree (shell globs allowed)",
    ),
    (
        "chmod",
        "PERMISSIONS:FILE",
        "Change the mode of FILE (octal, e.g. 0755)",
    ),
    (
        "link",
        "TARGET:LINK[:LINK…]",
        "Create symbolic links LINK… pointing at TARGET",
    ),
    ("touch", "FILE", "Create FILE empty, or update its times"),
    ("run-command", "CMD", "Run a shell command inside the guest"),
    (
        "run",
        "SCRIPT",
        "Upload a host script and run it inside the guest",
    ),
    (
        "install",
        "PKG,PKG…",
        "Install packages with the guest's package manager (uses the network)",
    ),
    (
        "uninstall",
        "PKG,PKG…",
        "Remove packages with the guest's package manager",
    ),
    (
        "root-password",
        "SELECTOR",
        "Set root's password: password:PW, file:FILE, random, disabled, locked[:SELECTOR]",
    ),
    (
        "password",
        "USER:SELECTOR",
        "Set USER's password (selectors as for root-password)",
    ),
    (
        "ssh-inject",
        "USER[:file:KEYFILE|:string:KEY]",
        "Add an ssh public key to USER's authorized_keys",
    ),
    (
        "hostname",
        "HOSTNAME",
        "Set the hostname (/etc/hostname, and /etc/hosts' 127.0.1.1 line)",
    ),
    (
        "timezone",
        "TIMEZONE",
        "Set the time zone, e.g. Europe/Paris (must exist in the guest)",
    ),
    (
        "firstboot-command",
        "CMD",
        "Run CMD once, as root, when the image first boots",
    ),
    (
        "selinux-relabel",
        "",
        "Relabel files for SELinux (a no-op on guests without SELinux)",
    ),
];

/// A password, kept out of Debug/Display output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Password {
    /// What the stage cache keys a password step on: a digest of the secret (never the secret
    /// itself), None for `random` (a new one every build: never reused).
    pub fn key_material(&self) -> Option<String> {
        use sha2::{Digest, Sha256};
        Some(match self {
            Password::Set(Secret(s)) => {
                format!("set:{}", hex::encode(Sha256::digest(s.as_bytes())))
            }
            Password::Random => return None,
            Password::Disabled => "disabled".into(),
            Password::Locked(p) => format!("locked:{}", p.key_material()?),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    Set(Secret),
    Random,
    /// `*`: no password login at all.
    Disabled,
    /// `!` before the hash: the account is locked, the password kept for later unlocking.
    Locked(Box<Password>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Customize {
    Write { path: String, content: String },
    AppendLine { path: String, line: String },
    CopyIn { local: PathBuf, dir: String },
    Upload { local: PathBuf, dest: String },
    Mkdir(String),
    Delete(String),
    Chmod { mode: u32, path: String },
    Link { target: String, links: Vec<String> },
    Touch(String),
    RunCommand(String),
    Run { script: PathBuf, content: Vec<u8> },
    Install(Vec<String>),
    Uninstall(Vec<String>),
    Password { user: String, password: Password },
    SshInject { user: String, key: String },
    Hostname(String),
    Timezone(String),
    FirstbootCommand(String),
    SelinuxRelabel,
}

impl std::fmt::Display for Customize {
    /// What the step does, without secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Customize::Write { path, content } => {
                write!(f, "write {path} ({} bytes)", content.len())
            }
            Customize::AppendLine { path, .. } => write!(f, "append a line to {path}"),
            Customize::CopyIn { local, dir } => write!(f, "copy-in {} to {dir}", local.display()),
            Customize::Upload { local, dest } => write!(f, "upload {} to {dest}", local.display()),
            Customize::Mkdir(d) => write!(f, "mkdir {d}"),
            Customize::Delete(p) => write!(f, "delete {p}"),
            Customize::Chmod { mode, path } => write!(f, "chmod {mode:04o} {path}"),
            Customize::Link { target, links } => {
                write!(f, "link {} -> {target}", links.join(", "))
            }
            Customize::Touch(p) => write!(f, "touch {p}"),
            Customize::RunCommand(c) => write!(f, "run-command {c}"),
            Customize::Run { script, .. } => write!(f, "run {}", script.display()),
            Customize::Install(p) => write!(f, "install {}", p.join(" ")),
            Customize::Uninstall(p) => write!(f, "uninstall {}", p.join(" ")),
            Customize::Password { user, password } => {
                let how = match password {
                    Password::Set(_) => "set",
                    Password::Random => "random",
                    Password::Disabled => "disabled",
                    Password::Locked(_) => "locked",
                };
                write!(f, "password of {user}: {how}")
            }
            Customize::SshInject { user, .. } => write!(f, "ssh-inject a key for {user}"),
            Customize::Hostname(h) => write!(f, "hostname {h}"),
            Customize::Timezone(t) => write!(f, "timezone {t}"),
            Customize::FirstbootCommand(c) => write!(f, "firstboot-command {c}"),
            Customize::SelinuxRelabel => write!(f, "selinux-relabel"),
        }
    }
}

fn split2<'a>(arg: &'a str, what: &str) -> Result<(&'a str, &'a str), String> {
    arg.split_once(':')
        .filter(|(a, _)| !a.is_empty())
        .ok_or_else(|| format!("expected {what}, found `{arg}`"))
}

fn abs(path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        Ok(path.to_string())
    } else {
        Err(format!(
            "expected an absolute path in the guest, found `{path}`"
        ))
    }
}

/// Where a step's host files come from: relative paths start at `base`; with `inside` (an
/// untrusted recipe) they must stay below it, symlinks resolved; else (the user's own command
/// line, a trusted recipe) they may be anywhere (keys and password files often live in ~/.ssh).
#[derive(Debug, Clone, Copy)]
pub struct HostFiles<'a> {
    pub base: &'a Path,
    pub inside: bool,
}

impl HostFiles<'_> {
    /// `local` (a path under `base`) if it may be read.
    fn allowed(&self, local: &Path) -> Result<(), String> {
        if !self.inside {
            return Ok(());
        }
        let (Ok(real), Ok(root)) = (local.canonicalize(), self.base.canonicalize()) else {
            return Err(format!("cannot read {}", local.display()));
        };
        if real.starts_with(&root) {
            Ok(())
        } else {
            Err(format!(
                "{} is outside the recipe's directory {} (copy it next to the recipe, or trust the recipe: --trust-recipe)",
                real.display(),
                root.display()
            ))
        }
    }
}

/// A bounded regular host file.
fn read_host(host: HostFiles, p: &str) -> Result<(PathBuf, Vec<u8>), String> {
    crate::hostfile::read(host.base, p, host.inside)
}

fn user_name(u: &str) -> Result<String, String> {
    let ok = !u.is_empty()
        && u.len() <= 32
        && !u.starts_with('-')
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(u.to_string())
    } else {
        Err(format!("`{u}` is not a valid user name"))
    }
}

fn password_selector(sel: &str, base: HostFiles) -> Result<Password, String> {
    match sel.split_once(':').unwrap_or((sel, "")) {
        ("password", pw) if !pw.is_empty() => Ok(Password::Set(Secret(pw.to_string()))),
        ("file", f) if !f.is_empty() => {
            let (_, b) = read_host(base, f)?;
            let text = String::from_utf8(b).map_err(|_| format!("{f} is not UTF-8 text"))?;
            let pw = text.lines().next().unwrap_or("").to_string();
            if pw.is_empty() {
                return Err(format!("the password file {f} is empty"));
            }
            Ok(Password::Set(Secret(pw)))
        }
        ("random", "") => Ok(Password::Random),
        ("disabled", "") => Ok(Password::Disabled),
        ("locked", "") => Ok(Password::Locked(Box::new(Password::Disabled))),
        ("locked", rest) => match password_selector(rest, base)? {
            Password::Locked(_) => Err("`locked:locked` makes no sense".into()),
            inner => Ok(Password::Locked(Box::new(inner))),
        },
        _ => Err(
            "expected a password selector: password:PASSWORD, file:FILENAME, random, disabled \
             or locked[:SELECTOR]"
                .to_string(),
        ),
    }
}

fn packages(arg: &str) -> Result<Vec<String>, String> {
    let v: Vec<String> = arg
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if v.is_empty() {
        return Err("expected one or more package names, comma-separated".into());
    }
    for p in &v {
        if !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.:_=~".contains(c))
        {
            return Err(format!("`{p}` is not a valid package name"));
        }
    }
    Ok(v)
}

/// Parse one operation in virt-customize's syntax. Host paths are relative to `host.base`.
pub fn parse(name: &str, arg: &str, host: HostFiles) -> Result<Customize, String> {
    let base = host;
    let nonempty = |what: &str| -> Result<String, String> {
        if arg.is_empty() {
            Err(format!("expected {what}"))
        } else {
            Ok(arg.to_string())
        }
    };
    Ok(match name {
        "write" => {
            let (p, c) = split2(arg, "FILE:CONTENT")?;
            Customize::Write {
                path: abs(p)?,
                content: c.to_string(),
            }
        }
        "append-line" => {
            let (p, l) = split2(arg, "FILE:LINE")?;
            Customize::AppendLine {
                path: abs(p)?,
                line: l.to_string(),
            }
        }
        "copy-in" => {
            let (l, d) = split2(arg, "LOCALPATH:REMOTEDIR")?;
            let local = base.base.join(l);
            if !local.exists() {
                return Err(format!("{} does not exist", local.display()));
            }
            host.allowed(&local)?;
            Customize::CopyIn {
                local,
                dir: abs(d)?,
            }
        }
        "upload" => {
            let (l, d) = split2(arg, "LOCALFILE:DEST")?;
            let local = base.base.join(l);
            if !local.is_file() {
                return Err(format!("{} is not a file", local.display()));
            }
            host.allowed(&local)?;
            Customize::Upload {
                local,
                dest: abs(d)?,
            }
        }
        "mkdir" => Customize::Mkdir(abs(&nonempty("DIR")?)?),
        "delete" => Customize::Delete(abs(&nonempty("PATH")?)?),
        "touch" => Customize::Touch(abs(&nonempty("FILE")?)?),
        "chmod" => {
            let (m, p) = split2(arg, "PERMISSIONS:FILE")?;
            let mode = u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| format!("expected octal permissions like 0755, found `{m}`"))?;
            Customize::Chmod {
                mode,
                path: abs(p)?,
            }
        }
        "link" => {
            let mut parts = arg.split(':');
            let target = parts.next().unwrap_or("").to_string();
            let links = parts.map(abs).collect::<Result<Vec<_>, _>>()?;
            if target.is_empty() || links.is_empty() {
                return Err(format!("expected TARGET:LINK[:LINK…], found `{arg}`"));
            }
            Customize::Link { target, links }
        }
        "run-command" => Customize::RunCommand(nonempty("a command")?),
        "firstboot-command" => Customize::FirstbootCommand(nonempty("a command")?),
        "run" => {
            let (script, content) = read_host(base, &nonempty("a script path")?)?;
            Customize::Run { script, content }
        }
        "install" => Customize::Install(packages(arg)?),
        "uninstall" => Customize::Uninstall(packages(arg)?),
        "root-password" => Customize::Password {
            user: "root".into(),
            password: password_selector(arg, base)?,
        },
        "password" => {
            let (u, sel) = split2(arg, "USER:SELECTOR")?;
            Customize::Password {
                user: user_name(u)?,
                password: password_selector(sel, base)?,
            }
        }
        "ssh-inject" => {
            let (user, sel) = arg.split_once(':').unwrap_or((arg, ""));
            let user = user_name(user)?;
            let key = match sel.split_once(':').unwrap_or((sel, "")) {
                ("file", f) if !f.is_empty() => {
                    let (_, b) = read_host(base, f)?;
                    String::from_utf8_lossy(&b).trim().to_string()
                }
                ("string", k) if !k.is_empty() => k.trim().to_string(),
                ("", "") => {
                    return Err(
                        "expected USER:file:KEYFILE or USER:string:KEY (kiln does not guess \
                         the caller's keys)"
                            .into(),
                    )
                }
                _ => {
                    return Err(format!(
                        "expected file:KEYFILE or string:KEY, found `{sel}`"
                    ))
                }
            };
            if !key.starts_with("ssh-") && !key.starts_with("ecdsa-") && !key.starts_with("sk-") {
                return Err("the key does not look like an ssh public key (ssh-ed25519 …)".into());
            }
            Customize::SshInject { user, key }
        }
        "hostname" => {
            let h = nonempty("a hostname")?;
            let valid = h.len() <= 253
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid {
                return Err(format!("`{h}` is not a valid hostname"));
            }
            Customize::Hostname(h)
        }
        "timezone" => {
            let t = nonempty("a time zone such as Europe/Paris")?;
            if t.starts_with('/') || t.contains("..") {
                return Err(format!("`{t}` is not a time zone name"));
            }
            Customize::Timezone(t)
        }
        "selinux-relabel" => Customize::SelinuxRelabel,
        other => {
            let hint = crate::suggest::suggest(other, OPERATIONS.iter().map(|o| o.0))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(format!("unknown customize operation `{other}`{hint}"));
        }
    })
}

impl serde::Serialize for Customize {
    /// As its description: plans and manifests never carry file contents or secrets.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Whether any step needs the appliance's network.
pub fn needs_network(steps: &[Customize]) -> bool {
    steps
        .iter()
        .any(|s| matches!(s, Customize::Install(_) | Customize::Uninstall(_)))
}

#[cfg(test)]
mod tests {
    use super::apply::*;
    use super::*;

    fn p(name: &str, arg: &str) -> Result<Customize, String> {
        parse(
            name,
            arg,
            HostFiles {
                base: Path::new("/nonexistent"),
                inside: false,
            },
        )
    }

    /// An untrusted recipe's steps read host files below its directory only (issue 24); the
    /// same steps on the user's own command line, or in a trusted recipe, anywhere.
    #[test]
    fn untrusted_steps_read_no_host_file_outside_the_recipe() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("key.pub"), "ssh-ed25519 AAAA x").unwrap();
        std::fs::write(d.path().join("s.sh"), "true").unwrap();
        let recipe = HostFiles {
            base: d.path(),
            inside: true,
        };
        let trusted = HostFiles {
            inside: false,
            ..recipe
        };
        for (name, arg) in [
            ("upload", "/etc/hostname:/etc/x"),
            ("copy-in", "/etc:/srv"),
            ("run", "/etc/hostname"),
            ("root-password", "file:/etc/hostname"),
            ("ssh-inject", "root:file:/etc/ssh/../hostname"),
            ("upload", "../../../../etc/hostname:/x"),
        ] {
            let e = parse(name, arg, recipe).unwrap_err();
            assert!(
                e.contains("outside the recipe's directory"),
                "{name} {arg}: {e}"
            );
        }
        for (name, arg) in [
            ("upload", "key.pub:/etc/x"),
            ("run", "s.sh"),
            ("ssh-inject", "root:file:key.pub"),
        ] {
            parse(name, arg, recipe).unwrap();
        }
        parse("upload", "/etc/hostname:/etc/x", trusted).unwrap();
        parse("run", "/etc/hostname", trusted).unwrap();
    }

    #[test]
    fn parses_virt_customize_syntax() {
        assert_eq!(
            p("write", "/etc/motd:hello: world").unwrap(),
            Customize::Write {
                path: "/etc/motd".into(),
                content: "hello: world".into()
            }
        );
        assert_eq!(
            p("chmod", "0750:/opt/x").unwrap(),
            Customize::Chmod {
                mode: 0o750,
                path: "/opt/x".into()
            }
        );
        assert_eq!(
            p("link", "/usr/bin/vim:/usr/bin/vi:/usr/local/bin/vi").unwrap(),
            Customize::Link {
                target: "/usr/bin/vim".into(),
                links: vec!["/usr/bin/vi".into(), "/usr/local/bin/vi".into()]
            }
        );
        assert_eq!(
            p("install", "tree, htop").unwrap(),
            Customize::Install(vec!["tree".into(), "htop".into()])
        );
        assert_eq!(
            p("root-password", "locked:disabled").unwrap(),
            Customize::Password {
                user: "root".into(),
                password: Password::Locked(Box::new(Password::Disabled))
            }
        );
    }

    #[test]
    fn bad_arguments_say_what_was_expected() {
        for (name, arg, want) in [
            ("write", "nocolon", "FILE:CONTENT"),
            ("write", "relative:x", "absolute path"),
            ("chmod", "999:/x", "octal"),
            ("root-password", "secret", "password selector"),
            ("password", "bob:random:x", "password selector"),
            ("install", "", "package"),
            ("install", "a;rm -rf /", "not a valid package"),
            ("hostname", "-bad", "not a valid hostname"),
            ("ssh-inject", "root", "file:KEYFILE"),
            ("ssh-inject", "root:string:hello", "ssh public key"),
            ("upload", "missing:/x", "not a file"),
            ("wirte", "/x:y", "did you mean `write`"),
            ("timezone", "../../etc/passwd", "not a time zone"),
        ] {
            let e = p(name, arg).unwrap_err();
            assert!(e.contains(want), "{name} {arg}: {e}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_and_display() {
        let s = p("root-password", "password:hunter2").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!s.to_string().contains("hunter2"));
    }

    #[test]
    fn shadow_line_replaced_only_for_the_user() {
        let shadow = "root:*:19000:0:99999:7:::\nbob:!:19000:0:99999:7:::\n";
        let out = set_shadow_password(shadow, "bob", "$6$x$y").unwrap();
        assert_eq!(
            out,
            "root:*:19000:0:99999:7:::\nbob:$6$x$y:19000:0:99999:7:::\n"
        );
        assert!(set_shadow_password(shadow, "eve", "x").is_none());
    }

    #[test]
    fn password_hash_is_sha512_crypt() {
        let h = hash_password("pw");
        assert!(h.starts_with("$6$"), "{h}");
        assert_ne!(h, hash_password("pw"), "salted");
    }

    #[test]
    fn package_commands_quote_names() {
        let c = package_command("apt", true, &["tree".into()]).unwrap();
        assert!(c.contains("install 'tree'"), "{c}");
        assert!(package_command("pacman", true, &["x".into()]).is_none());
    }
}
