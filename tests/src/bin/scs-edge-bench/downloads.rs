//! Release download benchmark (part `downloads` of `scs-edge-bench`): 50 sites fetching a 256 MiB
//! artifact from the region's repository at once, each over its own mTLS connection, against one
//! GET of the same file from a plain TLS file server in the bench process.
//!
//! The release is signed at a release desk from fake image output whose UKI is 256 MiB of random
//! bytes (the UKI is stored uncompressed, so the target is that size), and published with the
//! region's CLI. The repository serves a release's artifacts only to sites whose desired version
//! names it, so each site's desired version is set over the operator API first. Each download is
//! read to its end and SHA-256 hashed on the load generator, as a node verifies what it fetched.
//!
//! The baseline server uses the same TLS provider and the same client, and no region logic: no
//! routing, no authorisation, no database — what TLS and the file cost on this machine. It reads the
//! file in 64 KiB pieces; the region's response streams the file in 4 KiB pieces (`ReaderStream`'s
//! default), so the bench also prints (outside the table) one GET from the plain server in 4 KiB
//! pieces, to tell that cost apart from the region's own.

use crate::fleet_load::{
    Connection, client_config, connect_all, enroll_all, join_spawned, load_runtime, raise_fd_limit,
    region_with_releases, rss_mib,
};
use scs_edge_proto::release::{Artifact, ArtifactKind};
use scs_edge_release::repository::NewRelease;
use scs_edge_release::{Lifetimes, TARGETS_DIR, test_support};
use scs_edge_tests::bench::Record;
use scs_edge_tests::region::{RegionOptions, RegionProcess};
use scs_edge_tests::release_desk::Desk;
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};

const SITES: usize = 50;
/// The artifact's size, unless `SCS_EDGE_BENCH_DOWNLOAD_MIB` says otherwise.
const ARTIFACT_MIB: usize = 256;
const VERSION: &str = "2.0.0";
/// The plain server's read size, and the region's (`tokio_util::io::ReaderStream`'s default).
const PLAIN_CHUNK: usize = 64 * 1024;
const REGION_CHUNK: usize = 4 * 1024;
/// Timed GETs from the plain server; the median counts, so one hiccup of a shared machine does not.
const BASELINE_GETS: usize = 3;

pub(crate) fn run(records: &mut Vec<Record>) {
    raise_fd_limit();
    let mib = std::env::var("SCS_EDGE_BENCH_DOWNLOAD_MIB")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(ARTIFACT_MIB);
    let runtime = load_runtime();
    let desk = Desk::new(&runtime);
    let artifact = runtime.block_on(sign_large_release(&desk, mib << 20));
    let region = region_with_releases(
        "bench-downloads",
        RegionOptions {
            expected_interval_secs: 10,
            log_filter: "warn".into(),
            ..RegionOptions::default()
        },
        &desk,
        VERSION,
    );
    let file = desk
        .repository
        .targets_dir()
        .join(format!("{}.{}", artifact.sha256, artifact.target));
    let measured = runtime.block_on(measure(&region, &artifact, &file));
    measured.report(mib, records);
}

/// Signs `VERSION` with a UKI of `size` random bytes; returns that artifact.
async fn sign_large_release(desk: &Desk, size: usize) -> Artifact {
    let image_dir = test_support::image_output(&desk.dir.path().join("large-image"), VERSION);
    let suffix = ArtifactKind::Uki.image_suffix().expect("UKI suffix");
    let uki = image_dir.join(format!("scs-edge_{VERSION}{suffix}"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&uki).expect("UKI"));
    let mut piece = vec![0u8; 1 << 20];
    for _ in 0..size.div_ceil(piece.len()) {
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut piece);
        std::io::Write::write_all(&mut out, &piece).expect("write UKI");
    }
    std::io::Write::flush(&mut out).expect("flush UKI");
    drop(out);
    let release = NewRelease {
        image_dir,
        version: VERSION.parse().expect("version"),
        min_from_version: semver::Version::new(0, 0, 0),
        max_version: None,
    };
    let manifest = desk
        .repository
        .publish(
            &desk.keys,
            &release,
            &Lifetimes::default(),
            jiff::Timestamp::now(),
        )
        .await
        .expect("signed");
    manifest
        .artifacts
        .into_iter()
        .find(|a| a.kind == ArtifactKind::Uki)
        .expect("the UKI artifact")
}

struct Measured {
    bytes: u64,
    wall_secs: f64,
    site_secs: Vec<f64>,
    baseline_secs: f64,
    small_pieces_secs: f64,
    rss_before_mib: f64,
    rss_peak_mib: f64,
}

async fn measure(region: &RegionProcess, artifact: &Artifact, file: &Path) -> Measured {
    let pid = region.pid().expect("region pid");
    let (sites, _) = enroll_all(region, SITES).await;
    let mut operator = Connection::open(region.port(), client_config(&region.ca_pem(), None))
        .await
        .expect("operator connection");
    for site in &sites {
        let (status, body) = operator
            .request(
                "PATCH",
                &format!("/api/v1/sites/{}/desired", site.site),
                format!("{{\"target_os_version\":\"{VERSION}\"}}").as_bytes(),
            )
            .await
            .expect("desired version");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let target = format!("{}.{}", artifact.sha256, artifact.target);
    let mut connections = connect_all(region.port(), &sites).await;

    // Untimed: the region's copy into the page cache, as the plain server's gets below.
    let (site, conn) = connections.first_mut().expect("a site");
    download(conn, &repository_path(site, &target), artifact).await;

    let rss_before_mib = rss_mib(pid);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak: f64 = 0.0;
            while sampling.load(Ordering::SeqCst) {
                peak = peak.max(rss_mib(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak.max(rss_mib(pid))
        })
    };
    let started = Instant::now();
    let artifact = Arc::new(artifact.clone());
    let site_secs = join_spawned(connections.into_iter().map(|(site, conn)| {
        let (artifact, path) = (artifact.clone(), repository_path(&site, &target));
        async move {
            let mut conn = conn;
            let started = Instant::now();
            download(&mut conn, &path, &artifact).await;
            started.elapsed().as_secs_f64()
        }
    }))
    .await;
    let wall_secs = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::SeqCst);
    let rss_peak_mib = sampler.join().expect("RSS sampler");

    let plain = PlainServer::start(file.to_path_buf(), PLAIN_CHUNK).await;
    let small = PlainServer::start(file.to_path_buf(), REGION_CHUNK).await;
    let (cert, key) = &sites[0].identity;
    let mut baseline = Vec::new();
    let mut conn = plain.connect(cert, key).await;
    download(&mut conn, "/", &artifact).await;
    for _ in 0..BASELINE_GETS {
        let started = Instant::now();
        download(&mut conn, "/", &artifact).await;
        baseline.push(started.elapsed().as_secs_f64());
    }
    baseline.sort_by(f64::total_cmp);
    let mut conn = small.connect(cert, key).await;
    let started = Instant::now();
    download(&mut conn, "/", &artifact).await;
    let small_pieces_secs = started.elapsed().as_secs_f64();
    Measured {
        bytes: artifact.length,
        wall_secs,
        site_secs,
        baseline_secs: baseline[BASELINE_GETS / 2],
        small_pieces_secs,
        rss_before_mib,
        rss_peak_mib,
    }
}

fn repository_path(site: &str, target: &str) -> String {
    format!("/node/v1/sites/{site}/repository/{TARGETS_DIR}/{target}")
}

/// GETs `path` on `conn`, reads the whole body through SHA-256 and checks it is `artifact`.
async fn download(conn: &mut Connection, path: &str, artifact: &Artifact) {
    let (status, length) = conn.exchange("GET", path, b"").await.expect("GET");
    assert_eq!(status, 200, "GET {path}");
    assert_eq!(length as u64, artifact.length, "GET {path}: length");
    let hash = hash_to_end(conn.body(length)).await;
    assert_eq!(hash, artifact.sha256, "GET {path}: SHA-256");
}

async fn hash_to_end(mut body: impl AsyncRead + Unpin) -> String {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = body.read(&mut buffer).await.expect("read the body");
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// A static file server over TLS: every request on a connection gets the one file, read in
/// `chunk`-byte pieces. Nothing else — the floor under the region's repository.
struct PlainServer {
    port: u16,
    cert_pem: String,
}

impl PlainServer {
    async fn start(file: PathBuf, chunk: usize) -> Self {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
        let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(certified.cert.der().to_vec())],
            key,
        )
        .expect("server config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, file) = (acceptor.clone(), file.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve_connection(BufReader::new(tls), &file, chunk).await;
                    }
                });
            }
        });
        Self {
            port,
            cert_pem: certified.cert.pem(),
        }
    }

    /// A connection with the same client as the sites' (the site's certificate offered, unasked).
    async fn connect(&self, cert_pem: &str, key_pem: &str) -> Connection {
        Connection::open(
            self.port,
            client_config(&self.cert_pem, Some((cert_pem, key_pem))),
        )
        .await
        .expect("plain server connection")
    }
}

async fn serve_connection<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: BufReader<S>,
    file: &Path,
    chunk: usize,
) -> std::io::Result<()> {
    let mut line = String::new();
    let mut buffer = vec![0u8; chunk];
    loop {
        // The request's head; its body is empty (a GET).
        loop {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut source = tokio::fs::File::open(file).await?;
        let length = source.metadata().await?.len();
        let writer = stream.get_mut();
        writer
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {length}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        loop {
            let read = source.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            writer.write_all(&buffer[..read]).await?;
        }
        writer.flush().await?;
    }
}

impl Measured {
    fn report(&self, mib: usize, records: &mut Vec<Record>) {
        let mb = self.bytes as f64 / 1e6;
        let aggregate = SITES as f64 * mb / self.wall_secs;
        let baseline = mb / self.baseline_secs;
        let per_site: Vec<f64> = self.site_secs.iter().map(|secs| mb / secs).collect();
        let mean = per_site.iter().sum::<f64>() / per_site.len() as f64;
        let slowest = per_site.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "downloads: {SITES} × {mib} MiB in {:.1} s = {aggregate:.0} MB/s; one GET from the plain server {:.2} s = {baseline:.0} MB/s, in {} KiB pieces {:.2} s = {:.0} MB/s; per site mean {mean:.1} MB/s, slowest {slowest:.1} MB/s; region RSS {:.1} → peak {:.1} MiB",
            self.wall_secs,
            self.baseline_secs,
            REGION_CHUNK / 1024,
            self.small_pieces_secs,
            mb / self.small_pieces_secs,
            self.rss_before_mib,
            self.rss_peak_mib,
        );
        let base = format!("{SITES} sites × {mib} MiB at once, each on its own mTLS connection");
        records.push(Record::compared(
            &format!("release downloads: aggregate throughput ({base})"),
            aggregate,
            "MB/s",
            baseline,
            "one GET of the same file from a plain tokio-rustls server",
            "ratio ≥ 1.0",
        ));
        records.push(Record::compared(
            &format!("release downloads: slowest site ({base})"),
            slowest,
            "MB/s",
            mean,
            "the mean site",
            "—",
        ));
        records.push(Record::compared(
            &format!("release downloads: region RSS peak ({base})"),
            self.rss_peak_mib,
            "MiB",
            self.rss_before_mib,
            "the region before the downloads",
            "—",
        ));
    }
}
