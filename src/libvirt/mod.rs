//! libvirt through its own bindings (`virt`): define/start/poll/destroy/undefine domains and
//! probe whether KVM guests really run.

pub mod console;
pub mod domain;
pub mod probe;
pub mod vmuser;

use std::path::Path;
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::enumutil::Enum;

use crate::process::Cancel;

#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    #[error("cannot connect to libvirt at {uri}: {message} (is libvirtd running? `.ci/run` and scripts/start-services.sh start it)")]
    Connect { uri: String, message: String },
    #[error("libvirt: {op} domain {domain}: {message}")]
    Domain {
        op: &'static str,
        domain: String,
        message: String,
    },
    #[error("rendering the domain XML: {0}")]
    Template(String),
}

/// What kiln needs to know about a domain's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Paused,
    Shutoff,
    Crashed,
    Other,
    /// The domain does not exist (transient and gone, or undefined).
    Missing,
}

pub struct Libvirt {
    conn: Connect,
    pub uri: String,
}

impl Libvirt {
    pub fn connect(uri: &str) -> Result<Self, LibvirtError> {
        // libvirt prints every error to stderr by default, even ones kiln expects and handles
        // (looking up a domain that is gone); kiln reports errors itself.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).map_err(|e| LibvirtError::Connect {
            uri: uri.to_string(),
            message: e.to_string(),
        })?;
        Ok(Libvirt {
            conn,
            uri: uri.to_string(),
        })
    }

    /// "11.3.0".
    pub fn version(&self) -> String {
        self.conn
            .lib_version()
            .map(|v| format!("{}.{}.{}", v / 1_000_000, (v / 1000) % 1000, v % 1000))
            .unwrap_or_else(|_| "unknown".into())
    }

    pub fn capabilities(&self) -> String {
        self.conn.capabilities().unwrap_or_default()
    }

    fn err(op: &'static str, domain: &str, e: virt::error::Error) -> LibvirtError {
        LibvirtError::Domain {
            op,
            domain: domain.to_string(),
            message: e.to_string(),
        }
    }

    fn lookup(&self, name: &str) -> Option<Domain> {
        self.conn.lookup_domain_by_name(name).ok()
    }

    /// Define a persistent domain from XML (not started).
    pub fn define(&self, name: &str, xml: &str) -> Result<(), LibvirtError> {
        self.conn
            .define_domain_xml(xml)
            .map(drop)
            .map_err(|e| Self::err("defining", name, e))
    }

    pub fn start(&self, name: &str) -> Result<(), LibvirtError> {
        let d = self.lookup(name).ok_or_else(|| LibvirtError::Domain {
            op: "starting",
            domain: name.into(),
            message: "no such domain".into(),
        })?;
        d.create()
            .map(drop)
            .map_err(|e| Self::err("starting", name, e))
    }

    /// Start a transient domain.
    pub fn create_transient(&self, name: &str, xml: &str) -> Result<(), LibvirtError> {
        self.conn
            .create_domain_xml(xml, 0)
            .map(drop)
            .map_err(|e| Self::err("creating", name, e))
    }

    pub fn state(&self, name: &str) -> State {
        self.try_state(name).unwrap_or(State::Other)
    }

    /// The domain's state; `Missing` only when libvirt says there is no such domain, an error
    /// for anything else (a libvirtd that does not answer is not a powered-off guest).
    pub fn try_state(&self, name: &str) -> Result<State, String> {
        let d = match self.conn.lookup_domain_by_name(name) {
            Ok(d) => d,
            Err(e) if e.code() == Enum::Known(virt::error::ErrorNumber::NoDomain) => {
                return Ok(State::Missing)
            }
            Err(e) => return Err(e.message().to_string()),
        };
        match d.state() {
            Ok((Enum::Known(s), _)) => Ok(match s {
                DomainState::Running | DomainState::Blocked => State::Running,
                DomainState::Paused | DomainState::PMSuspended => State::Paused,
                DomainState::Shutoff => State::Shutoff,
                DomainState::Crashed => State::Crashed,
                _ => State::Other,
            }),
            Ok(_) => Ok(State::Other),
            Err(e) => Err(e.message().to_string()),
        }
    }

    /// Whether libvirt gives `pred` the domain's state reason (false when it is gone).
    fn reason_is(
        &self,
        name: &str,
        pred: impl Fn(&virt::domain::DomainStateReason) -> bool,
    ) -> bool {
        self.lookup(name)
            .and_then(|d| d.state().ok())
            .is_some_and(|(_, reason)| matches!(reason, Enum::Known(r) if pred(&r)))
    }

    /// Was the domain paused because a disk write failed (qemu's default on ENOSPC)?
    pub fn paused_by_io_error(&self, name: &str) -> bool {
        use virt::domain::{DomainPausedReason, DomainStateReason};
        self.reason_is(name, |r| {
            matches!(
                r,
                DomainStateReason::Paused(Enum::Known(DomainPausedReason::IOError))
            )
        })
    }

    /// Did the domain stop because qemu itself died (libvirt: shut off, reason crashed), not
    /// because the guest powered off?
    pub fn shut_off_by_crash(&self, name: &str) -> bool {
        use virt::domain::{DomainShutoffReason, DomainStateReason};
        self.reason_is(name, |r| {
            matches!(
                r,
                DomainStateReason::Shutoff(Enum::Known(DomainShutoffReason::Crashed))
            )
        })
    }

    /// The CPU time the domain has used so far (None when libvirt cannot tell).
    pub fn cpu_time(&self, name: &str) -> Option<std::time::Duration> {
        let info = self.lookup(name)?.info().ok()?;
        Some(std::time::Duration::from_nanos(info.cpu_time))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// Names of running domains that use `path` as a disk.
    pub fn running_domains_using(&self, path: &Path) -> Vec<String> {
        let want = path.display().to_string();
        let Ok(doms) = self.conn.list_all_domains(1) else {
            return Vec::new();
        };
        doms.into_iter()
            .filter(|d| {
                d.xml_desc(0)
                    .map(|x| {
                        x.contains(&format!("file='{want}'"))
                            || x.contains(&format!("file=\"{want}\""))
                    })
                    .unwrap_or(false)
            })
            .filter_map(|d| d.name().ok())
            .collect()
    }

    /// Every domain kiln made (its XML carries kiln's metadata): name, the owner recorded in
    /// it (none for domains of older kilns) and whether it runs.
    pub fn kiln_domains(
        &self,
    ) -> Result<Vec<(String, Option<crate::owner::Owner>, bool)>, LibvirtError> {
        let doms = self
            .conn
            .list_all_domains(0)
            .map_err(|e| Self::err("listing", "(all)", e))?;
        Ok(doms
            .into_iter()
            .filter_map(|d| {
                let xml = d.xml_desc(0).ok()?;
                if !xml.contains("https://kiln.invalid/") {
                    return None;
                }
                let name = d.name().ok()?;
                Some((
                    name,
                    crate::owner::Owner::from_domain_xml(&xml),
                    d.is_active().unwrap_or(false),
                ))
            })
            .collect())
    }

    /// Stop the domain if it runs. Missing domains are fine.
    pub fn destroy(&self, name: &str) -> Result<(), LibvirtError> {
        let Some(d) = self.lookup(name) else {
            return Ok(());
        };
        if d.is_active().unwrap_or(false) {
            if let Err(e) = d.destroy() {
                // It may have stopped between the check and the call.
                if d.is_active().unwrap_or(false) {
                    return Err(Self::err("destroying", name, e));
                }
            }
        }
        Ok(())
    }

    /// Stop and remove the domain definition. Missing domains are fine.
    pub fn destroy_and_undefine(&self, name: &str) -> Result<(), LibvirtError> {
        self.destroy(name)?;
        let Some(d) = self.lookup(name) else {
            return Ok(());
        };
        if d.is_persistent().unwrap_or(false) {
            // A UEFI VM's variable store and a TPM's state go with it (they are its own).
            d.undefine_flags(
                virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM | virt::sys::VIR_DOMAIN_UNDEFINE_TPM,
            )
            .map_err(|e| Self::err("undefining", name, e))?;
        }
        Ok(())
    }

    /// Does a KVM guest really run here? `/dev/kvm` and libvirt's capabilities are not enough
    /// (some hosts expose a KVM device whose guests hang or die). Boot the host's own kernel
    /// with no root filesystem under KVM: a working KVM reaches the "no root" panic and reboots
    /// (which destroys the domain) within seconds.
    pub fn probe_kvm(&self, cancel: &Cancel) -> Result<KvmProbe, LibvirtError> {
        if !self.capabilities().contains("domain type='kvm'") {
            return Ok(KvmProbe::Unusable(
                "libvirt offers no kvm domain type".into(),
            ));
        }
        let Some(kernel) = host_kernel() else {
            return Ok(KvmProbe::Unknown(
                "no readable kernel in /boot to probe with".into(),
            ));
        };
        let name = format!("kiln-kvm-probe-{}", std::process::id());
        let spec = domain::DomainSpec::kvm_probe(&name, &kernel);
        let xml = spec
            .xml("", "")
            .map_err(|e| LibvirtError::Template(e.to_string()))?;
        let xml = crate::owner::with_owner(&xml, &crate::owner::Owner::current());
        // The probe is the build VM's definition under KVM: a qemu that cannot even start it
        // (a host CPU feature KVM refuses, say) means the build VM would not start either.
        if let Err(e) = self.create_transient(&name, &xml) {
            let _ = self.destroy(&name);
            return Ok(KvmProbe::Unusable(format!(
                "a KVM guest did not start: {e}"
            )));
        }
        let start = Instant::now();
        let result = loop {
            match self.state(&name) {
                State::Missing | State::Shutoff => break KvmProbe::Usable,
                State::Crashed | State::Paused => {
                    break KvmProbe::Unusable("the probe guest crashed under KVM".into())
                }
                _ => {}
            }
            if start.elapsed() > Duration::from_secs(15) {
                break KvmProbe::Unusable("a KVM guest did not boot its kernel within 15 s".into());
            }
            if cancel.sleep(Duration::from_millis(200)) {
                break KvmProbe::Unknown("interrupted".into());
            }
        };
        let _ = self.destroy(&name);
        Ok(result)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmProbe {
    Usable,
    Unusable(String),
    Unknown(String),
}

fn host_kernel() -> Option<std::path::PathBuf> {
    let mut kernels: Vec<_> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz"))
                && std::fs::File::open(p).is_ok()
        })
        .collect();
    kernels.sort();
    kernels.pop()
}
