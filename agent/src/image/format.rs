//! Recognising what a disk image file really is, from its first bytes.
//!
//! The declared format is never trusted: a file declared `raw` that is really qcow2 would be handed to
//! QEMU as the wrong format, and a qcow2 file may name a *backing file* anywhere on the host (the
//! classic way to make a hypervisor read `/etc/shadow` into a guest). Such images are refused.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Bytes of a file's start the inspector needs.
pub const HEADER_LEN: usize = 4096;

/// Disk formats the store accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// A plain byte-for-byte disk.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
}

impl DiskFormat {
    /// The name QEMU, libvirt and Glance use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }

    /// Parses a Glance `disk_format` value.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "raw" => Some(Self::Raw),
            "qcow2" => Some(Self::Qcow2),
            _ => None,
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspection {
    /// The format found.
    pub format: DiskFormat,
    /// Size of the disk the guest sees, in bytes.
    pub virtual_size: u64,
}

/// Why an image's bytes are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The content is another format than declared.
    #[error("image content is {found}, but disk_format {declared} was declared")]
    Mismatch {
        /// Declared format.
        declared: DiskFormat,
        /// Format found in the content.
        found: String,
    },
    /// A qcow2 image that refers to another file.
    #[error("qcow2 images with a backing file are not accepted")]
    BackingFile,
    /// A qcow2 image that keeps its data in another file.
    #[error("qcow2 images with an external data file are not accepted")]
    ExternalDataFile,
    /// A qcow2 header that cannot be right.
    #[error("malformed qcow2 header: {0}")]
    Malformed(&'static str),
    /// Nothing to boot from.
    #[error("image is empty")]
    Empty,
}

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// Recognises formats QEMU would otherwise probe, so a mislabelled upload is caught.
fn sniff(header: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| header.get(offset..offset + magic.len()) == Some(magic);
    if at(0, QCOW2_MAGIC) {
        Some("qcow2")
    } else if at(0, b"KDMV") || at(0, b"# Disk DescriptorFile") {
        Some("vmdk")
    } else if at(0, b"vhdxfile") {
        Some("vhdx")
    } else if at(0, b"conectix") {
        Some("vpc")
    } else if at(64, &[0x7f, 0x10, 0xda, 0xbe]) {
        Some("vdi")
    } else if at(0, b"QEVM") {
        Some("qed")
    } else {
        None
    }
}

/// Checks `header` (the first bytes of a file of `file_size` bytes) against the declared format.
pub fn inspect(
    declared: DiskFormat,
    header: &[u8],
    file_size: u64,
) -> Result<Inspection, FormatError> {
    if file_size == 0 {
        return Err(FormatError::Empty);
    }
    match (declared, sniff(header)) {
        (DiskFormat::Raw, None) => Ok(Inspection {
            format: DiskFormat::Raw,
            virtual_size: file_size,
        }),
        (DiskFormat::Qcow2, Some("qcow2")) => inspect_qcow2(header),
        (declared, found) => Err(FormatError::Mismatch {
            declared,
            found: found.unwrap_or("raw").to_owned(),
        }),
    }
}

fn be_u32(header: &[u8], offset: usize) -> Result<u32, FormatError> {
    header
        .get(offset..offset + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or(FormatError::Malformed("header truncated"))
}

fn be_u64(header: &[u8], offset: usize) -> Result<u64, FormatError> {
    header
        .get(offset..offset + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(FormatError::Malformed("header truncated"))
}

/// qcow2 header layout: magic(0) version(4) backing_file_offset(8) backing_file_size(16)
/// cluster_bits(20) size(24) … incompatible_features(72, v3 only).
fn inspect_qcow2(header: &[u8]) -> Result<Inspection, FormatError> {
    let version = be_u32(header, 4)?;
    if !(2..=3).contains(&version) {
        return Err(FormatError::Malformed("unsupported qcow2 version"));
    }
    if be_u64(header, 8)? != 0 || be_u32(header, 16)? != 0 {
        return Err(FormatError::BackingFile);
    }
    let cluster_bits = be_u32(header, 20)?;
    if !(9..=21).contains(&cluster_bits) {
        return Err(FormatError::Malformed("cluster size out of range"));
    }
    let virtual_size = be_u64(header, 24)?;
    if virtual_size == 0 {
        return Err(FormatError::Empty);
    }
    if version == 3 {
        const EXTERNAL_DATA_FILE: u64 = 1 << 2;
        if be_u64(header, 72)? & EXTERNAL_DATA_FILE != 0 {
            return Err(FormatError::ExternalDataFile);
        }
    }
    Ok(Inspection {
        format: DiskFormat::Qcow2,
        virtual_size,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal qcow2 v3 header as `qemu-img create -f qcow2` writes it.
    pub(crate) fn qcow2_header(size: u64, backing: bool, data_file: bool) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[0..4].copy_from_slice(QCOW2_MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        if backing {
            h[8..16].copy_from_slice(&512u64.to_be_bytes());
            h[16..20].copy_from_slice(&11u32.to_be_bytes());
        }
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&size.to_be_bytes());
        if data_file {
            h[72..80].copy_from_slice(&4u64.to_be_bytes());
        }
        h
    }

    #[test]
    fn raw_is_raw_and_its_size_is_the_file_size() {
        let i = inspect(DiskFormat::Raw, &[0xeb, 0x3c, 0x90], 1 << 20).expect("raw");
        assert_eq!(
            i,
            Inspection {
                format: DiskFormat::Raw,
                virtual_size: 1 << 20
            }
        );
    }

    #[test]
    fn qcow2_virtual_size_comes_from_the_header() {
        let i = inspect(
            DiskFormat::Qcow2,
            &qcow2_header(10 << 30, false, false),
            200_000,
        )
        .expect("qcow2");
        assert_eq!(i.virtual_size, 10 << 30);
    }

    #[test]
    fn qcow2_declared_as_raw_is_refused() {
        let err = inspect(DiskFormat::Raw, &qcow2_header(1 << 30, false, false), 1000)
            .expect_err("mismatch");
        assert_eq!(
            err,
            FormatError::Mismatch {
                declared: DiskFormat::Raw,
                found: "qcow2".into()
            }
        );
    }

    #[test]
    fn raw_declared_as_qcow2_is_refused() {
        assert!(matches!(
            inspect(DiskFormat::Qcow2, &[0; 512], 1000),
            Err(FormatError::Mismatch { .. })
        ));
    }

    #[test]
    fn qcow2_with_backing_file_is_refused() {
        assert_eq!(
            inspect(DiskFormat::Qcow2, &qcow2_header(1 << 30, true, false), 1000),
            Err(FormatError::BackingFile)
        );
    }

    #[test]
    fn qcow2_with_external_data_file_is_refused() {
        assert_eq!(
            inspect(DiskFormat::Qcow2, &qcow2_header(1 << 30, false, true), 1000),
            Err(FormatError::ExternalDataFile)
        );
    }

    #[test]
    fn vmdk_uploaded_as_raw_is_refused() {
        let mut h = vec![0u8; 512];
        h[0..4].copy_from_slice(b"KDMV");
        assert!(
            matches!(inspect(DiskFormat::Raw, &h, 512), Err(FormatError::Mismatch { found, .. }) if found == "vmdk")
        );
    }

    #[test]
    fn empty_file_is_refused() {
        assert_eq!(inspect(DiskFormat::Raw, &[], 0), Err(FormatError::Empty));
    }

    proptest::proptest! {
        #[test]
        fn inspecting_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600), size in 0u64..u64::MAX) {
            let _ = inspect(DiskFormat::Raw, &bytes, size);
            let _ = inspect(DiskFormat::Qcow2, &bytes, size);
        }
    }
}
