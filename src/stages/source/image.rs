//! Image sources: a disk image someone else made (a cloud image), downloaded into the cache and
//! verified, or used in place.

use std::path::Path;

use super::{download, Kind, Obtained};
use crate::pipeline::context::BuildContext;
use crate::plan::ImagePlan;

impl Kind for ImagePlan {
    fn obtain(&self, ctx: &mut BuildContext) -> anyhow::Result<Obtained> {
        Ok(Obtained::Base {
            path: download::fetch_file(ctx, &self.file)?,
            declared_format: self.format.clone(),
        })
    }

    fn planned(&self, cache: &Path) -> Vec<String> {
        vec![crate::fetch::planned_fetch("image", cache, &self.file)]
    }
}
