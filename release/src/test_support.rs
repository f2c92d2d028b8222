//! A fake `make image` output for tests of this crate and its users: the four split artifacts with
//! bytes distinct per version, and a whole-disk image whose GPT carries the slot labels and UUIDs a
//! real build has (made with `sfdisk`, as the real one is read with a GPT parser).

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
