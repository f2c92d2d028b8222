//! Writing a qcow2 overlay (an empty image whose reads fall through to a backing file) in-process.
//!
//! A root disk is created for every server; spawning `qemu-img create` for it cost about as much as
//! everything else the agent adds to a server start. The overlay written here is what
//! `qemu-img create -f qcow2 -F <fmt> -b <backing>` writes: qcow2 version 3, 64 KiB clusters,
//! 16-bit refcounts, no data clusters, laid out as
//!
//! | cluster | content |
//! |---|---|
//! | 0 | header, backing-format extension, end marker, backing file name |
//! | 1 | refcount table (one entry: the block in cluster 2) |
//! | 2 | refcount block (refcount 1 for clusters 0 … 3 + L1 clusters) |
//! | 3 … | L1 table, all entries zero (nothing allocated) |
//!
//! (qcow2 format: docs/interop/qcow2.txt in the QEMU sources.)

use std::io::{self, Seek, SeekFrom, Write};

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Bytes of guest disk one L1 entry covers: one L2 table of 8-byte entries, each mapping a cluster.
const L1_ENTRY_COVERS: u64 = (CLUSTER / 8) * CLUSTER;
const HEADER_LENGTH: u32 = 104;
const BACKING_FORMAT_EXTENSION: u32 = 0xe279_2aca;
/// The refcount block holds 16-bit counts: the image may not need more clusters than that.
const MAX_METADATA_CLUSTERS: u64 = CLUSTER / 2;

/// Why an overlay cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    /// A size or name the layout cannot hold.
    #[error("cannot make a qcow2 overlay: {0}")]
    Unsupported(String),
    /// Writing failed.
    #[error("writing the qcow2 overlay failed: {0}")]
    Io(#[from] io::Error),
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Writes an overlay of `virtual_size` bytes on `backing` (an absolute path of format `backing_format`)
/// into `out`, which must be empty; the file ends up sparse.
pub fn write_overlay<W: Write + Seek>(
    out: &mut W,
    virtual_size: u64,
    backing: &str,
    backing_format: &str,
) -> Result<u64, Qcow2Error> {
    if virtual_size == 0 || !virtual_size.is_multiple_of(512) {
        return Err(Qcow2Error::Unsupported(format!(
            "virtual size {virtual_size} is not a positive multiple of 512"
        )));
    }
    if backing.is_empty() || backing.len() > 1023 {
        return Err(Qcow2Error::Unsupported(
            "backing file name must be 1-1023 bytes".into(),
        ));
    }
    let l1_entries = virtual_size.div_ceil(L1_ENTRY_COVERS);
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER);
    let clusters = 3 + l1_clusters;
    if clusters > MAX_METADATA_CLUSTERS {
        return Err(Qcow2Error::Unsupported(format!(
            "virtual size {virtual_size} needs too large an L1 table"
        )));
    }
    let l1_entries = u32::try_from(l1_entries)
        .map_err(|_| Qcow2Error::Unsupported("L1 table too large".into()))?;

    // Header extensions follow the 104-byte header; the backing file name follows them.
    let mut extensions = Vec::new();
    extensions.extend_from_slice(&BACKING_FORMAT_EXTENSION.to_be_bytes());
    extensions.extend_from_slice(&(backing_format.len() as u32).to_be_bytes());
    extensions.extend_from_slice(backing_format.as_bytes());
    extensions.resize(8 + pad8(backing_format.len()), 0);
    extensions.extend_from_slice(&[0u8; 8]); // end of extensions
    let backing_offset = u64::from(HEADER_LENGTH) + extensions.len() as u64;
    if backing_offset + backing.len() as u64 > CLUSTER {
        return Err(Qcow2Error::Unsupported(
            "header does not fit one cluster".into(),
        ));
    }

    let mut header = Vec::with_capacity(HEADER_LENGTH as usize);
    header.extend_from_slice(b"QFI\xfb");
    header.extend_from_slice(&3u32.to_be_bytes()); // version
    header.extend_from_slice(&backing_offset.to_be_bytes());
    header.extend_from_slice(&(backing.len() as u32).to_be_bytes());
    header.extend_from_slice(&CLUSTER_BITS.to_be_bytes());
    header.extend_from_slice(&virtual_size.to_be_bytes());
    header.extend_from_slice(&0u32.to_be_bytes()); // no encryption
    header.extend_from_slice(&l1_entries.to_be_bytes());
    header.extend_from_slice(&(3 * CLUSTER).to_be_bytes()); // L1 table offset
    header.extend_from_slice(&CLUSTER.to_be_bytes()); // refcount table offset
    header.extend_from_slice(&1u32.to_be_bytes()); // refcount table clusters
    header.extend_from_slice(&0u32.to_be_bytes()); // snapshots
    header.extend_from_slice(&0u64.to_be_bytes()); // snapshots offset
    header.extend_from_slice(&0u64.to_be_bytes()); // incompatible features
    header.extend_from_slice(&0u64.to_be_bytes()); // compatible features
    header.extend_from_slice(&0u64.to_be_bytes()); // autoclear features
    header.extend_from_slice(&4u32.to_be_bytes()); // refcount order: 16-bit
    header.extend_from_slice(&HEADER_LENGTH.to_be_bytes());
    header.extend_from_slice(&extensions);
    header.extend_from_slice(backing.as_bytes());

    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header)?;
    out.seek(SeekFrom::Start(CLUSTER))?;
    out.write_all(&(2 * CLUSTER).to_be_bytes())?; // refcount table → block in cluster 2
    out.seek(SeekFrom::Start(2 * CLUSTER))?;
    let refcounts: Vec<u8> = (0..clusters).flat_map(|_| 1u16.to_be_bytes()).collect();
    out.write_all(&refcounts)?;
    // The L1 table is all zeros: extend the file over it without writing.
    let end = 3 * CLUSTER + u64::from(l1_entries) * 8;
    out.seek(SeekFrom::Start(end - 1))?;
    out.write_all(&[0])?;
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn overlay(size: u64, backing: &std::path::Path, format: &str) -> std::path::PathBuf {
        let path = backing.with_extension("overlay.qcow2");
        let mut file = std::fs::File::create(&path).expect("create");
        write_overlay(&mut file, size, &backing.to_string_lossy(), format).expect("write");
        path
    }

    fn qemu_img(args: &[&str]) -> std::process::Output {
        Command::new("qemu-img")
            .args(args)
            .output()
            .expect("qemu-img (apt-get install qemu-utils)")
    }

    #[test]
    fn qemu_img_accepts_the_overlay_and_reads_through_it_to_the_backing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backing = dir.path().join("base.raw");
        let content: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&backing, &content).expect("backing");
        let path = overlay(64 << 20, &backing, "raw");
        let p = path.to_string_lossy();

        let check = qemu_img(&["check", "-f", "qcow2", &p]);
        assert!(
            check.status.success(),
            "qemu-img check: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let info = qemu_img(&["info", "--output=json", "-f", "qcow2", &p]);
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
        assert_eq!(info["virtual-size"], 64u64 << 20);
        assert_eq!(info["backing-filename"], backing.to_string_lossy().as_ref());
        assert_eq!(info["backing-filename-format"], "raw");
        assert_eq!(info["format-specific"]["data"]["compat"], "1.1");

        let raw = dir.path().join("through.raw");
        let convert = qemu_img(&[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            &p,
            &raw.to_string_lossy(),
        ]);
        assert!(
            convert.status.success(),
            "{}",
            String::from_utf8_lossy(&convert.stderr)
        );
        let read = std::fs::read(&raw).expect("read");
        assert_eq!(read.len(), 64 << 20);
        assert_eq!(
            &read[..content.len()],
            &content[..],
            "reads fall through to the backing file"
        );
        assert!(
            read[content.len()..].iter().all(|b| *b == 0),
            "beyond the backing file the disk reads zeros"
        );
    }

    #[test]
    fn large_disks_get_multi_cluster_l1_tables_that_qemu_img_accepts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backing = dir.path().join("base.qcow2");
        let made = qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            &backing.to_string_lossy(),
            "1G",
        ]);
        assert!(made.status.success());
        let path = overlay(8 << 40, &backing, "qcow2"); // 8 TiB: 16384 L1 entries, two clusters
        let check = qemu_img(&["check", "-f", "qcow2", &path.to_string_lossy()]);
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
    }

    #[test]
    fn impossible_overlays_are_refused() {
        let mut out = std::io::Cursor::new(Vec::new());
        assert!(matches!(
            write_overlay(&mut out, 0, "/b", "raw"),
            Err(Qcow2Error::Unsupported(_))
        ));
        assert!(matches!(
            write_overlay(&mut out, 1000, "/b", "raw"),
            Err(Qcow2Error::Unsupported(_))
        ));
        assert!(matches!(
            write_overlay(&mut out, 1 << 30, "", "raw"),
            Err(Qcow2Error::Unsupported(_))
        ));
        assert!(matches!(
            write_overlay(&mut out, u64::MAX / 2 / 512 * 512, "/b", "raw"),
            Err(Qcow2Error::Unsupported(_))
        ));
    }
}
