//! The kernel's packet queue (`nfnetlink_queue`), spoken over a netlink socket.
//!
//! The lab holds packets back instead of shaping them (the lab machine's kernel has no `netem`), and
//! all it needs of the queue protocol is to bind a queue, learn each packet's id and give each one
//! its verdict: a few fixed-layout messages, encoded here rather than through a binding of
//! libnetfilter_queue, which would bring a C library into the build for five structs.
//!
//! Layouts are those of `linux/netfilter/nfnetlink_queue.h`: a netlink header, then the netfilter
//! header (`nfgenmsg`: family, version, queue number in network byte order), then attributes.
//! Netlink headers and attribute headers are in host byte order, the queue's payloads in network
//! byte order.

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use std::io;

/// `NFNL_SUBSYS_QUEUE`: the high byte of every queue message type.
const SUBSYS_QUEUE: u16 = 3;
const MSG_PACKET: u16 = SUBSYS_QUEUE << 8;
const MSG_VERDICT: u16 = (SUBSYS_QUEUE << 8) | 1;
const MSG_CONFIG: u16 = (SUBSYS_QUEUE << 8) | 2;

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
/// Attribute type bits that are flags, not part of the type.
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

const CMD_BIND: u8 = 1;
/// Only the metadata: the engine decides by time, never by content, so no payload is copied.
const COPY_META: u8 = 1;
/// When the queue is full the kernel lets packets through instead of dropping them: an overloaded
/// delay must never turn into loss the operator did not ask for.
const FLAG_FAIL_OPEN: u32 = 1;
const NF_ACCEPT: u32 = 1;

/// A queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The socket could not be opened, bound, written or read.
    #[error("netfilter queue {queue}: {what}: {source}")]
    Socket {
        /// The queue number.
        queue: u16,
        /// What was being done.
        what: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The kernel refused a configuration request.
    #[error(
        "netfilter queue {queue}: the kernel refused {what}: {source} (is the nfnetlink_queue module there, and is another program bound to the queue?)"
    )]
    Refused {
        /// The queue number.
        queue: u16,
        /// The refused request.
        what: &'static str,
        /// The error the kernel returned.
        source: io::Error,
    },
}

impl QueueError {
    /// Whether the socket's receive buffer overran (`ENOBUFS`): notifications were lost, the
    /// socket still works.
    pub fn is_overrun(&self) -> bool {
        const ENOBUFS: i32 = 105;
        matches!(self, Self::Socket { source, .. } if source.raw_os_error() == Some(ENOBUFS))
    }
}

/// A bound netfilter queue.
pub struct Queue {
    socket: Socket,
    number: u16,
    seq: u32,
}

impl Queue {
    /// Opens a netlink socket in the caller's network namespace, binds queue `number` and asks for
    /// packet metadata only, a long queue and fail-open behaviour.
    pub fn bind(number: u16, max_len: u32) -> Result<Self, QueueError> {
        let socket_err = |what| {
            move |source| QueueError::Socket {
                queue: number,
                what,
                source,
            }
        };
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(socket_err("opening"))?;
        socket.bind_auto().map_err(socket_err("binding"))?;
        // Packets arrive in bursts; a short buffer would lose notifications (ENOBUFS), and the
        // kernel caps the size at rmem_max anyway.
        let _ = socket.set_rx_buf_sz(8 << 20);
        let mut queue = Self {
            socket,
            number,
            seq: 0,
        };
        queue.configure("binding the queue", &bind_request(number, 1))?;
        queue.configure(
            "the copy mode, length and flags",
            &params_request(number, 2, max_len),
        )?;
        queue.seq = 2;
        Ok(queue)
    }

    fn configure(&self, what: &'static str, request: &[u8]) -> Result<(), QueueError> {
        let number = self.number;
        self.send(request, what)?;
        let mut buffer = Vec::with_capacity(8192);
        loop {
            buffer.clear();
            self.socket
                .recv(&mut buffer, 0)
                .map_err(|source| QueueError::Socket {
                    queue: number,
                    what,
                    source,
                })?;
            for message in Messages::new(&buffer) {
                if let Message::Ack(code) = message {
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(QueueError::Refused {
                            queue: number,
                            what,
                            source: io::Error::from_raw_os_error(-code),
                        })
                    };
                }
            }
        }
    }

    fn send(&self, message: &[u8], what: &'static str) -> Result<(), QueueError> {
        self.socket
            .send_to(message, &SocketAddr::new(0, 0), 0)
            .map(drop)
            .map_err(|source| QueueError::Socket {
                queue: self.number,
                what,
                source,
            })
    }

    /// Blocks until the kernel hands over packets; returns their ids in arrival order.
    pub fn receive(&self, buffer: &mut Vec<u8>) -> Result<Vec<u32>, QueueError> {
        buffer.clear();
        self.socket
            .recv(buffer, 0)
            .map_err(|source| QueueError::Socket {
                queue: self.number,
                what: "receiving packets",
                source,
            })?;
        Ok(Messages::new(buffer)
            .filter_map(|message| match message {
                Message::Packet(id) => Some(id),
                Message::Ack(_) | Message::Other => None,
            })
            .collect())
    }

    /// Lets packet `id` continue on its way.
    pub fn accept(&self, id: u32) -> Result<(), QueueError> {
        self.send(
            &verdict_request(self.number, id, NF_ACCEPT),
            "giving a verdict",
        )
    }
}

/// Appends a netlink header and the netfilter header; the length is patched by [`finish`].
fn header(kind: u16, flags: u16, seq: u32, queue: u16) -> Vec<u8> {
    let mut message = Vec::with_capacity(64);
    message.extend_from_slice(&0_u32.to_ne_bytes());
    message.extend_from_slice(&kind.to_ne_bytes());
    message.extend_from_slice(&flags.to_ne_bytes());
    message.extend_from_slice(&seq.to_ne_bytes());
    message.extend_from_slice(&0_u32.to_ne_bytes());
    // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, the queue number.
    message.extend_from_slice(&[0, 0]);
    message.extend_from_slice(&queue.to_be_bytes());
    message
}

fn attribute(message: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = (4 + payload.len()) as u16;
    message.extend_from_slice(&len.to_ne_bytes());
    message.extend_from_slice(&kind.to_ne_bytes());
    message.extend_from_slice(payload);
    message.resize(message.len().next_multiple_of(4), 0);
}

fn finish(mut message: Vec<u8>) -> Vec<u8> {
    let len = message.len() as u32;
    message[..4].copy_from_slice(&len.to_ne_bytes());
    message
}

fn bind_request(queue: u16, seq: u32) -> Vec<u8> {
    let mut message = header(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, queue);
    // nfqnl_msg_config_cmd: command, padding, protocol family (unused by BIND since Linux 3.8).
    attribute(&mut message, NFQA_CFG_CMD, &[CMD_BIND, 0, 0, 0]);
    finish(message)
}

fn params_request(queue: u16, seq: u32, max_len: u32) -> Vec<u8> {
    let mut message = header(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, queue);
    // nfqnl_msg_config_params (packed): copy range, copy mode.
    let mut params = 0_u32.to_be_bytes().to_vec();
    params.push(COPY_META);
    attribute(&mut message, NFQA_CFG_PARAMS, &params);
    attribute(&mut message, NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes());
    attribute(&mut message, NFQA_CFG_FLAGS, &FLAG_FAIL_OPEN.to_be_bytes());
    attribute(&mut message, NFQA_CFG_MASK, &FLAG_FAIL_OPEN.to_be_bytes());
    finish(message)
}

fn verdict_request(queue: u16, id: u32, verdict: u32) -> Vec<u8> {
    let mut message = header(MSG_VERDICT, NLM_F_REQUEST, 0, queue);
    let mut payload = verdict.to_be_bytes().to_vec();
    payload.extend_from_slice(&id.to_be_bytes());
    attribute(&mut message, NFQA_VERDICT_HDR, &payload);
    finish(message)
}

/// What the engine cares about in a message from the kernel.
#[derive(Debug, PartialEq, Eq)]
enum Message {
    /// A queued packet's id.
    Packet(u32),
    /// An acknowledgement: 0, or a negative errno.
    Ack(i32),
    Other,
}

/// The messages of one datagram; a truncated or malformed one ends the iteration.
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(datagram: &'a [u8]) -> Self {
        Self { rest: datagram }
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

impl Iterator for Messages<'_> {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        let len = u32_at(self.rest, 0)? as usize;
        if len < NLMSG_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let kind = u16_at(self.rest, 4)?;
        let body = &self.rest[NLMSG_HDRLEN..len];
        self.rest = self.rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some(match kind {
            NLMSG_ERROR => Message::Ack(u32_at(body, 0).map_or(-EPROTO, |c| c as i32)),
            MSG_PACKET => packet_id(body).map_or(Message::Other, Message::Packet),
            _ => Message::Other,
        })
    }
}

/// What a malformed acknowledgement is reported as.
const EPROTO: i32 = 71;

fn packet_id(body: &[u8]) -> Option<u32> {
    let mut attributes = body.get(NFGENMSG_LEN..)?;
    while attributes.len() >= 4 {
        let len = u16_at(attributes, 0)? as usize;
        let kind = u16_at(attributes, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > attributes.len() {
            return None;
        }
        if kind == NFQA_PACKET_HDR {
            let id = attributes.get(4..8)?;
            return Some(u32::from_be_bytes(id.try_into().ok()?));
        }
        attributes = attributes.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_names_the_queue_and_the_packet_in_network_byte_order() {
        let message = verdict_request(7, 0x0102_0304, NF_ACCEPT);
        assert_eq!(message.len(), 16 + 4 + 4 + 8);
        assert_eq!(u32_at(&message, 0), Some(32));
        assert_eq!(u16_at(&message, 4), Some(0x0301));
        assert_eq!(&message[18..20], &[0, 7]);
        assert_eq!(u16_at(&message, 20), Some(12));
        assert_eq!(u16_at(&message, 22), Some(NFQA_VERDICT_HDR));
        assert_eq!(&message[24..32], &[0, 0, 0, 1, 1, 2, 3, 4]);
    }

    #[test]
    fn configuration_pads_the_five_byte_parameters_and_asks_for_an_ack() {
        let message = params_request(0, 2, 4096);
        assert_eq!(u32_at(&message, 0), Some(message.len() as u32));
        assert_eq!(u16_at(&message, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        // The params attribute: length 9, padded to 12.
        assert_eq!(u16_at(&message, 20), Some(9));
        assert_eq!(&message[24..29], &[0, 0, 0, 0, COPY_META]);
        assert_eq!(u16_at(&message, 32), Some(8));
        assert_eq!(u16_at(&message, 34), Some(NFQA_CFG_QUEUE_MAXLEN));
        assert_eq!(&message[36..40], &4096_u32.to_be_bytes());
        let bind = bind_request(3, 1);
        assert_eq!(&bind[18..20], &[0, 3]);
        assert_eq!(&bind[24..28], &[CMD_BIND, 0, 0, 0]);
    }

    fn packet(id: u32) -> Vec<u8> {
        let mut message = header(MSG_PACKET, 0, 0, 0);
        // Another attribute first, with a net-byte-order flag, as the kernel may send.
        attribute(&mut message, 0x4000 | 9, &[1, 2, 3]);
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[0x08, 0x00, 3]);
        attribute(&mut message, NFQA_PACKET_HDR, &hdr);
        finish(message)
    }

    #[test]
    fn packets_and_acks_are_read_from_one_datagram() {
        let mut datagram = packet(41);
        datagram.extend(packet(42));
        let mut ack = header(NLMSG_ERROR, 0, 1, 0);
        ack.truncate(NLMSG_HDRLEN);
        ack.extend_from_slice(&(-1_i32).to_ne_bytes());
        datagram.extend(finish(ack));
        let messages: Vec<Message> = Messages::new(&datagram).collect();
        assert_eq!(
            messages,
            [Message::Packet(41), Message::Packet(42), Message::Ack(-1)]
        );
    }

    #[test]
    fn a_truncated_datagram_ends_without_a_panic() {
        let datagram = packet(5);
        for cut in 0..datagram.len() {
            let _: Vec<Message> = Messages::new(&datagram[..cut]).collect();
        }
        assert_eq!(packet_id(&[0, 0, 0, 0, 200, 0, 1, 0]), None);
    }
}
