//! The build stages, in order: `all()` is the one list (the build runs it, `kiln plan`
//! describes it). Each drives the real component.
//!
//! | stage       | does                                                               |
//! |-------------|--------------------------------------------------------------------|
//! | source      | base disk: cached download (verified) or mmdebstrap bootstrap      |
//! | install     | installer sources: kernel + initrd booted with the answer file      |
//! | provision   | qcow2 overlay, NoCloud seed, libvirt domain, wait for power-off    |
//! | cloud-init  | libguestfs: check provisioning, cloud-init present, datasources    |
//! | sysprep     | libguestfs (same launch): sysprep operations, fstrim               |
//! | undefine    | remove the build domain from libvirt                               |
//! | test        | boot the finished disk like a new cloud instance, ssh in, check it: |
//! |             | in the background, beside convert; publish waits for it            |
//! | convert     | qemu-img to each output format (each compared with that disk)      |
//! | publish     | manifest.json, rename the staged output directory into place       |
//! | glance      | publish targets (`targets/`): Glance — upload/import, verify, share, rotate |

pub mod cloud_init;
pub mod convert;
pub mod install;
pub mod provision;
pub mod publish;
pub mod source;
pub mod sysprep;
pub mod targets;
pub mod test;
pub mod undefine;

use crate::pipeline::context::BuildContext;
use crate::pipeline::describe::Describe;
use crate::pipeline::Stage;

/// A build stage: it runs, and it says what it would run.
pub trait BuildStage: Stage<BuildContext> + Describe {}
impl<T: Stage<BuildContext> + Describe> BuildStage for T {}

/// The stages, in order: the one list the build runs and `kiln plan` describes.
pub fn all() -> Vec<Box<dyn BuildStage>> {
    vec![
        Box::new(source::SourceStage),
        Box::new(install::InstallStage),
        Box::new(provision::ProvisionStage),
        Box::new(cloud_init::CloudInitStage),
        Box::new(sysprep::SysprepStage),
        Box::new(undefine::UndefineStage),
        Box::new(test::TestStage::default()),
        Box::new(convert::ConvertStage),
        Box::new(publish::PublishStage),
        Box::new(targets::TargetsStage),
    ]
}
