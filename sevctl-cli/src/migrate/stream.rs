//! The migration stream, version 1: what `sevctl launch --migrate-to` and `sevctl receive`
//! say to each other. It carries the session, the packets with their headers, the save
//! areas and the guest's memory layout, and nothing else; everything secret in it is already
//! sealed by the source firmware for the target firmware.
//!
//! Both sides first send `MAGIC` and the version (u32). Then records, each
//! `u32 kind ‖ u32 length ‖ payload`, all integers little-endian:
//!
//! | kind | record | from | payload |
//! |---|---|---|---|
//! | 1 | PLATFORM | target | `u32 n ‖ PDH`, `u32 n ‖ PEK‖OCA‖CEK`, `u32 n ‖ ASK‖ARK` (n may be 0) |
//! | 2 | START | source | `u32 policy`, `u32 n ‖ source PDH`, `u32 n ‖ session` |
//! | 3 | LAYOUT | source | `u32 vcpus` (save areas to come), `u32 slots`, slots × (`u64 gpa`, `u64 size`), `u64 gpa`, `u32 len` of the secret area (len 0: none) |
//! | 4 | PAGES | source | `u64 gpa`, `u32 n` (1..=256), n × 52-byte packet header, n × 4096 transport bytes |
//! | 5 | VMSA | source | `u32 vcpu`, 52-byte header, 4096 transport bytes |
//! | 6 | END | source | `u64 pages`, `u32 save areas`, 32-byte tally |
//! | 7 | READY | target | none: all checked, waiting for the commit |
//! | 8 | COMMIT | source | none: the source has SEND_FINISHed |
//! | 9 | RUNNING | target | none: RECEIVE_FINISH done |
//! | 10 | ABORT | either | UTF-8 reason; the sender closes |
//!
//! END's tally is the sum, modulo 2^256 (little-endian), of the SHA-256 of each START,
//! LAYOUT, PAGES and VMSA record as framed, less its transport bytes (which each packet's MAC
//! covers). A sum does not depend on order: pages may come in any order, as the firmware
//! takes them. It catches a corrupted or dropped record; it is not authentication: a host
//! that rewrites the stream can rewrite END too, and as on real firmware nothing stops it
//! from replaying a packet within the session (the firmware's MAC stops it from forging one).

use std::io::{self, Read, Write};

use sevd::crypto::{Digest, Sha256};

/// The stream's first bytes.
pub const MAGIC: [u8; 8] = *b"SEVMIGR\0";
/// This version.
pub const VERSION: u32 = 1;
/// Pages in one PAGES record at most (the node's run).
pub const RUN_MAX: u32 = uapi::kvm::SEVD_PAGES_MAX;
/// A packet header.
pub const HDR: usize = 52;
/// A page.
pub const PAGE: usize = 4096;
/// The longest reason an ABORT carries.
const ABORT_MAX: usize = 4096;
/// Memory slots a layout may name.
const SLOTS_MAX: u32 = 16;

/// A failure of the stream itself.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The peer sent nothing for the timeout.
    #[error("no answer from the peer within {0} s")]
    Timeout(u64),
    /// The connection ended.
    #[error("the peer closed the connection")]
    Closed,
    /// Reading or writing failed.
    #[error("{0}")]
    Io(io::Error),
    /// The bytes are not a record of this format.
    #[error("corrupt migration stream: {0}")]
    Malformed(String),
    /// The peer gave up, saying why.
    #[error("the peer aborted: {0}")]
    Aborted(String),
}

fn malformed(msg: impl Into<String>) -> StreamError {
    StreamError::Malformed(msg.into())
}

/// The guest's memory layout.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// SEV-ES save areas that follow (0 for SEV).
    pub vcpus: u32,
    /// Memory slots: guest address and size, in slot order.
    pub slots: Vec<(u64, u64)>,
    /// The secret area, (guest address, length), if secrets were injected.
    pub secret: Option<(u64, u32)>,
}

/// A run of pages: `n` headers, then `n` pages of transport bytes, in one buffer (from
/// `at`: a run read off the stream keeps the record's leading fields before it).
#[derive(Debug, Clone)]
pub struct PageRun {
    /// The first page's guest address.
    pub gpa: u64,
    buf: Vec<u8>,
    at: usize,
}

impl PartialEq for PageRun {
    fn eq(&self, other: &PageRun) -> bool {
        self.gpa == other.gpa && self.buf[self.at..] == other.buf[other.at..]
    }
}

impl Eq for PageRun {}

impl PageRun {
    /// A run of `n` pages from `gpa`, zeroed, to be filled by SEND_PAGES.
    pub fn new(gpa: u64, n: u32) -> PageRun {
        PageRun::in_buffer(Vec::new(), gpa, n)
    }

    /// The same in `buf`, a buffer of an earlier run: a migration reuses a few buffers
    /// rather than fault fresh memory in for every run.
    pub fn in_buffer(mut buf: Vec<u8>, gpa: u64, n: u32) -> PageRun {
        // Every byte is written before it is read: the old ones need no clearing.
        buf.resize(n as usize * (HDR + PAGE), 0);
        PageRun { gpa, buf, at: 0 }
    }

    /// Its buffer, for another run.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Its pages.
    pub fn pages(&self) -> u32 {
        ((self.buf.len() - self.at) / (HDR + PAGE)) as u32
    }

    /// The headers and the transport bytes.
    pub fn parts(&self) -> (&[u8], &[u8]) {
        self.buf[self.at..].split_at(self.pages() as usize * HDR)
    }

    /// The same, to fill.
    pub fn parts_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        let n = self.pages() as usize;
        self.buf[self.at..].split_at_mut(n * HDR)
    }
}

/// A record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The target's certificates.
    Platform {
        /// PDH.
        pdh: Vec<u8>,
        /// PEK ‖ OCA ‖ CEK.
        plat_certs: Vec<u8>,
        /// ASK ‖ ARK, or empty.
        amd_certs: Vec<u8>,
    },
    /// SEND_START's outcome.
    Start {
        /// The guest's policy.
        policy: u32,
        /// The source's PDH.
        pdh: Vec<u8>,
        /// The session.
        session: Vec<u8>,
    },
    /// The memory layout.
    Layout(Layout),
    /// Packets of consecutive pages.
    Pages(PageRun),
    /// A save area's packet.
    Vmsa {
        /// The vCPU.
        vcpu: u32,
        /// Its header.
        header: Vec<u8>,
        /// Its transport bytes.
        trans: Vec<u8>,
    },
    /// The count and tally of what was sent.
    End {
        /// Pages sent.
        pages: u64,
        /// Save areas sent.
        vmsas: u32,
        /// The tally.
        tally: [u8; 32],
    },
    /// The target has checked everything.
    Ready,
    /// The source has finished.
    Commit,
    /// The guest runs on the target.
    Running,
    /// A side gives up.
    Abort(String),
}

impl Record {
    fn kind(&self) -> u32 {
        match self {
            Record::Platform { .. } => 1,
            Record::Start { .. } => 2,
            Record::Layout(_) => 3,
            Record::Pages(_) => 4,
            Record::Vmsa { .. } => 5,
            Record::End { .. } => 6,
            Record::Ready => 7,
            Record::Commit => 8,
            Record::Running => 9,
            Record::Abort(_) => 10,
        }
    }

    /// Its name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Record::Platform { .. } => "PLATFORM",
            Record::Start { .. } => "START",
            Record::Layout(_) => "LAYOUT",
            Record::Pages(_) => "PAGES",
            Record::Vmsa { .. } => "VMSA",
            Record::End { .. } => "END",
            Record::Ready => "READY",
            Record::Commit => "COMMIT",
            Record::Running => "RUNNING",
            Record::Abort(_) => "ABORT",
        }
    }

    /// The payload, split where the transport bytes begin (they follow everything else).
    fn payload(&self) -> (Vec<u8>, &[u8]) {
        let mut p = vec![];
        let blob = |p: &mut Vec<u8>, b: &[u8]| {
            p.extend_from_slice(&(b.len() as u32).to_le_bytes());
            p.extend_from_slice(b);
        };
        match self {
            Record::Platform {
                pdh,
                plat_certs,
                amd_certs,
            } => {
                for b in [pdh, plat_certs, amd_certs] {
                    blob(&mut p, b);
                }
            }
            Record::Start {
                policy,
                pdh,
                session,
            } => {
                p.extend_from_slice(&policy.to_le_bytes());
                blob(&mut p, pdh);
                blob(&mut p, session);
            }
            Record::Layout(l) => {
                p.extend_from_slice(&l.vcpus.to_le_bytes());
                p.extend_from_slice(&(l.slots.len() as u32).to_le_bytes());
                for (gpa, size) in &l.slots {
                    p.extend_from_slice(&gpa.to_le_bytes());
                    p.extend_from_slice(&size.to_le_bytes());
                }
                let (gpa, len) = l.secret.unwrap_or((0, 0));
                p.extend_from_slice(&gpa.to_le_bytes());
                p.extend_from_slice(&len.to_le_bytes());
            }
            Record::Pages(run) => {
                p.extend_from_slice(&run.gpa.to_le_bytes());
                p.extend_from_slice(&run.pages().to_le_bytes());
                let (headers, trans) = run.parts();
                p.extend_from_slice(headers);
                return (p, trans);
            }
            Record::Vmsa {
                vcpu,
                header,
                trans,
            } => {
                p.extend_from_slice(&vcpu.to_le_bytes());
                p.extend_from_slice(header);
                return (p, trans);
            }
            Record::End {
                pages,
                vmsas,
                tally,
            } => {
                p.extend_from_slice(&pages.to_le_bytes());
                p.extend_from_slice(&vmsas.to_le_bytes());
                p.extend_from_slice(tally);
            }
            Record::Ready | Record::Commit | Record::Running => {}
            Record::Abort(why) => p.extend_from_slice(fit_reason(why).as_bytes()),
        }
        (p, &[])
    }

    /// Writes the record; returns the SHA-256 of its framing and payload less the transport
    /// bytes (its share of END's tally).
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<[u8; 32]> {
        let (head, trans) = self.payload();
        let mut frame = Vec::with_capacity(8 + head.len());
        frame.extend_from_slice(&self.kind().to_le_bytes());
        frame.extend_from_slice(&((head.len() + trans.len()) as u32).to_le_bytes());
        frame.extend_from_slice(&head);
        w.write_all(&frame)?;
        w.write_all(trans)?;
        Ok(Sha256::digest(&frame).into())
    }

    /// Reads one record and its share of the tally. A clean end of stream before a record is
    /// [`StreamError::Closed`].
    pub fn read_from(r: &mut impl Read) -> Result<(Record, [u8; 32]), StreamError> {
        Record::read_into(r, Vec::new())
    }

    /// The same, reading the payload into `spare` (a PAGES record keeps it as its run's).
    pub fn read_into(
        r: &mut impl Read,
        mut spare: Vec<u8>,
    ) -> Result<(Record, [u8; 32]), StreamError> {
        let mut head = [0u8; 8];
        read_exact(r, &mut head, true)?;
        let kind = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let max = match kind {
            1 => 64 << 10,
            2 => 16 << 10,
            3 => 32 + 16 * SLOTS_MAX as usize,
            4 => 12 + RUN_MAX as usize * (HDR + PAGE),
            5 => 4 + HDR + PAGE,
            6 => 44,
            7..=9 => 0,
            10 => ABORT_MAX,
            _ => return Err(malformed(format!("unknown record kind {kind}"))),
        };
        if len > max {
            return Err(malformed(format!(
                "a record of kind {kind} of {len} bytes (at most {max})"
            )));
        }
        // Read over whatever the spare buffer held.
        spare.resize(len, 0);
        let mut payload = spare;
        read_exact(r, &mut payload, false)?;
        // The tally covers the bytes as they arrived, less the transport bytes at the end.
        let kept = match kind {
            4 => payload
                .get(8..12)
                .map(|n| 12 + u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize * HDR),
            5 => Some(4 + HDR),
            _ => None,
        };
        let mut sha = Sha256::new();
        sha.update(head);
        sha.update(&payload[..kept.unwrap_or(len).min(len)]);
        let digest = sha.finalize().into();
        Ok((parse(kind, payload)?, digest))
    }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], at_boundary: bool) -> Result<(), StreamError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 && at_boundary => return Err(StreamError::Closed),
            Ok(0) => return Err(malformed("the stream ends inside a record")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StreamError::Io(e)),
        }
    }
    Ok(())
}

/// Reads fields off a payload.
struct Fields {
    p: Vec<u8>,
    at: usize,
}

impl Fields {
    fn take(&mut self, n: usize) -> Result<&[u8], StreamError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.p.len());
        let end = end.ok_or_else(|| malformed("a record shorter than its fields"))?;
        let s = &self.p[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, StreamError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self) -> Result<u64, StreamError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn blob(&mut self) -> Result<Vec<u8>, StreamError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn done(self, what: &str) -> Result<(), StreamError> {
        if self.at == self.p.len() {
            Ok(())
        } else {
            Err(malformed(format!(
                "{what} has {} bytes too many",
                self.p.len() - self.at
            )))
        }
    }
}

fn parse(kind: u32, p: Vec<u8>) -> Result<Record, StreamError> {
    if kind == 4 {
        // PAGES keeps its buffer: headers ‖ transport bytes after the 12 leading bytes.
        let mut f = Fields { p, at: 0 };
        let gpa = f.u64()?;
        let n = f.u32()?;
        if n == 0 || n > RUN_MAX || f.p.len() != 12 + n as usize * (HDR + PAGE) {
            return Err(malformed(format!(
                "a PAGES record of {n} pages in {} bytes",
                f.p.len()
            )));
        }
        if gpa % PAGE as u64 != 0 {
            return Err(malformed(format!("a PAGES record at unaligned {gpa:#x}")));
        }
        return Ok(Record::Pages(PageRun {
            gpa,
            buf: f.p,
            at: 12,
        }));
    }
    let mut f = Fields { p, at: 0 };
    let record = match kind {
        1 => Record::Platform {
            pdh: f.blob()?,
            plat_certs: f.blob()?,
            amd_certs: f.blob()?,
        },
        2 => Record::Start {
            policy: f.u32()?,
            pdh: f.blob()?,
            session: f.blob()?,
        },
        3 => {
            let vcpus = f.u32()?;
            let n = f.u32()?;
            if n > SLOTS_MAX {
                return Err(malformed(format!("a layout of {n} memory slots")));
            }
            let mut slots = vec![];
            for _ in 0..n {
                slots.push((f.u64()?, f.u64()?));
            }
            let (gpa, len) = (f.u64()?, f.u32()?);
            Record::Layout(Layout {
                vcpus,
                slots,
                secret: (len != 0).then_some((gpa, len)),
            })
        }
        5 => Record::Vmsa {
            vcpu: f.u32()?,
            header: f.take(HDR)?.to_vec(),
            trans: f.take(PAGE)?.to_vec(),
        },
        6 => Record::End {
            pages: f.u64()?,
            vmsas: f.u32()?,
            tally: f.take(32)?.try_into().unwrap_or_default(),
        },
        7 => Record::Ready,
        8 => Record::Commit,
        9 => Record::Running,
        10 => Record::Abort(fit_reason(&String::from_utf8_lossy(&f.p)).to_string()),
        _ => return Err(malformed(format!("unknown record kind {kind}"))),
    };
    if kind != 10 {
        f.done(record.name())?;
    }
    Ok(record)
}

/// A reason as an ABORT carries it: at most `ABORT_MAX` bytes, cut at a character's end
/// (bytes that are not UTF-8 arrive as U+FFFD, which may lengthen them).
fn fit_reason(why: &str) -> &str {
    let mut end = why.len().min(ABORT_MAX);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    &why[..end]
}

/// The hello both sides send first.
pub fn write_hello(w: &mut impl Write) -> io::Result<()> {
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&VERSION.to_le_bytes());
    w.write_all(&hello)
}

/// Reads the peer's hello: a different magic is not this stream, a different version is
/// refused by name.
pub fn read_hello(r: &mut impl Read) -> Result<(), StreamError> {
    let mut hello = [0u8; 12];
    read_exact(r, &mut hello, true)?;
    if hello[..8] != MAGIC {
        return Err(malformed(
            "the peer does not speak sevctl's migration stream",
        ));
    }
    let version = u32::from_le_bytes([hello[8], hello[9], hello[10], hello[11]]);
    if version != VERSION {
        return Err(malformed(format!(
            "the peer speaks migration stream version {version}; this sevctl speaks {VERSION}"
        )));
    }
    Ok(())
}

/// What the source sent, as END states it: pages, save areas and the tally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Pages.
    pub pages: u64,
    /// Save areas.
    pub vmsas: u32,
    /// The sum of the records' digests.
    pub sum: [u8; 32],
}

impl Tally {
    /// Counts `record` with its digest.
    pub fn add(&mut self, record: &Record, digest: &[u8; 32]) {
        match record {
            Record::Pages(run) => self.pages += run.pages() as u64,
            Record::Vmsa { .. } => self.vmsas += 1,
            _ => {}
        }
        let mut carry = 0u16;
        for (s, d) in self.sum.iter_mut().zip(digest) {
            let v = *s as u16 + *d as u16 + carry;
            *s = v as u8;
            carry = v >> 8;
        }
    }

    /// The END record that states it.
    pub fn end(&self) -> Record {
        Record::End {
            pages: self.pages,
            vmsas: self.vmsas,
            tally: self.sum,
        }
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
