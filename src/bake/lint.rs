//! Lints of a built image: the final stage runs as root, a required label is missing, the
//! size budget is exceeded. Warnings, or errors under `--strict`.
use serde::Serialize;

use crate::image::Image;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule: `root-user`, `missing-label`, `size-budget`.
    pub rule: &'static str,
    /// What is wrong, naming the target.
    pub message: String,
}

/// Checks `image` (built for `target`, a target name or a Dockerfile path) against the rules.
pub fn check(
    target: &str,
    image: &Image,
    required_labels: &[String],
    size_budget: Option<u64>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let user = image.config.config.user.clone().unwrap_or_default();
    let name = user.split(':').next().unwrap_or("");
    if name.is_empty() || name == "root" || name == "0" {
        out.push(Finding {
            rule: "root-user",
            message: format!(
                "target `{target}`: the final stage runs as root (USER is `{}`); add a USER",
                if user.is_empty() { "unset" } else { &user }
            ),
        });
    }
    for l in required_labels {
        if !image.config.config.labels.contains_key(l) {
            out.push(Finding {
                rule: "missing-label",
                message: format!("target `{target}`: the required label `{l}` is missing"),
            });
        }
    }
    if let Some(b) = size_budget {
        let size = image.size();
        if size > b {
            out.push(Finding {
                rule: "size-budget",
                message: format!(
                    "target `{target}`: the image is {size} bytes, over its size budget of {b} bytes"
                ),
            });
        }
    }
    out
}
