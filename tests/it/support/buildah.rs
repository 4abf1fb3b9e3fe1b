//! Differential-testing helpers: the shared busybox base image, a private buildah store, umoci
//! unpacking and reading OCI layouts.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{run, Kiln};

/// The users and groups of the base image, so `--chown` and `USER` by name can be checked.
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:app:/home/app:/bin/sh\n\
web:x:1001:1002:web:/srv/www:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
pub const GROUP: &str = "root:x:0:\napp:x:1000:\nusers:x:100:app\nweb:x:1002:\nnogroup:x:65534:\n";
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds the busybox root filesystem the way `scripts/main-job.sh` does, plus users, groups and
/// `/srv/www` (0750, owned by web:web) for the "existing directory" cases.
pub fn busybox_rootfs(root: &Path) {
    use std::os::unix::fs::{chown, symlink, PermissionsExt};
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "proc", "sys", "dev", "var",
        "srv/www", "home/app",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("busybox"))
        .find(|p| p.is_file())
        .expect("busybox (the busybox-static package) is not installed");
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    std::fs::set_permissions(root.join("bin/busybox"), PermissionsExt::from_mode(0o755)).unwrap();
    let list = run(Command::new(root.join("bin/busybox")).arg("--list-full"));
    for applet in list
        .lines()
        .filter(|l| !l.is_empty() && *l != "bin/busybox")
    {
        let p = root.join(applet);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&p);
        symlink("/bin/busybox", &p).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(root.join("etc/group"), GROUP).unwrap();
    std::fs::set_permissions(root.join("tmp"), PermissionsExt::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(root.join("srv/www"), PermissionsExt::from_mode(0o750)).unwrap();
    chown(root.join("srv/www"), Some(1001), Some(1002)).unwrap();
    chown(root.join("home/app"), Some(1000), Some(1000)).unwrap();
}

/// The busybox base as an OCI archive, made once per test process with `kiln import` and shared.
/// `Cmd` is `/bin/sh` and `Env` is `PATH=…`, as in `scripts/main-job.sh`.
pub fn busybox_base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("build-diff");
        std::fs::create_dir_all(&dir).unwrap();
        let k = Kiln::new();
        let rootfs = k.path("rootfs");
        busybox_rootfs(&rootfs);
        let tmp = k.path("busybox.oci.tar");
        k.ok(&[
            "import",
            rootfs.to_str().unwrap(),
            "-t",
            "kiln.local/busybox:latest",
            "--cmd",
            "/bin/sh",
            "--env",
            PATH_ENV,
            "-o",
            &format!("oci-archive:{}", tmp.display()),
        ]);
        // Same input, same bytes: concurrent test processes may race on this rename harmlessly.
        let dest = dir.join("busybox.oci.tar");
        std::fs::copy(
            &tmp,
            dir.join(format!("busybox.oci.tar.{}", std::process::id())),
        )
        .unwrap();
        std::fs::rename(
            dir.join(format!("busybox.oci.tar.{}", std::process::id())),
            &dest,
        )
        .unwrap();
        dest
    })
}

/// A buildah with a private vfs store.
pub struct Buildah {
    pub dir: tempfile::TempDir,
}

impl Buildah {
    pub fn new() -> Buildah {
        Buildah {
            dir: tempfile::Builder::new()
                .prefix("kiln-buildah-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .arg("--storage-driver")
            .arg("vfs");
        c
    }

    /// `buildah bud` into the private store as `name`; `docker_format` keeps HEALTHCHECK and ONBUILD
    /// (buildah 1.28 drops both from OCI-format configs).
    pub fn bud(
        &self,
        context: &Path,
        file: &Path,
        name: &str,
        build_args: &[(String, String)],
        docker_format: bool,
        target: Option<&str>,
    ) {
        let mut c = self.cmd();
        c.args([
            "bud",
            "--layers=false",
            "--no-cache",
            "--timestamp",
            "0",
            "--format",
            if docker_format { "docker" } else { "oci" },
        ])
        .arg("-f")
        .arg(file);
        for (k, v) in build_args {
            c.arg("--build-arg").arg(format!("{k}={v}"));
        }
        if let Some(t) = target {
            c.arg("--target").arg(t);
        }
        c.arg("-t").arg(name).arg(context);
        run(&mut c);
    }

    /// `buildah push NAME oci:DIR:TAG`.
    pub fn push_oci(&self, name: &str, layout: &Path, tag: &str) {
        run(self
            .cmd()
            .args(["push", "--quiet", name])
            .arg(format!("oci:{}:{tag}", layout.display())));
    }

    /// The image config (`{"Env": …, "Cmd": …}`) as buildah stored it: the Docker one for
    /// docker-format images, else the OCI one.
    pub fn config(&self, name: &str, docker_format: bool) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&run(self.cmd().args(["inspect", "--type", "image", name])))
                .unwrap();
        let key = if docker_format { "Docker" } else { "OCIv1" };
        v[key]["config"].clone()
    }
}

/// `umoci unpack` of `layout:tag` into `bundle` (which must not exist).
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) {
    let mut c = Command::new("umoci");
    c.args(["unpack", "--image", &format!("{}:{tag}", layout.display())]);
    if !super::is_root() {
        c.arg("--rootless");
    }
    run(c.arg(bundle));
}

/// The manifest digest and the image config JSON of `tag` in an OCI layout.
pub fn layout_image(layout: &Path, tag: &str) -> (String, serde_json::Value) {
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    };
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index = read(layout.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"))
        .clone();
    let digest = desc["digest"].as_str().unwrap().to_string();
    let manifest = read(blob(&digest));
    let config = read(blob(manifest["config"]["digest"].as_str().unwrap()));
    (digest, config)
}
