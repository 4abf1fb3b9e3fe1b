//! `docker buildx build` flags kiln does not have: an error that says so and what to use,
//! instead of clap's "unexpected argument … to pass '--load' as a value, use '-- --load'".
//!
//! Consulted only when clap has already refused an argument as unknown, so a flag kiln gains
//! later (by a new `#[arg]`) is parsed by clap and never reaches this table.
use clap::error::{ContextKind, ContextValue, ErrorKind};

/// buildx's flags kiln has no equivalent of, and what to do instead.
const FLAGS: &[(&str, &str)] = &[
    (
        "--load",
        "kiln has no Docker daemon to load into: write a docker-archive with \
         `-o type=docker,dest=FILE`, then `docker load -i FILE` (or `podman load -i FILE`)",
    ),
    (
        "--builder",
        "kiln has no builder instances: it runs in this process; remove `--builder`",
    ),
    (
        "--call",
        "use `kiln parse FILE` for the Dockerfile's checks and `kiln plan` for the build plan",
    ),
    (
        "--check",
        "use `kiln parse FILE` for the Dockerfile's checks and `kiln plan` for the build plan",
    ),
    (
        "--shm-size",
        "RUN steps get the sandbox's own /dev/shm; remove the flag",
    ),
    (
        "--ulimit",
        "RUN steps keep kiln's own limits; remove the flag",
    ),
    (
        "--cgroup-parent",
        "kiln creates no cgroups; remove the flag",
    ),
    ("--memory", "kiln creates no cgroups; remove the flag"),
    ("--isolation", "remove the flag (a Windows option)"),
    (
        "--security-opt",
        "RUN steps run in kiln's user-namespace sandbox; remove the flag",
    ),
];

/// The message for `e` when it refuses a buildx flag kiln does not support.
pub(crate) fn explain(e: &clap::Error) -> Option<String> {
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
    FLAGS
        .iter()
        .find(|(f, _)| *f == flag)
        .map(|(f, what)| format!("`{f}` is not supported by kiln; {what}"))
}
