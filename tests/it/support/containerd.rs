//! A containerd daemon of the test's own: its socket, root and state in a temp dir, killed when
//! dropped. Needs root (containerd's snapshotters and runc), `containerd` and `ctr` (Debian's
//! `containerd` package; scripts/install-peers.sh installs it).
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{is_root, need};

pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    /// Starts containerd, or returns `None` (test skipped) where it cannot run: not root, or the
    /// tools missing (under `CI=true` both fail the test).
    pub fn start() -> Option<Containerd> {
        if !is_root() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("containerd tests need root under CI=true");
            }
            eprintln!("skipping: containerd needs root");
            return None;
        }
        if !need("containerd") || !need("ctr") {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-containerd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        // The CRI plugin would want a CNI setup; the image service, snapshotters and runc
        // runtime are what `ctr images import` and `ctr run` use.
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"{sock}.debug\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("sock").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd starts");
        let me = Containerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer in 30 s; its log:\n{}",
                std::fs::read_to_string(me.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(me)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// `ctr --address SOCK --namespace kiln ARGS`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", "kiln"])
            .args(args)
            .output()
            .expect("ctr runs")
    }

    /// `ctr images import FILE`; returns its output.
    pub fn import(&self, file: &Path) -> String {
        let out = self.ctr(&["images", "import", file.to_str().unwrap()]);
        super::assert_success(&out, &("ctr images import", file));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The names of the images containerd holds.
    pub fn names(&self) -> Vec<String> {
        let out = self.ctr(&["images", "ls", "-q"]);
        super::assert_success(&out, &"ctr images ls");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
