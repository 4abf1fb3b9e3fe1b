//! History text as BuildKit writes it (`created_by`), with Go's `%q`/`%v` formatting, plus the
//! small path and port helpers the steps share.
use crate::dockerfile::ast::go_quote;
use crate::dockerfile::instructions::Healthcheck;

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub(crate) fn go_q_slice(v: &[String]) -> String {
    let parts: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", parts.join(" "))
}

/// Go's `%v` of a `[]string`: `[a b]`.
pub(crate) fn go_v_slice(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// What history shows instead of the value of a build arg whose name looks like a secret.
pub const REDACTED: &str = "<redacted>";

/// Whether a build arg's value must stay out of history: its name has a word part (split at
/// `_`, case-insensitive) from BuildKit's `SecretsUsedInArgOrEnv` list (apikey, auth,
/// credential(s), key, password, pword, passwd, secret, token, not `public`), or `pass`.
pub(crate) fn is_secret_arg(name: &str) -> bool {
    crate::dockerfile::lint::is_secret_name(name)
        || name.split('_').any(|w| w.eq_ignore_ascii_case("pass"))
}

/// `NAME=VALUE` as history shows a build arg (RUN's `|N NAME=VALUE … cmd` prefix, an ARG's
/// expanded default), with a non-empty value [`REDACTED`] when [`is_secret_arg`]. BuildKit writes
/// every value there; a token passed with `--build-arg` would end up in the image config, the
/// metadata file and the progress output. The cache key still depends on the value: it hashes
/// the step's environment, never this text.
pub(crate) fn history_arg(name: &str, value: &str) -> String {
    if is_secret_arg(name) && !value.is_empty() {
        format!("{name}={REDACTED}")
    } else {
        format!("{name}={value}")
    }
}

/// Go's `path.Clean` for absolute slash paths.
pub(crate) fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

pub(crate) fn resolve_under(workdir: &str, p: &str) -> String {
    if p.starts_with('/') {
        clean_path(p)
    } else {
        clean_path(&format!("{workdir}/{p}"))
    }
}

/// Go's `time.Duration.String` for non-negative durations.
pub(crate) fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let frac = |v: u64, unit: u64| -> String {
        let whole = v / unit;
        let rem = v % unit;
        if rem == 0 {
            return whole.to_string();
        }
        let digits = unit.to_string().len() - 1;
        let f = format!("{rem:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    };
    let s = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", frac(u, 1_000))
    } else if u < 1_000_000_000 {
        format!("{}ms", frac(u, 1_000_000))
    } else {
        let h = u / 3_600_000_000_000;
        let m = (u / 60_000_000_000) % 60;
        let s = u % 60_000_000_000;
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{}s", frac(s, 1_000_000_000)));
        out
    };
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

/// Go's `strconv.QuoteRune` of an int, as `%q` prints ints.
pub(crate) fn go_q_int(i: i64) -> String {
    match u32::try_from(i).ok().and_then(char::from_u32) {
        Some(c) => {
            let q = go_quote(&c.to_string());
            let inner = &q[1..q.len() - 1];
            let inner = if inner == "\\\"" { "\"" } else { inner };
            let inner = if inner == "'" { "\\'" } else { inner };
            format!("'{inner}'")
        }
        None => format!("%!q(int={i})"),
    }
}

pub(crate) fn healthcheck_created_by(h: &Healthcheck) -> String {
    let (test, iv, to, sp, si, r) = match h {
        Healthcheck::None => (vec!["NONE".to_string()], 0, 0, 0, 0, 0),
        Healthcheck::Cmd {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => (
            test.clone(),
            *interval,
            *timeout,
            *start_period,
            *start_interval,
            *retries,
        ),
    };
    format!(
        "HEALTHCHECK &{{{} {} {} {} {} {}}}",
        go_q_slice(&test),
        go_quote(&go_duration(iv)),
        go_quote(&go_duration(to)),
        go_quote(&go_duration(sp)),
        go_quote(&go_duration(si)),
        go_q_int(r)
    )
}

/// Whether an `ADD` source is a git repository, as dockerfile2llb decides with
/// `gitutil.ParseGitRef` (not its `IndistinguishableFromLocal` `github.com/…` form): see
/// [`crate::git`]. A `file://` repository is not an `ADD` source: the Dockerfile is untrusted,
/// and would read repositories on the builder's disk (only the command line may name one).
pub fn is_git_source(s: &str) -> bool {
    !s.starts_with("github.com/") && crate::git::GitRef::parse(s).is_ok_and(|r| r.scheme != "file")
}

/// Whether `s` is a signal BuildKit's `signal.ParseSignal` accepts: a positive number, or a
/// Linux signal name with or without `SIG`, in any case (`RTMIN+3` too).
pub(crate) fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return n > 0;
    }
    let up = s.to_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    const NAMES: [&str; 35] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
        "UNUSED",
    ];
    if NAMES.contains(&name) || name == "RTMIN" || name == "RTMAX" {
        return true;
    }
    let rt = |p: &str, max: u32| {
        name.strip_prefix(p)
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=max).contains(&n))
    };
    rt("RTMIN+", 15) || rt("RTMAX-", 14)
}

/// Parses one EXPOSE word into `port/proto` entries (ranges expanded).
pub(crate) fn parse_port(w: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match w.rsplit_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (w, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto {proto:?}"));
    }
    // `ip:host:container` is accepted by BuildKit (with a lint); the container port counts.
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let num = |s: &str| -> Result<u32, String> {
        let n: u32 = s
            .parse()
            .map_err(|_| format!("invalid containerPort: {s}"))?;
        if n > 65535 {
            return Err(format!("value out of range (0-65535): {n}"));
        }
        Ok(n)
    };
    let (a, b) = match ports.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(ports)?;
            (n, n)
        }
    };
    if b < a {
        return Err(format!("invalid range {ports}"));
    }
    Ok((a..=b).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_build_args_are_redacted_in_history() {
        for name in [
            "API_TOKEN",
            "api_token",
            "Token",
            "PASSWORD",
            "DB_PASS",
            "pass",
            "GITHUB_AUTH",
            "AWS_SECRET_ACCESS_KEY",
            "SSH_KEY",
            "APIKEY",
            "NPM_CREDENTIALS",
            "X_PWORD",
            "PASSWD",
        ] {
            assert!(is_secret_arg(name), "{name}");
            assert_eq!(history_arg(name, "v4lue"), format!("{name}=<redacted>"));
            assert_eq!(history_arg(name, ""), format!("{name}="), "nothing to hide");
        }
        for name in [
            "VERSION",
            "TOKENIZER",
            "KEYBOARD",
            "PASSPORT",
            "BYPASS",
            "PUBLIC_KEY",
            "HTTP_PROXY",
            "MONKEY",
        ] {
            assert!(!is_secret_arg(name), "{name}");
            assert_eq!(history_arg(name, "1 2"), format!("{name}=1 2"));
        }
    }

    #[test]
    fn go_formatting_helpers() {
        assert_eq!(go_duration(5_000_000_000), "5s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_q_int(3), "'\\x03'");
        assert_eq!(clean_path("/a/./b/../c/"), "/a/c");
        assert_eq!(parse_port("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_port("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(
            parse_port("8000-8001").unwrap(),
            vec!["8000/tcp", "8001/tcp"]
        );
        assert!(parse_port("80/foo").is_err());
        assert!(parse_port("99999").is_err());
    }
}
