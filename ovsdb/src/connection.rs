//! One JSON-RPC session over one socket.
//!
//! A reader task owns the read half: it frames the stream, hands responses to the waiting
//! requests by id, answers the server's `echo` requests itself (a session that does not is
//! dropped by the server's inactivity probe), queues notifications in arrival order for the
//! client's supervisor, and sends our own `echo` when the peer has been silent for too long so a
//! dead peer is noticed. A writer task owns the write half so that requests from any number of
//! tasks are serialised without a lock held across `await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::error::Error;
use crate::framing::Framer;
use crate::remote::Remote;

/// Something the reader received that is not a response: a notification, in arrival order, or
/// a barrier injected by a caller that wants to know when everything before it was handled.
#[derive(Debug)]
pub(crate) enum Inbound {
    Notification { method: String, params: Json },
    Barrier(oneshot::Sender<()>),
}

/// Counters shared by all connections of a client.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) echo_requests_answered: AtomicU64,
    pub(crate) probes_sent: AtomicU64,
    pub(crate) connections_established: AtomicU64,
    pub(crate) connections_lost: AtomicU64,
    pub(crate) monitor_resumes: AtomicU64,
    pub(crate) monitor_reloads: AtomicU64,
}

#[derive(Debug, Clone)]
pub(crate) struct ConnectionOptions {
    pub(crate) connect_timeout: Duration,
    pub(crate) inactivity_probe: Option<Duration>,
    pub(crate) max_message_size: usize,
}

type Reply = Result<Json, Failure>;

#[derive(Debug)]
enum Failure {
    Rpc(Json),
    Lost(Arc<str>),
}

#[derive(Debug, Default)]
struct Pending {
    waiters: HashMap<u64, oneshot::Sender<Reply>>,
    closed: Option<Arc<str>>,
}

/// Removes a waiter when its request future is dropped before the reply came.
struct WaiterGuard<'a> {
    pending: &'a Mutex<Pending>,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        lock(self.pending).waiters.remove(&self.id);
    }
}

fn lock(m: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A live session. Dropping it closes the socket.
#[derive(Debug)]
pub(crate) struct Connection {
    remote: Remote,
    out: mpsc::Sender<Vec<u8>>,
    inbound: mpsc::UnboundedSender<Inbound>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
    close: Arc<watch::Sender<Option<Arc<str>>>>,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

impl Connection {
    /// Connects and starts the reader and writer tasks.
    pub(crate) async fn open(
        remote: &Remote,
        options: &ConnectionOptions,
        counters: Arc<Counters>,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<Inbound>), Error> {
        let connect = async {
            let stream: Box<dyn Io> = match remote {
                Remote::Tcp { host, port } => {
                    let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    s.set_nodelay(true)?;
                    Box::new(s)
                }
                Remote::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            };
            Ok::<_, std::io::Error>(stream)
        };
        let stream = match tokio::time::timeout(options.connect_timeout, connect).await {
            Err(_) => {
                return Err(Error::ConnectTimeout {
                    remote: remote.clone(),
                });
            }
            Ok(Err(source)) => {
                return Err(Error::Connect {
                    remote: remote.clone(),
                    source,
                });
            }
            Ok(Ok(stream)) => stream,
        };
        let (read_half, write_half) = tokio::io::split(stream);
        let (out_tx, out_rx) = mpsc::channel(256);
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        let (close_tx, close_rx) = watch::channel(None);
        let close = Arc::new(close_tx);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let conn = Arc::new(Self {
            remote: remote.clone(),
            out: out_tx.clone(),
            inbound: inbound_tx.clone(),
            pending: Arc::clone(&pending),
            next_id: AtomicU64::new(1),
            close: Arc::clone(&close),
        });
        tokio::spawn(write_loop(
            write_half,
            out_rx,
            Arc::clone(&close),
            close_rx.clone(),
        ));
        let reader = Reader {
            remote: remote.clone(),
            out: out_tx,
            inbound: inbound_tx,
            pending,
            close,
            close_rx,
            counters,
            probe: options.inactivity_probe,
            framer: Framer::with_max_message_size(options.max_message_size),
        };
        tokio::spawn(reader.run(read_half));
        Ok((conn, inbound_rx))
    }

    /// The server this session talks to.
    pub(crate) fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Sends a request and waits for its response.
    pub(crate) async fn call(&self, method: &str, params: Json) -> Result<Json, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if let Some(reason) = &pending.closed {
                return Err(self.lost(reason));
            }
            pending.waiters.insert(id, tx);
        }
        let _guard = WaiterGuard {
            pending: &self.pending,
            id,
        };
        let bytes = serde_json::to_vec(&json!({"id": id, "method": method, "params": params}))
            .unwrap_or_default();
        tracing::trace!(remote = %self.remote, method, id, "request");
        if self.out.send(bytes).await.is_err() {
            return Err(self.lost(&self.close_reason()));
        }
        match rx.await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(Failure::Rpc(error))) => Err(Error::Rpc {
                method: method.to_owned(),
                error,
            }),
            Ok(Err(Failure::Lost(reason))) => Err(self.lost(&reason)),
            Err(_) => Err(self.lost(&self.close_reason())),
        }
    }

    /// Resolves once every notification that arrived before this call has been handled by the
    /// consumer of the inbound queue (or the connection is gone).
    pub(crate) async fn barrier(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inbound.send(Inbound::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Closes the session; in-flight requests fail with `reason`.
    pub(crate) fn close(&self, reason: &str) {
        let reason: Arc<str> = Arc::from(reason);
        self.close.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Whether the session has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.close.borrow().is_some()
    }

    /// Resolves with the reason once the session has ended.
    pub(crate) async fn closed(&self) -> Arc<str> {
        let mut rx = self.close.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_else(|| Arc::from("closed")),
            Err(_) => Arc::from("closed"),
        }
    }

    fn close_reason(&self) -> Arc<str> {
        self.close
            .borrow()
            .clone()
            .unwrap_or_else(|| Arc::from("connection closed"))
    }

    fn lost(&self, reason: &str) -> Error {
        Error::ConnectionLost {
            remote: self.remote.clone(),
            reason: reason.to_owned(),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close("connection dropped by the client");
    }
}

async fn write_loop(
    mut writer: tokio::io::WriteHalf<Box<dyn Io>>,
    mut out: mpsc::Receiver<Vec<u8>>,
    close: Arc<watch::Sender<Option<Arc<str>>>>,
    mut close_rx: watch::Receiver<Option<Arc<str>>>,
) {
    loop {
        tokio::select! {
            msg = out.recv() => {
                let Some(msg) = msg else { break };
                if let Err(e) = writer.write_all(&msg).await {
                    let reason: Arc<str> = Arc::from(format!("write failed: {e}"));
                    close.send_if_modified(|c| c.is_none().then(|| *c = Some(reason)).is_some());
                    break;
                }
            }
            () = closed_signal(&mut close_rx) => break,
        }
    }
    let _ = writer.shutdown().await;
}

/// Resolves when a close reason has been set (without holding the watch guard across awaits).
async fn closed_signal(rx: &mut watch::Receiver<Option<Arc<str>>>) {
    let _ = rx.wait_for(Option::is_some).await;
}

struct Reader {
    remote: Remote,
    out: mpsc::Sender<Vec<u8>>,
    inbound: mpsc::UnboundedSender<Inbound>,
    pending: Arc<Mutex<Pending>>,
    close: Arc<watch::Sender<Option<Arc<str>>>>,
    close_rx: watch::Receiver<Option<Arc<str>>>,
    counters: Arc<Counters>,
    probe: Option<Duration>,
    framer: Framer,
}

impl Reader {
    async fn run(mut self, mut read_half: tokio::io::ReadHalf<Box<dyn Io>>) {
        let mut buf = vec![0_u8; 64 * 1024];
        let mut last_activity = Instant::now();
        let mut probe_sent = false;
        let mut close_rx = self.close_rx.clone();
        let reason: Arc<str> = loop {
            let deadline = self
                .probe
                .map(|p| last_activity + if probe_sent { p.saturating_mul(2) } else { p });
            let probe_due = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = read_half.read(&mut buf) => match read {
                    Ok(0) => {
                        break Arc::from(if self.framer.buffered() > 0 {
                            "server closed the connection in the middle of a message"
                        } else {
                            "server closed the connection"
                        });
                    }
                    Ok(n) => {
                        last_activity = Instant::now();
                        probe_sent = false;
                        self.framer.push(&buf[..n]);
                        if let Err(reason) = self.drain().await {
                            break reason;
                        }
                    }
                    Err(e) => break Arc::from(format!("read failed: {e}")),
                },
                () = probe_due => {
                    if probe_sent {
                        let p = self.probe.unwrap_or_default();
                        break Arc::from(format!(
                            "no data from the server for {:?} despite an echo probe", p.saturating_mul(2)
                        ));
                    }
                    probe_sent = true;
                    self.counters.probes_sent.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(remote = %self.remote, "inactivity probe: sending echo");
                    let probe = br#"{"id":"echo","method":"echo","params":[]}"#.to_vec();
                    let _ = self.out.try_send(probe);
                }
                () = closed_signal(&mut close_rx) => break self.reason_or("closed"),
            }
        };
        // First reason wins: a close requested by the client is not overwritten by the EOF that
        // follows it.
        let reason = {
            let candidate = reason.clone();
            self.close
                .send_if_modified(|c| c.is_none().then(|| *c = Some(candidate)).is_some());
            self.reason_or(&reason)
        };
        tracing::debug!(remote = %self.remote, %reason, "connection closed");
        let waiters = {
            let mut pending = lock(&self.pending);
            pending.closed = Some(reason.clone());
            std::mem::take(&mut pending.waiters)
        };
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(Failure::Lost(reason.clone())));
        }
    }

    fn reason_or(&self, default: &str) -> Arc<str> {
        self.close_rx
            .borrow()
            .clone()
            .unwrap_or_else(|| Arc::from(default))
    }

    /// Dispatches every complete message in the framer.
    async fn drain(&mut self) -> Result<(), Arc<str>> {
        loop {
            let message = match self.framer.next_value() {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Arc::from(format!("protocol error: {e}"))),
            };
            self.dispatch(message).await?;
        }
    }

    async fn dispatch(&mut self, message: Json) -> Result<(), Arc<str>> {
        let Json::Object(mut obj) = message else {
            return Err(Arc::from("protocol error: message is not a JSON object"));
        };
        let id = obj.remove("id").unwrap_or(Json::Null);
        if let Some(method) = obj.get("method").and_then(Json::as_str).map(str::to_owned) {
            let params = obj.remove("params").unwrap_or_else(|| json!([]));
            if id.is_null() {
                tracing::trace!(remote = %self.remote, method, "notification");
                let _ = self.inbound.send(Inbound::Notification { method, params });
                return Ok(());
            }
            let reply = if method == "echo" {
                self.counters
                    .echo_requests_answered
                    .fetch_add(1, Ordering::Relaxed);
                json!({"id": id, "result": params, "error": null})
            } else {
                tracing::debug!(remote = %self.remote, method, "unsupported request from server");
                json!({"id": id, "result": null, "error": {"error": "unknown method", "details": method}})
            };
            let bytes = serde_json::to_vec(&reply).unwrap_or_default();
            if self.out.send(bytes).await.is_err() {
                return Err(self.reason_or("writer stopped"));
            }
            return Ok(());
        }
        // A response. Ours carry numeric ids; anything else (our echo probes) only counts as
        // activity.
        let Some(id) = id.as_u64() else {
            return Ok(());
        };
        let error = obj.remove("error").unwrap_or(Json::Null);
        let reply = if error.is_null() {
            Ok(obj.remove("result").unwrap_or(Json::Null))
        } else {
            Err(Failure::Rpc(error))
        };
        let waiter = lock(&self.pending).waiters.remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(reply);
        } else {
            tracing::debug!(remote = %self.remote, id, "response to an abandoned request");
        }
        Ok(())
    }
}
