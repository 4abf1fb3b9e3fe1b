//! [`FakeSandbox`]: a [`Sandbox`] for unit tests of build logic. It runs nothing: it records
//! every spec it is given, prints scripted output, and applies scripted file changes to the
//! walk snapshot's root filesystem (or returns them as the diff of an overlay snapshot). It also
//! records what each read-only bind mount's source held when the step ran (a file's bytes, a
//! directory's names), since the trees a build binds are gone once it ends.
use super::error::{Result, SandboxError};
use super::snapshot::{Change, ChangeKind, Diff, Entry, FileKind, Snapshot};
use super::{ExitStatus, RunOutcome, RunSpec, Sandbox, Stream};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// One file change a fake step makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptedChange {
    /// Write a regular file (relative path) with this content and mode.
    Write {
        /// Relative path.
        path: String,
        /// Content.
        content: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// Make a directory (relative path) with this mode.
    Dir {
        /// Relative path.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// Make a symbolic link (relative path) to `target`.
    Symlink {
        /// Relative path.
        path: String,
        /// The link's target, verbatim.
        target: String,
    },
    /// Delete a path.
    Delete {
        /// Relative path.
        path: String,
    },
}

/// What one scripted step does.
#[derive(Debug, Clone, Default)]
struct Script {
    status: Option<ExitStatus>,
    stdout: Vec<u8>,
    changes: Vec<ScriptedChange>,
}

/// Records specs and plays back scripted steps, in order; unscripted steps succeed and change
/// nothing. Host-side work is done as the caller: trees are removed with `remove_dir_all`, and
/// ownership changes are recorded, not made (see [`FakeSandbox::chowns`]).
#[derive(Debug, Default)]
pub struct FakeSandbox {
    specs: RefCell<Vec<RunSpec>>,
    scripts: RefCell<VecDeque<Script>>,
    chowns: RefCell<Vec<(Vec<u8>, u32, u32)>>,
    binds: RefCell<Vec<(String, Bound)>>,
    binfmt_dir: Option<PathBuf>,
}

/// What a bind mount's source was when a step ran (see [`FakeSandbox::binds`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// A regular file, with its bytes.
    File(Vec<u8>),
    /// A directory, with the names in it, sorted.
    Dir(Vec<String>),
    /// Nothing (or something else) at the source.
    Other,
}

/// What `source` (resolved inside `root`, as the real sandbox does) is now.
fn bound(root: &Path, source: &str) -> Bound {
    let Ok(fd) = crate::inroot::open_path(root, source, rustix::fs::OFlags::RDONLY) else {
        return Bound::Other;
    };
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    if let Ok(rd) = std::fs::read_dir(&path) {
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        return Bound::Dir(names);
    }
    std::fs::read(&path).map_or(Bound::Other, Bound::File)
}

impl FakeSandbox {
    /// A fake with no scripted steps.
    pub fn new() -> FakeSandbox {
        FakeSandbox::default()
    }

    /// A fake that answers [`Sandbox::emulator`] from the `binfmt_misc` entries in `dir`.
    pub fn with_binfmt(dir: &Path) -> FakeSandbox {
        FakeSandbox {
            binfmt_dir: Some(dir.to_path_buf()),
            ..FakeSandbox::default()
        }
    }

    /// Scripts the next unscripted step: its exit status, stdout and file changes.
    pub fn script(&self, status: ExitStatus, stdout: &[u8], changes: Vec<ScriptedChange>) {
        let script = Script {
            status: Some(status),
            stdout: stdout.to_vec(),
            changes,
        };
        self.scripts.borrow_mut().push_back(script);
    }

    /// Every spec run so far, in order.
    pub fn specs(&self) -> Vec<RunSpec> {
        self.specs.borrow().clone()
    }

    /// For every bind mount of every step run so far, in order: its target and what its source
    /// held when the step ran.
    pub fn binds(&self) -> Vec<(String, Bound)> {
        self.binds.borrow().clone()
    }

    /// Every ownership change asked for so far (relative path, uid, gid), in order.
    pub fn chowns(&self) -> Vec<(Vec<u8>, u32, u32)> {
        self.chowns.borrow().clone()
    }
}

/// The change that makes `path` (at `host`) a `kind` owned by the step's user.
fn upsert(path: &str, host: PathBuf, kind: FileKind, mode: u32, spec: &RunSpec) -> Change {
    Change {
        path: path.as_bytes().to_vec(),
        kind: ChangeKind::Upsert(Entry {
            host_path: host,
            kind,
            mode,
            uid: spec.user.uid,
            gid: spec.user.gid,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
            hardlink_to: None,
            xattrs: Vec::new(),
        }),
    }
}

impl Sandbox for FakeSandbox {
    fn run(
        &self,
        root: &Snapshot,
        spec: &RunSpec,
        out: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<RunOutcome> {
        self.specs.borrow_mut().push(spec.clone());
        for m in &spec.mounts {
            if let super::MountKind::Bind { root, source, .. } = &m.kind {
                let b = bound(root, source);
                self.binds.borrow_mut().push((m.target.clone(), b));
            }
        }
        let script = self.scripts.borrow_mut().pop_front().unwrap_or_default();
        if !script.stdout.is_empty() {
            out(Stream::Stdout, &script.stdout);
        }
        let status = script.status.unwrap_or(ExitStatus::Code(0));
        let base = root
            .rootfs()
            .or(root.upper())
            .map(PathBuf::from)
            .unwrap_or_default();
        let mut changes = Vec::new();
        for change in script.changes.iter().filter(|_| status.success()) {
            match change {
                ScriptedChange::Write {
                    path,
                    content,
                    mode,
                } => {
                    let host = base.join(path);
                    if let Some(parent) = host.parent() {
                        let _ = std::fs::create_dir_all(parent);
                    }
                    let _ = std::fs::write(&host, content);
                    let entry = Entry {
                        host_path: host,
                        kind: FileKind::Regular,
                        mode: *mode,
                        uid: spec.user.uid,
                        gid: spec.user.gid,
                        size: content.len() as u64,
                        mtime: 0,
                        mtime_nsec: 0,
                        hardlink_to: None,
                        xattrs: Vec::new(),
                    };
                    changes.push(Change {
                        path: path.as_bytes().to_vec(),
                        kind: ChangeKind::Upsert(entry),
                    });
                }
                ScriptedChange::Dir { path, mode } => {
                    let host = base.join(path);
                    let _ = std::fs::create_dir_all(&host);
                    changes.push(upsert(path, host, FileKind::Directory, *mode, spec));
                }
                ScriptedChange::Symlink { path, target } => {
                    let host = base.join(path);
                    let _ = std::os::unix::fs::symlink(target, &host);
                    let kind = FileKind::Symlink {
                        target: target.as_bytes().to_vec(),
                    };
                    changes.push(upsert(path, host, kind, 0o777, spec));
                }
                ScriptedChange::Delete { path } => {
                    if root.rootfs().is_some() {
                        let host = base.join(path);
                        let _ =
                            std::fs::remove_file(&host).or_else(|_| std::fs::remove_dir_all(&host));
                    }
                    changes.push(Change {
                        path: path.as_bytes().to_vec(),
                        kind: ChangeKind::Delete,
                    });
                }
            }
        }
        changes.sort_by(|a, b| super::snapshot::component_order(&a.path, &b.path));
        Ok(RunOutcome {
            status,
            diff: Diff { changes },
            warnings: Vec::new(),
        })
    }

    fn remove_tree(&self, path: &Path) -> Result<()> {
        match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SandboxError::Io {
                action: "remove",
                path: path.to_owned(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn chown_in_namespace(&self, _root: &Path, entries: &[(Vec<u8>, u32, u32)]) -> Result<()> {
        self.chowns.borrow_mut().extend_from_slice(entries);
        Ok(())
    }

    fn ownership(&self) -> String {
        "fake".into()
    }

    /// Every platform runs (the fake runs nothing) unless [`FakeSandbox::with_binfmt`] gave
    /// a `binfmt_misc` directory to consult, as the real sandbox does.
    fn emulator(&self, platform: &crate::oci::Platform) -> Result<Option<super::Emulator>> {
        let Some(dir) = &self.binfmt_dir else {
            return Ok(None);
        };
        super::binfmt::emulator(dir, platform).map_err(|why| SandboxError::NoEmulator {
            platform: platform.to_string(),
            host: crate::oci::Platform::host().to_string(),
            why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_sandbox_records_specs_and_plays_scripts() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeSandbox::new();
        let write = ScriptedChange::Write {
            path: "a/b".into(),
            content: b"x".to_vec(),
            mode: 0o644,
        };
        fake.script(
            ExitStatus::Code(0),
            b"hello\n",
            vec![
                write,
                ScriptedChange::Delete {
                    path: "gone".into(),
                },
            ],
        );
        let snap = Snapshot::walk(dir.path().to_owned());
        let spec = RunSpec {
            argv: vec!["true".into()],
            ..RunSpec::default()
        };
        let mut seen = Vec::new();
        let outcome = fake
            .run(&snap, &spec, &mut |_, b| seen.extend_from_slice(b))
            .unwrap();
        assert_eq!(seen, b"hello\n");
        assert_eq!(outcome.diff.paths(), vec!["a/b", "gone"]);
        assert_eq!(std::fs::read(dir.path().join("a/b")).unwrap(), b"x");
        assert_eq!(fake.specs(), vec![spec.clone()]);
        let second = fake.run(&snap, &spec, &mut |_, _| {}).unwrap();
        assert!(second.status.success() && second.diff.changes.is_empty());
    }

    #[test]
    fn fake_sandbox_makes_dirs_and_symlinks_and_records_what_binds_held() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("f"), b"F").unwrap();
        let fake = FakeSandbox::new();
        let changes = vec![
            ScriptedChange::Dir {
                path: "d".into(),
                mode: 0o700,
            },
            ScriptedChange::Symlink {
                path: "d/l".into(),
                target: "../f".into(),
            },
        ];
        fake.script(ExitStatus::Code(0), b"", changes);
        let bind = |source: &str, target: &str| super::super::Mount {
            target: target.into(),
            kind: super::super::MountKind::Bind {
                root: ctx.path().to_owned(),
                source: source.into(),
                readonly: true,
            },
        };
        let spec = RunSpec {
            mounts: vec![bind("f", "/a"), bind("", "/b"), bind("gone", "/c")],
            ..RunSpec::default()
        };
        let snap = Snapshot::walk(dir.path().to_owned());
        let outcome = fake.run(&snap, &spec, &mut |_, _| {}).unwrap();
        assert_eq!(outcome.diff.paths(), vec!["d", "d/l"]);
        let link = std::fs::read_link(dir.path().join("d/l")).unwrap();
        assert_eq!(link, Path::new("../f"));
        assert_eq!(
            fake.binds(),
            vec![
                ("/a".into(), Bound::File(b"F".to_vec())),
                ("/b".into(), Bound::Dir(vec!["f".into()])),
                ("/c".into(), Bound::Other),
            ]
        );
    }
}
