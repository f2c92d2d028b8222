//! For tests of this crate and its users: a fake `make image` output — the four split artifacts with
//! bytes distinct per version, and a whole-disk image whose GPT carries the slot labels and UUIDs a
//! real build has (made with `sfdisk`, as the real one is read with a GPT parser) — and a real web
//! server to serve a repository from.

use scs_edge_proto::release::ArtifactKind;
use std::path::{Path, PathBuf};

/// Writes the output of `make image --image-version=<version>` into `dir` (created) and returns it.
pub fn image_output(dir: &Path, version: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("image dir");
    for kind in ArtifactKind::REQUIRED {
        let suffix = kind.image_suffix().expect("suffix");
        let bytes: Vec<u8> = format!("{version}{suffix}")
            .bytes()
            .cycle()
            .take(64 * 1024)
            .collect();
        std::fs::write(dir.join(format!("scs-edge_{version}{suffix}")), bytes).expect("artifact");
    }
    let disk = dir.join(format!("scs-edge_{version}.raw"));
    let file = std::fs::File::create(&disk).expect("disk");
    file.set_len(8 << 20).expect("disk size");
    let layout = format!(
        "label: gpt\nsize=1MiB, name=esp\nsize=1MiB, name=scs-edge_{version}\n\
         size=1MiB, name=scs-edge_{version}_verity\nsize=1MiB, name=scs-edge_{version}_verity_sig\n"
    );
    let mut sfdisk = std::process::Command::new("sfdisk")
        .arg("--quiet")
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (util-linux)");
    std::io::Write::write_all(sfdisk.stdin.as_mut().expect("stdin"), layout.as_bytes())
        .expect("layout");
    assert!(sfdisk.wait().expect("sfdisk").success(), "sfdisk failed");
    dir.to_path_buf()
}

/// A folder served over HTTP by a real web server (Python's `http.server`), as a mirror serves a
/// repository: files as they are on disk, 404 for what is missing. Stopped when dropped.
#[derive(Debug)]
pub struct ServedFolder {
    server: std::process::Child,
    base: url::Url,
}

impl ServedFolder {
    /// Serves `dir` on a free port of 127.0.0.1; returns once the server listens.
    pub fn new(dir: &Path) -> Self {
        let mut server = std::process::Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .arg("0")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        // Printed once the socket listens: "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let mut banner = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(server.stdout.take().expect("stdout")),
            &mut banner,
        )
        .expect("banner");
        let base = banner
            .split_whitespace()
            .find_map(|word| word.strip_prefix('(')?.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no URL in {banner:?}"))
            .parse()
            .expect("URL");
        Self { server, base }
    }

    /// The URL of `path` under the served folder.
    pub fn url(&self, path: &str) -> url::Url {
        self.base.join(path).expect("URL")
    }
}

impl Drop for ServedFolder {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
