//! Installer sources: the media only (an ISO, or a netboot kernel and initrd); the install
//! stage boots them with the answer file and makes the base disk.

use std::path::Path;

use anyhow::Context as _;

use super::{download, Kind, Obtained};
use crate::pipeline::context::{BuildContext, InstallMedia};
use crate::plan::{InstallerPlan, Media};

impl Kind for InstallerPlan {
    fn obtain(&self, ctx: &mut BuildContext) -> anyhow::Result<Obtained> {
        let media = match &self.media {
            Media::Iso { iso, .. } => InstallMedia {
                iso: Some(download::fetch_file(ctx, iso).context("fetching the installer ISO")?),
                kernel: None,
                initrd: None,
            },
            Media::Netboot { kernel, initrd } => InstallMedia {
                iso: None,
                kernel: Some(download::fetch_file(ctx, kernel).context("fetching the kernel")?),
                initrd: Some(download::fetch_file(ctx, initrd).context("fetching the initrd")?),
            },
        };
        Ok(Obtained::Media(media))
    }

    fn planned(&self, cache: &Path) -> Vec<String> {
        match &self.media {
            Media::Iso { iso, .. } => vec![crate::fetch::planned_fetch("ISO", cache, iso)],
            Media::Netboot { kernel, initrd } => vec![
                crate::fetch::planned_fetch("kernel", cache, kernel),
                crate::fetch::planned_fetch("initrd", cache, initrd),
            ],
        }
    }
}
