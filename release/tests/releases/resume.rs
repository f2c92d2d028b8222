//! Downloads that break off: a real HTTP/1.1 server on loopback (written here, since the point is
//! to misbehave) cuts the connection halfway through the first transfer of the `/usr` target. With
//! ranges offered, the node's transport asks for the rest and the release stages verified; without,
//! the node reports the repository unreachable and stages nothing.

use crate::{Desk, assert_staged_as_built, v};
use scs_edge_release::verify;
use scs_edge_release::{Lifetimes, ReleaseError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// Each request's path and `Range` header, in order.
type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A server of `root` that cuts the first answer for a `/usr` target after half its body, and
/// records each request's path and `Range`.
struct CuttingServer {
    base: reqwest::Url,
    requests: RequestLog,
}

impl CuttingServer {
    async fn start(root: PathBuf, ranges: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}/", listener.local_addr().expect("addr"))
            .parse()
            .expect("url");
        let requests = RequestLog::default();
        let log = requests.clone();
        tokio::spawn(async move {
            let cut_done = Arc::new(Mutex::new(false));
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (root, log, cut_done) = (root.clone(), log.clone(), cut_done.clone());
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let Ok(Some(request)) = lines.next_line().await else {
                        return;
                    };
                    let path = request.split(' ').nth(1).unwrap_or("/").to_owned();
                    let mut range = None;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("range")
                        {
                            range = Some(value.trim().to_owned());
                        }
                    }
                    log.lock().expect("log").push((path.clone(), range.clone()));
                    let Ok(body) = std::fs::read(root.join(path.trim_start_matches('/'))) else {
                        let _ = write
                            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    };
                    let accept = if ranges {
                        "accept-ranges: bytes\r\n"
                    } else {
                        ""
                    };
                    let from = range
                        .as_deref()
                        .and_then(|r| r.strip_prefix("bytes="))
                        .and_then(|r| r.strip_suffix('-'))
                        .and_then(|first| first.parse::<usize>().ok());
                    let (head, part) = match from {
                        Some(first) if ranges && first < body.len() => (
                            format!(
                                "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {first}-{}/{}\r\n{accept}connection: close\r\n\r\n",
                                body.len() - first,
                                body.len() - 1,
                                body.len()
                            ),
                            &body[first..],
                        ),
                        _ => (
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{accept}connection: close\r\n\r\n",
                                body.len()
                            ),
                            &body[..],
                        ),
                    };
                    let _ = write.write_all(head.as_bytes()).await;
                    let cut = path.ends_with(".usr.raw.gz") && from.is_none() && {
                        let mut done = cut_done.lock().expect("cut");
                        !std::mem::replace(&mut *done, true)
                    };
                    if cut {
                        // Half the body, then the link drops.
                        let _ = write.write_all(&part[..part.len() / 2]).await;
                        let _ = write.flush().await;
                        return;
                    }
                    let _ = write.write_all(part).await;
                    let _ = write.shutdown().await;
                });
            }
        });
        Self { base, requests }
    }
}

async fn stage_through(
    ranges: bool,
) -> (
    Desk,
    Result<verify::StagedRelease, ReleaseError>,
    CuttingServer,
) {
    let desk = Desk::new().await;
    desk.publish("1.0.0", None, &Lifetimes::default()).await;
    let server = CuttingServer::start(desk.path("repository"), ranges).await;
    let datastore = desk.path("node-datastore");
    let repo =
        verify::discover_remote(&server.base, crate::client(), &desk.trust(&datastore), None)
            .await
            .expect("the metadata arrives whole");
    let manifest = repo.offered().await.expect("manifests").remove(0);
    assert_eq!(manifest.version, v("1.0.0"));
    let staged = repo.stage(&manifest, &desk.path("slot")).await;
    (desk, staged, server)
}

#[tokio::test]
async fn a_download_that_breaks_off_is_resumed_where_it_stopped_and_stages_verified() {
    let (desk, staged, server) = stage_through(true).await;
    let staged = staged.expect("staged after resuming");
    assert_staged_as_built(&desk, &staged);
    let requests = server.requests.lock().expect("log").clone();
    let usr: Vec<_> = requests
        .iter()
        .filter(|(path, _)| path.ends_with(".usr.raw.gz"))
        .collect();
    assert_eq!(usr.len(), 2, "the cut transfer and its rest: {usr:?}");
    assert_eq!(usr[0].1, None);
    let usr_target = staged
        .manifest
        .artifacts
        .iter()
        .find(|a| a.kind == scs_edge_proto::release::ArtifactKind::Usr)
        .expect("usr");
    assert_eq!(
        usr[1].1.as_deref(),
        Some(format!("bytes={}-", usr_target.length / 2).as_str()),
        "the rest, from where it stopped"
    );
}

#[tokio::test]
async fn without_ranges_a_download_that_breaks_off_is_unreachable_and_stages_nothing() {
    let (desk, staged, _server) = stage_through(false).await;
    let err = staged.expect_err("cut");
    assert!(matches!(err, ReleaseError::Unreachable { .. }), "{err}");
    assert!(!desk.path("slot").exists());
}
