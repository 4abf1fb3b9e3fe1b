//! Platforms (`os/arch[/variant]`) with the normalisation containerd applies.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Error;

/// The platform an image or a build targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture, GOARCH style (`amd64`, `arm64`, …).
    pub architecture: String,
    /// Operating system, GOOS style (`linux`).
    pub os: String,
    /// OS version (Windows only in practice).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

const KNOWN_OS: &[&str] = &["linux", "windows", "darwin", "freebsd", "netbsd", "openbsd"];
const KNOWN_ARCH: &[&str] = &[
    "amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64", "mips64le", "mips64",
    "loong64", "wasm",
];

impl Platform {
    /// `linux` on `arch` without a variant.
    pub fn linux(arch: &str) -> Platform {
        Platform {
            architecture: arch.to_string(),
            os: "linux".to_string(),
            os_version: None,
            os_features: Vec::new(),
            variant: None,
        }
    }

    /// The platform this kiln binary runs on.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "riscv64" => "riscv64",
            "s390x" => "s390x",
            "arm" => "arm",
            other => other,
        };
        let mut p = Platform::linux(arch);
        if arch == "arm64" {
            p.variant = Some("v8".into());
        }
        p
    }

    /// Whether an image built for `self` satisfies a request for `wanted`, comparing os,
    /// architecture and (when `wanted` names one) the variant; `arm64` without a variant equals
    /// `arm64/v8`.
    pub fn satisfies(&self, wanted: &Platform) -> bool {
        if self.os != wanted.os || self.architecture != wanted.architecture {
            return false;
        }
        let norm = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", None) => Some("v8".to_string()),
            (_, v) => v.map(str::to_string),
        };
        wanted.variant.is_none() || norm(self) == norm(wanted)
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(value: &str) -> Result<Platform, Error> {
        let bad = |reason: String| Error::InvalidPlatform {
            value: value.to_string(),
            reason,
        };
        let parts: Vec<&str> = value.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad("expected os/arch or os/arch/variant".into()));
        }
        let os = parts[0].to_ascii_lowercase();
        if !KNOWN_OS.contains(&os.as_str()) {
            return Err(bad(format!("unknown operating system `{os}`")));
        }
        // containerd's normalisation of common aliases.
        let (arch, mut variant) = match parts[1].to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" => ("amd64".to_string(), None),
            "aarch64" => ("arm64".to_string(), None),
            "armhf" => ("arm".to_string(), Some("v7".to_string())),
            "armel" => ("arm".to_string(), Some("v6".to_string())),
            "i386" => ("386".to_string(), None),
            a => (a.to_string(), None),
        };
        if !KNOWN_ARCH.contains(&arch.as_str()) {
            return Err(bad(format!("unknown architecture `{arch}`")));
        }
        if let Some(v) = parts.get(2) {
            variant = Some(v.to_ascii_lowercase());
        }
        if arch == "arm64" && variant.as_deref() == Some("v8") {
            // linux/arm64/v8 and linux/arm64 are the same platform; keep the short form.
            variant = None;
        }
        Ok(Platform {
            architecture: arch,
            os,
            os_version: None,
            os_features: Vec::new(),
            variant,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let p: Platform = "linux/x86_64".parse().unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64");
        let p: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(p.variant.as_deref(), Some("v7"));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/sparc".parse::<Platform>().is_err());
        assert!("plan9/amd64".parse::<Platform>().is_err());
    }

    #[test]
    fn arm64_without_variant_satisfies_v8() {
        let img = Platform::linux("arm64");
        let mut want = Platform::linux("arm64");
        want.variant = Some("v8".into());
        assert!(img.satisfies(&want));
        assert!(!Platform::linux("amd64").satisfies(&want));
    }
}
