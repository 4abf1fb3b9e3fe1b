//! buildx's `--ssh`, `--add-host` and `--no-cache-filter` values, checked before the build
//! starts (a bad value is exit 2 with the flag named, nothing built).
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::sandbox::SshSource;

use super::Exit;

fn bad(msg: String) -> Exit {
    anyhow::anyhow!(msg).into()
}

/// `--ssh default|ID[=SOCKET|KEY[,KEY…]]`, as buildx's `parseSSHSpecs`: an id alone is the
/// agent at `auth_sock` (`$SSH_AUTH_SOCK`); each path is checked now (a socket, or keys
/// OpenSSH reads without a passphrase).
pub(crate) fn ssh(
    specs: &[String],
    auth_sock: Option<OsString>,
) -> Result<BTreeMap<String, SshSource>, Exit> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (id, paths) = match spec.split_once('=') {
            Some((id, p)) => (id, p.split(',').map(PathBuf::from).collect::<Vec<_>>()),
            None => (spec.as_str(), Vec::new()),
        };
        let id = if id.is_empty() { "default" } else { id };
        if out.contains_key(id) {
            return Err(bad(format!("--ssh `{spec}`: the id `{id}` is given twice")));
        }
        let paths = match paths.as_slice() {
            [] => match auth_sock.clone().filter(|s| !s.is_empty()) {
                Some(s) => vec![PathBuf::from(s)],
                None => {
                    return Err(bad(format!(
                        "--ssh `{spec}`: SSH_AUTH_SOCK is not set: start an agent (`eval \
                         $(ssh-agent) && ssh-add`), or give a socket or key file: \
                         `--ssh {id}=PATH`"
                    )))
                }
            },
            p if p.iter().any(|p| p.as_os_str().is_empty()) => {
                return Err(bad(format!("--ssh `{spec}`: an empty path")))
            }
            p => p.to_vec(),
        };
        let source = SshSource::from_paths(&paths)
            .map_err(|e| Exit::from(anyhow::Error::new(e).context(format!("--ssh `{spec}`"))))?;
        out.insert(id.to_string(), source);
    }
    Ok(out)
}

/// A name that may stand in `/etc/hosts`: letters, digits, `-`, `_` and `.`, as a DNS name.
fn host_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `--add-host HOST:IP` (or `HOST=IP`, as newer buildx), as Docker's `ValidateExtraHost`: the
/// name up to the first `=` (else `:`), the rest an IPv4 or IPv6 address (`[::1]` too).
/// `host-gateway` has nothing to name here: RUN steps have a network namespace of their own
/// with no route to the host's own services.
pub(crate) fn add_hosts(items: &[String]) -> Result<Vec<(String, IpAddr)>, Exit> {
    let mut out = Vec::new();
    for item in items {
        let split = item.split_once('=').or_else(|| item.split_once(':'));
        let Some((name, ip)) = split else {
            return Err(bad(format!(
                "--add-host `{item}`: expected HOST:IP or HOST=IP"
            )));
        };
        if !host_name_ok(name) {
            return Err(bad(format!(
                "--add-host `{item}`: `{name}` is not a host name (letters, digits, `-`, `_` \
                 and `.`)"
            )));
        }
        if ip == "host-gateway" {
            return Err(bad(format!(
                "--add-host `{item}`: `host-gateway` is not supported: kiln's RUN steps have a \
                 network namespace of their own with no route to the host's services \
                 (docs/SECURITY.md); give the address of a machine the step can reach, or use \
                 `--network host --allow network.host` and `127.0.0.1`"
            )));
        }
        let bare = ip
            .strip_prefix('[')
            .and_then(|i| i.strip_suffix(']'))
            .unwrap_or(ip);
        let addr: IpAddr = bare.parse().map_err(|_| {
            bad(format!(
                "--add-host `{item}`: `{ip}` is not an IPv4 or IPv6 address"
            ))
        })?;
        out.push((name.to_string(), addr));
    }
    Ok(out)
}

/// `--no-cache-filter STAGE[,STAGE…]` (repeatable): the stage names, as given.
pub(crate) fn no_cache_filter(items: &[String]) -> Result<Vec<String>, Exit> {
    let mut out = Vec::new();
    for item in items {
        for name in item.split(',').map(str::trim) {
            if name.is_empty() {
                return Err(bad(format!(
                    "--no-cache-filter `{item}`: an empty stage name"
                )));
            }
            out.push(name.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(e: Exit) -> String {
        format!("{:#}", e.error.unwrap())
    }

    #[test]
    fn add_host_takes_both_separators_and_ipv6() {
        let got = add_hosts(&[
            "a.example:10.0.0.1".into(),
            "b=::1".into(),
            "c:::2".into(),
            "d=[fe80::1]".into(),
        ])
        .unwrap();
        let want: Vec<(String, IpAddr)> = vec![
            ("a.example".into(), "10.0.0.1".parse().unwrap()),
            ("b".into(), "::1".parse().unwrap()),
            ("c".into(), "::2".parse().unwrap()),
            ("d".into(), "fe80::1".parse().unwrap()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn add_host_refuses_bad_names_addresses_and_host_gateway() {
        for (item, says) in [
            ("nohost", "expected HOST:IP"),
            ("a b:1.2.3.4", "is not a host name"),
            ("evil\n1.2.3.4 x:1.2.3.4", "is not a host name"),
            ("x:1.2.3.400", "is not an IPv4 or IPv6 address"),
            ("x:host-gateway", "`host-gateway` is not supported"),
        ] {
            let e = err(add_hosts(&[item.into()]).unwrap_err());
            assert!(e.contains(says), "{item}: {e}");
        }
    }

    #[test]
    fn ssh_default_needs_an_agent_and_ids_are_unique() {
        let e = err(ssh(&["default".into()], None).unwrap_err());
        assert!(e.contains("SSH_AUTH_SOCK is not set"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let got = ssh(&["default".into()], Some(sock.clone().into())).unwrap();
        assert_eq!(got["default"], SshSource::Socket(sock.clone()));
        let e = err(ssh(&["x".into(), "x".into()], Some(sock.into())).unwrap_err());
        assert!(e.contains("given twice"), "{e}");
        let e = err(ssh(&["k=/nonexistent/key".into()], None).unwrap_err());
        assert!(e.contains("--ssh `k=/nonexistent/key`"), "{e}");
        let e = ssh(&["k=".into()], None).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(err(e).contains("--ssh `k=`: an empty path"));
    }

    #[test]
    fn no_cache_filter_splits_commas() {
        let got = no_cache_filter(&["a,b".into(), "c".into()]).unwrap();
        assert_eq!(got, ["a", "b", "c"]);
        assert!(no_cache_filter(&["a,".into()]).is_err());
    }
}
