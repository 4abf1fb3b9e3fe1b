//! A minimal `os/arch[/variant]` platform for the planner. Kept isolated so the shared
//! `oci::Platform` can replace it; until then the conversions between the two live here, so
//! `kiln plan` and `kiln build` derive `BUILDPLATFORM` (and the cache keys) from one host platform.
use crate::oci;
use serde::Serialize;
use std::fmt;

/// An OCI platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// `amd64`, `arm64`, …
    pub arch: String,
    /// `v7`, `v8`, … or empty.
    pub variant: String,
}

impl Platform {
    /// `linux/amd64`.
    pub fn linux_amd64() -> Platform {
        Platform {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: String::new(),
        }
    }

    /// Parses `os/arch[/variant]` (case-insensitive); `None` when malformed.
    pub fn parse(s: &str) -> Option<Platform> {
        let s = s.trim().to_lowercase();
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Some(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: String::new(),
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Some(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: variant.to_string(),
            }),
            _ => None,
        }
    }

    /// The platform this kiln binary runs on: [`oci::Platform::host`], converted.
    pub fn host() -> Platform {
        Platform::from(&oci::Platform::host())
    }

    /// The same platform as an [`oci::Platform`] (no os version or features).
    pub fn to_oci(&self) -> oci::Platform {
        oci::Platform {
            architecture: self.arch.clone(),
            os: self.os.clone(),
            os_version: None,
            os_features: Vec::new(),
            variant: (!self.variant.is_empty()).then(|| self.variant.clone()),
        }
    }

    /// Whether this is a Windows platform (default shell `cmd /S /C`, case-insensitive env).
    pub fn is_windows(&self) -> bool {
        self.os == "windows"
    }
}

impl From<&oci::Platform> for Platform {
    fn from(p: &oci::Platform) -> Platform {
        Platform {
            os: p.os.clone(),
            arch: p.architecture.clone(),
            variant: p.variant.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `kiln plan` had its own host platform (arm64 without `v8`, powerpc64 not
    /// mapped to ppc64le), so on those hosts it computed another `BUILDPLATFORM` and other cache
    /// keys than `kiln build`. Both now take the one in `oci::Platform::host`.
    #[test]
    fn the_host_platform_is_the_oci_host_platform() {
        let oci_host = oci::Platform::host();
        let host = Platform::host();
        assert_eq!(host.to_oci(), oci_host);
        assert_eq!(host.os, oci_host.os);
        assert_eq!(host.arch, oci_host.architecture);
        assert_eq!(
            Some(host.variant.as_str()).filter(|v| !v.is_empty()),
            oci_host.variant.as_deref()
        );
        for s in [
            "linux/arm64/v8",
            "linux/amd64",
            "linux/ppc64le",
            "windows/amd64",
        ] {
            let p = Platform::parse(s).unwrap();
            assert_eq!(Platform::from(&p.to_oci()), p, "{s}");
        }
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert_eq!(
            Platform::parse("Linux/AMD64").unwrap().to_string(),
            "linux/amd64"
        );
        assert!(Platform::parse("linux").is_none());
        assert!(Platform::parse("a/b/c/d").is_none());
    }
}
