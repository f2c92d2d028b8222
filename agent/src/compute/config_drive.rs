//! The cloud-init config drive (`config-2`): a small vfat volume with the server's metadata, user data
//! and network description, in the layout Nova writes (`openstack/latest/…`).
//!
//! vfat rather than ISO 9660 so it is written in-process (no `genisoimage`), and because Nova supports
//! the same (`config_drive_format = vfat`) and cloud-init finds either by its label.

use super::hypervisor::{NicAttachment, NicSpec};
use super::server::Server;
use base64::Engine as _;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{self, Read, Seek, Write};

/// Size of the volume: 30 times what the largest metadata and user data (64 KiB) need, and small
/// enough to build in memory on every create.
pub const VOLUME_BYTES: u64 = 2 * 1024 * 1024;
/// The label cloud-init looks for.
pub const LABEL: &str = "config-2";

/// The files of a config drive, path → bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDrive {
    files: BTreeMap<String, Vec<u8>>,
}

#[derive(Serialize)]
struct Link<'a> {
    id: String,
    vif_id: String,
    #[serde(rename = "type")]
    kind: &'a str,
    ethernet_mac_address: &'a str,
    mtu: u32,
}

impl ConfigDrive {
    /// The config drive for `server` with these NICs.
    pub fn for_server(server: &Server, nics: &[NicSpec]) -> Self {
        let mut seed = [0u8; 512];
        rand::fill(&mut seed[..]);
        let (public_keys, keys) = match (&server.key_name, &server.key_data) {
            (Some(name), Some(key)) => (
                json!({ name: key }),
                json!([{ "name": name, "type": "ssh", "data": key }]),
            ),
            _ => (json!({}), json!([])),
        };
        let meta_data = json!({
            "uuid": server.id,
            "name": server.name,
            "hostname": server.hostname(),
            "launch_index": 0,
            "availability_zone": server.availability_zone,
            "project_id": server.project_id,
            "meta": server.metadata,
            "public_keys": public_keys,
            "keys": keys,
            "devices": [],
            "random_seed": base64::engine::general_purpose::STANDARD.encode(seed),
        });
        let links: Vec<Link<'_>> = nics
            .iter()
            .map(|nic| {
                let (kind, dev) = match &nic.attachment {
                    NicAttachment::Tap { dev } => ("tap", dev),
                    NicAttachment::Ovs { dev, .. } => ("ovs", dev),
                };
                Link {
                    id: dev.clone(),
                    vif_id: nic.port_id.to_string(),
                    kind,
                    ethernet_mac_address: &nic.mac,
                    mtu: 1500,
                }
            })
            .collect();
        let network_data = json!({ "links": links, "networks": [], "services": [] });

        let mut files = BTreeMap::new();
        let pretty = |v: &serde_json::Value| serde_json::to_vec_pretty(v).unwrap_or_default();
        files.insert(
            "openstack/latest/meta_data.json".to_owned(),
            pretty(&meta_data),
        );
        files.insert(
            "openstack/latest/network_data.json".to_owned(),
            pretty(&network_data),
        );
        files.insert(
            "openstack/latest/vendor_data.json".to_owned(),
            b"{}".to_vec(),
        );
        files.insert(
            "openstack/latest/vendor_data2.json".to_owned(),
            b"{}".to_vec(),
        );
        if let Some(user_data) = &server.user_data {
            files.insert("openstack/latest/user_data".to_owned(), user_data.clone());
        }
        Self { files }
    }

    /// The files, path → bytes.
    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }

    /// The whole volume image, built in memory (fatfs does many small writes; a file would see them all).
    pub fn render(&self) -> io::Result<Vec<u8>> {
        let mut volume = io::Cursor::new(vec![0u8; VOLUME_BYTES as usize]);
        self.write_vfat(&mut volume)?;
        Ok(volume.into_inner())
    }

    /// Writes the volume into `file` sparsely: only blocks that are not all zero are written.
    pub fn write_sparse(&self, file: &mut std::fs::File) -> io::Result<()> {
        const BLOCK: usize = 4096;
        let image = self.render()?;
        file.set_len(image.len() as u64)?;
        for (index, block) in image.chunks(BLOCK).enumerate() {
            if block.iter().any(|&b| b != 0) {
                file.seek(io::SeekFrom::Start((index * BLOCK) as u64))?;
                file.write_all(block)?;
            }
        }
        Ok(())
    }

    /// Formats `volume` (at least [`VOLUME_BYTES`] long) as vfat labelled `config-2` and writes the files.
    pub fn write_vfat<T: Read + Write + Seek>(&self, volume: &mut T) -> io::Result<()> {
        let mut label = [b' '; 11];
        label[..LABEL.len()].copy_from_slice(LABEL.as_bytes());
        fatfs::format_volume(
            &mut *volume,
            fatfs::FormatVolumeOptions::new().volume_label(label),
        )?;
        let fs = fatfs::FileSystem::new(&mut *volume, fatfs::FsOptions::new())?;
        {
            let root = fs.root_dir();
            for (path, bytes) in &self.files {
                let mut dir = root.clone();
                let mut parts: Vec<&str> = path.split('/').collect();
                let name = parts.pop().unwrap_or_default();
                for part in parts {
                    dir = match dir.open_dir(part) {
                        Ok(existing) => existing,
                        Err(_) => dir.create_dir(part)?,
                    };
                }
                let mut file = dir.create_file(name)?;
                file.truncate()?;
                file.write_all(bytes)?;
                file.flush()?;
            }
        }
        fs.unmount()
    }

    /// Reads every file back from a vfat volume; the inverse of `write_vfat`, used to verify drives.
    pub fn read_vfat<T: Read + Write + Seek>(
        volume: &mut T,
    ) -> io::Result<(String, BTreeMap<String, Vec<u8>>)> {
        let fs = fatfs::FileSystem::new(&mut *volume, fatfs::FsOptions::new())?;
        let label = fs.volume_label().trim_end().to_owned();
        let mut files = BTreeMap::new();
        let mut stack = vec![(String::new(), fs.root_dir())];
        while let Some((prefix, dir)) = stack.pop() {
            for entry in dir.iter() {
                let entry = entry?;
                let name = entry.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                if entry.is_dir() {
                    stack.push((path, entry.to_dir()));
                } else {
                    let mut bytes = Vec::new();
                    entry.to_file().read_to_end(&mut bytes)?;
                    files.insert(path, bytes);
                }
            }
        }
        Ok((label, files))
    }
}
