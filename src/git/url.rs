//! Which strings are git URLs, and what they ask for.
//!
//! As BuildKit's `util/gitutil` (`ParseGitRef` over `ParseURL`, `IsGitTransport`,
//! `sshutil.ParseSCPStyleURL`) and docker/cli's `urlutil.IsGitURL`: an explicit `http://`,
//! `https://`, `ssh://` or `git://` URL (an HTTP(S) one only when its path ends in `.git`), an
//! scp-style `user@host:path`, or `github.com/…` (BuildKit's deprecated form, taken as https).
//! The fragment is `#REF[:SUBDIR]`, or BuildKit's CSV form `##ref=REF,commit=SHA,subdir=DIR`.
//!
//! kiln differs on purpose in two places: `file:///path/repo.git` is read too (BuildKit's
//! parser has no `file` scheme; kiln lets a local repository be a source without a server, and
//! allows git's `file` protocol for it alone), and an scp-style URL needs its `user@` (BuildKit
//! also reads `host:path`, which kiln leaves to local paths, whose names may hold a colon).

use super::GitError;

/// A git source: the repository, and the ref and subdirectory its fragment names.
#[derive(Clone, PartialEq, Eq)]
pub struct GitRef {
    /// `https`, `http`, `ssh`, `git` or `file` (`ssh` for the scp-style form).
    pub scheme: String,
    /// The host (with its port), empty for `file`.
    pub host: String,
    /// What git is given: the URL without fragment and without a password (a password in the
    /// URL becomes [`GitRef::password`], passed to git through its environment).
    pub remote: String,
    /// The user of the URL's userinfo, if any.
    pub user: Option<String>,
    /// The password of the URL's userinfo, if any.
    pub password: Option<String>,
    /// The branch, tag or commit (`None`: the remote's `HEAD`).
    pub reference: Option<String>,
    /// The commit the ref must resolve to (`##commit=`).
    pub commit: Option<String>,
    /// The directory inside the repository (`:subdir`), without leading or trailing `/`.
    pub subdir: Option<String>,
}

impl std::fmt::Debug for GitRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GitRef({self})")
    }
}

/// The remote with its ref and subdirectory; never the password.
impl std::fmt::Display for GitRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.remote)?;
        match (&self.reference, &self.subdir) {
            (None, None) => Ok(()),
            (r, None) => write!(f, "#{}", r.as_deref().unwrap_or("")),
            (r, Some(s)) => write!(f, "#{}:{s}", r.as_deref().unwrap_or("")),
        }
    }
}

/// Whether `s` is a git URL (see the module's doc for which).
pub fn is_git_url(s: &str) -> bool {
    GitRef::parse(s).is_ok()
}

/// BuildKit's `protoRegexp`: `^[a-zA-Z0-9]+://`.
fn scheme_of(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    (!scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(scheme)
}

impl GitRef {
    /// Parses a git URL; the error says why `s` is not one.
    pub fn parse(s: &str) -> Result<GitRef, GitError> {
        let fail = |reason: &str| GitError::Parse {
            url: crate::registry::redact_url(s),
            reason: reason.to_string(),
        };
        if s.starts_with("./") || s.starts_with("../") || s.starts_with('/') {
            return Err(fail("a local path"));
        }
        let (base, fragment) = match s.split_once('#') {
            Some((b, f)) => (b, Some(f)),
            None => (s, None),
        };
        let mut r = if let Some(path) = base.strip_prefix("github.com/") {
            GitRef::from_url("https", "github.com", &format!("/{path}")).map_err(|e| fail(&e))?
        } else if let Some(scheme) = scheme_of(base) {
            let scheme = scheme.to_ascii_lowercase();
            if !matches!(scheme.as_str(), "http" | "https" | "ssh" | "git" | "file") {
                return Err(fail(&format!(
                    "unknown protocol `{scheme}` (http, https, ssh, git or file)"
                )));
            }
            let rest = &base[scheme.len() + 3..];
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let mut r = GitRef::from_url(&scheme, authority, path).map_err(|e| fail(&e))?;
            if matches!(scheme.as_str(), "http" | "https") && !path.ends_with(".git") {
                return Err(fail(
                    "an HTTP(S) URL is a git repository only when its path ends in `.git`",
                ));
            }
            if scheme == "file" {
                if !(r.host.is_empty() || r.host == "localhost") {
                    return Err(fail("a file:// URL names no host"));
                }
                r.host.clear();
            }
            r
        } else {
            scp(base).ok_or_else(|| fail("expected SCHEME://HOST/PATH or USER@HOST:PATH"))?
        };
        if let Some(f) = fragment {
            r.fragment(f).map_err(|e| fail(&e))?;
        }
        Ok(r)
    }

    fn from_url(scheme: &str, authority: &str, path: &str) -> Result<GitRef, String> {
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if host.is_empty() && scheme != "file" {
            return Err("the URL names no host".into());
        }
        if path.is_empty() || path == "/" {
            return Err("the URL names no repository".into());
        }
        if host.contains(|c: char| c.is_whitespace() || c == '\\') || path.contains('\0') {
            return Err("invalid characters in the URL".into());
        }
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (Some(n.to_string()), Some(p.to_string())),
                None => (Some(u.to_string()), None),
            },
        };
        let who = match &user {
            Some(u) => format!("{u}@"),
            None => String::new(),
        };
        Ok(GitRef {
            scheme: scheme.to_string(),
            host: host.to_string(),
            remote: format!("{scheme}://{who}{host}{path}"),
            user,
            password,
            reference: None,
            commit: None,
            subdir: None,
        })
    }

    /// `REF[:SUBDIR]`, or (after a second `#`) `ref=…,commit=…,subdir=…`.
    fn fragment(&mut self, f: &str) -> Result<(), String> {
        if let Some(csv) = f.strip_prefix('#') {
            for field in csv.split(',').filter(|x| !x.is_empty()) {
                let (k, v) = field
                    .split_once('=')
                    .ok_or_else(|| format!("invalid field `{field}`: must be KEY=VALUE"))?;
                match k.to_ascii_lowercase().as_str() {
                    "ref" => self.reference = Some(v.to_string()),
                    "commit" => self.commit = Some(v.to_string()),
                    "subdir" => self.subdir = Some(v.to_string()),
                    other => {
                        return Err(format!(
                            "unexpected key `{other}` in `{field}` (supported keys: ref, commit, subdir)"
                        ))
                    }
                }
            }
            if self.reference.is_none() {
                self.reference = self.commit.clone();
            }
        } else {
            let (r, s) = match f.split_once(':') {
                Some((r, s)) => (r, Some(s)),
                None => (f, None),
            };
            self.reference = Some(r.to_string());
            self.subdir = s.map(str::to_string);
        }
        self.reference = self.reference.take().filter(|r| !r.is_empty());
        if let Some(r) = &self.reference {
            // Passed to `git fetch` as an argument: never an option, never a refspec with a
            // destination.
            if r.starts_with('-') || r.contains([':', ' ', '\0', '\n']) || r.contains("..") {
                return Err(format!("invalid ref `{r}`"));
            }
        }
        if let Some(c) = &self.commit {
            if !is_full_sha(c) {
                return Err(format!("commit `{c}` is not a full commit id"));
            }
        }
        self.subdir = self
            .subdir
            .take()
            .map(|s| s.trim_matches('/').to_string())
            .filter(|s| !s.is_empty() && s != ".");
        Ok(())
    }

    /// The ref as messages show it: `HEAD` when none was given.
    pub fn reference_or_head(&self) -> &str {
        self.reference.as_deref().unwrap_or("HEAD")
    }

    /// The source URL without credentials, ref or subdirectory, as `org.opencontainers.image.source`
    /// takes it.
    pub fn source_url(&self) -> String {
        crate::registry::redact_url(&self.remote)
    }
}

/// BuildKit's `sshutil` scp-style URL, `USER@HOST:PATH` (the user required, see the module doc).
fn scp(s: &str) -> Option<GitRef> {
    let (user, rest) = s.split_once('@')?;
    let (host, path) = rest.split_once(':')?;
    let user_ok = !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !user_ok || !host_ok || path.is_empty() || path.starts_with('-') {
        return None;
    }
    Some(GitRef {
        scheme: "ssh".into(),
        host: host.into(),
        remote: s.to_string(),
        user: Some(user.into()),
        password: None,
        reference: None,
        commit: None,
        subdir: None,
    })
}

/// Whether `s` is a full commit id (SHA-1 or SHA-256, lower-case hex), as BuildKit's
/// `isCommitSHA`.
pub(super) fn is_full_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkit_forms() {
        let r = GitRef::parse("https://github.com/foo/bar.git#baz/qux:quux/quuz").unwrap();
        assert_eq!(r.remote, "https://github.com/foo/bar.git");
        assert_eq!(r.reference.as_deref(), Some("baz/qux"));
        assert_eq!(r.subdir.as_deref(), Some("quux/quuz"));
        let r = GitRef::parse("git@github.com:moby/buildkit.git#v0.12.0").unwrap();
        assert_eq!((r.scheme.as_str(), r.host.as_str()), ("ssh", "github.com"));
        assert_eq!(r.remote, "git@github.com:moby/buildkit.git");
        assert_eq!(r.reference.as_deref(), Some("v0.12.0"));
        let r = GitRef::parse("ssh://git@host:2222/r.git").unwrap();
        assert_eq!(r.host, "host:2222");
        let r = GitRef::parse("git://127.0.0.1:9418/r#main").unwrap();
        assert_eq!(r.remote, "git://127.0.0.1:9418/r");
        let r = GitRef::parse("github.com/moby/buildkit").unwrap();
        assert_eq!(r.remote, "https://github.com/moby/buildkit");
        let r = GitRef::parse("file:///srv/repo.git#main:app").unwrap();
        assert_eq!(
            (r.scheme.as_str(), r.remote.as_str()),
            ("file", "file:///srv/repo.git")
        );
        let r = GitRef::parse(
            "https://h/r.git##ref=main,commit=0123456789abcdef0123456789abcdef01234567,subdir=/d/",
        )
        .unwrap();
        assert_eq!(r.reference.as_deref(), Some("main"));
        assert_eq!(r.subdir.as_deref(), Some("d"));
        assert!(r.commit.is_some());
    }

    #[test]
    fn not_git() {
        for s in [
            "https://example.com/file.tar.gz",
            "https://example.com/repo",
            ".",
            "./ctx",
            "/abs/path",
            "ctx:dir",
            "ftp://h/r.git",
            "https://h/r.git#--upload-pack=x",
            "https://h/r.git##foo=bar",
            "git@h:-oProxyCommand=x",
        ] {
            assert!(!is_git_url(s), "{s}");
        }
    }

    #[test]
    fn password_is_kept_out_of_remote_and_display() {
        let r = GitRef::parse("https://u:tok3n@h/r.git#main").unwrap();
        assert_eq!(r.remote, "https://u@h/r.git");
        assert_eq!(r.password.as_deref(), Some("tok3n"));
        assert!(!r.to_string().contains("tok3n"));
        assert!(!format!("{r:?}").contains("tok3n"));
        let e = GitRef::parse("ftp://u:tok3n@h/r.git").unwrap_err();
        assert!(!e.to_string().contains("tok3n"), "{e}");
    }
}
