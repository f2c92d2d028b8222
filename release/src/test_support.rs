//! For tests of this crate and its users: a fake `make image` output — the four split artifacts with
//! bytes distinct per version, and a whole-disk image whose GPT carries the slot labels and UUIDs a
//! real build has (made with `sfdisk`, as the real one is read with a GPT parser) — a release signed
//! from it, a real web server to serve a repository from, and the ways tests tamper with and compare
//! repositories.

use crate::keys::KeySet;
use crate::repository::{NewRelease, Repository};
use scs_edge_proto::release::{ArtifactKind, ReleaseManifest};
use std::collections::BTreeMap;
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

/// Signs `version` (fake image output under `image_root`, from 0.0.0 up, no regret) into
/// `repository` with `keys`, as a release manager's `scs-edge-release publish` would.
pub async fn sign(
    keys: &KeySet,
    repository: &Repository,
    image_root: &Path,
    version: &str,
) -> ReleaseManifest {
    let release = NewRelease {
        image_dir: image_output(image_root, version),
        version: version.parse().expect("version"),
        min_from_version: semver::Version::new(0, 0, 0),
        max_version: None,
    };
    repository
        .publish(
            keys,
            &release,
            &crate::Lifetimes::default(),
            jiff::Timestamp::now(),
        )
        .await
        .expect("signed")
}

/// Flips one byte of `version`'s `/usr` target in the folder `targets`, as a bad mirror or a bad
/// sector would; returns the file.
pub fn flip_a_byte_of_the_usr_target(targets: &Path, version: &str) -> PathBuf {
    let usr = std::fs::read_dir(targets)
        .expect("targets")
        .map(|entry| entry.expect("entry").path())
        .find(|path| {
            let name = path.to_string_lossy();
            name.contains(&format!("scs-edge_{version}_")) && name.ends_with(".usr.raw.gz")
        })
        .unwrap_or_else(|| panic!("no usr target of {version} in {}", targets.display()));
    let mut bytes = std::fs::read(&usr).expect("read");
    bytes[100] ^= 0x01;
    std::fs::write(&usr, bytes).expect("write");
    usr
}

/// A copy of the folder `from` at `to` (`cp -a`), as an operator hands over a repository.
pub fn copy_folder(from: &Path, to: &Path) {
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(
        copied.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// Every file under `dir` with its bytes: what "changes nothing" is checked against.
pub fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read");
                files.insert(path.strip_prefix(dir).expect("under").to_path_buf(), bytes);
            }
        }
    }
    files
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
