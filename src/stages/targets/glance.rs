//! The Glance target: the outputs uploaded or imported (the same code as `kiln publish DIR`),
//! verified, shared and rotated; the image ids go to manifest.json.

use std::path::Path;

use super::{Published, Target, TargetEnv};
use crate::pipeline::context::Resource;
use crate::plan::GlanceSettings;

pub(super) struct GlanceTarget(pub GlanceSettings);

impl Target for GlanceTarget {
    fn name(&self) -> String {
        let g = &self.0;
        format!(
            "Glance {}{}",
            g.cloud.as_deref().unwrap_or("$OS_CLOUD"),
            g.region
                .as_deref()
                .map(|r| format!(" {r}"))
                .unwrap_or_default()
        )
    }

    fn inputs(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }

    fn planned(&self) -> Vec<String> {
        let g = &self.0;
        g.formats
            .iter()
            .map(|f| {
                let name = g.names.get(f).map(String::as_str).unwrap_or("?");
                format!(
                    "glance ({}{}): {} {f} output as `{name}` ({}{}), verify SHA-512{}{}",
                    g.cloud.as_deref().unwrap_or("$OS_CLOUD"),
                    g.region
                        .as_deref()
                        .map(|r| format!(", region {r}"))
                        .unwrap_or_default(),
                    g.method.as_str(),
                    g.visibility,
                    if g.protected { ", protected" } else { "" },
                    if g.members.is_empty() {
                        String::new()
                    } else {
                        format!(", share with {}", g.members.join(", "))
                    },
                    g.keep
                        .map(|k| format!(", keep newest {k}"))
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    fn publish(
        &self,
        dir: &Path,
        manifest: &crate::manifest::Manifest,
        env: &TargetEnv,
        created: &mut dyn FnMut(Resource),
    ) -> anyhow::Result<Published> {
        let images = crate::glance::publish::publish_dir(
            dir,
            manifest,
            &self.0,
            None,
            &env.glance,
            &env.cancel,
            &mut |g, id| {
                created(Resource::GlanceImage {
                    cloud: g.cloud.clone(),
                    region: g.region.clone(),
                    id: id.to_string(),
                })
            },
        )?;
        Ok(Published::Glance(images))
    }
}
