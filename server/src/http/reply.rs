//! A decided response and the one encoder that turns it into sends.
//!
//! `answer::decide` builds a [`Reply`]: its head already encoded in [`Scratch::out`], its
//! status and connection fate stated, and where its body comes from. [`Progress`] is the
//! encoder: from a reply and how much of it has gone out, it gives the next [`Step`], either
//! one gathered send of what is in memory (the head, and a small body with it, incident 004)
//! or a `sendfile` of a file range. It does no I/O itself, so the blocking `respond::Sender`
//! runs the steps to the end with its deadlines, and an event loop can run the same steps a
//! writable event at a time: a partial write is an [`Progress::advance`] by what was taken.

use std::fs::File;
use std::io::IoSlice;
use std::rc::Rc;

use super::respond::Persist;

/// The buffers a request is answered in, kept by the connection so that a typical request
/// allocates nothing: sized up front, reused by every request.
#[derive(Default)]
pub(super) struct Scratch {
    /// The response head, encoded.
    pub(super) out: Vec<u8>,
    /// A small file's body, read whole ([`Payload::Buffered`]).
    pub(super) file: Vec<u8>,
    /// The resolved path, NUL-terminated.
    pub(super) path: Vec<u8>,
    /// The access-log line.
    pub(super) line: Vec<u8>,
    /// The served file's path from the root, as header rules match it (`/a/b.html`).
    pub(super) rule_path: Vec<u8>,
    /// The numbers of the header rules that matched it.
    pub(super) matches: Vec<usize>,
    /// The media types met so far, by extension.
    pub(super) types: super::mime::Types,
    /// The last `Last-Modified` value.
    pub(super) modified: super::clock::Modified,
}

/// The most a worker's scratch keeps between replies: room for the largest file read whole,
/// at whatever capacity a `Vec` grows to on the way there (it doubles), so that ordinary
/// replies never shed and pay for a `malloc_trim`.
const KEEP: usize = 2 * super::answer::SMALL_FILE as usize;

impl Scratch {
    /// Gives back what an unusual reply grew the buffers to (a directory listing of thousands
    /// of names), so that a worker holds what ordinary replies need rather than its largest
    /// ever: one large answer would otherwise stay in the worker's RSS for its life. Called
    /// once a reply is sent, or its unsent part detached.
    pub(super) fn shed(&mut self) {
        let mut shed = false;
        for v in [&mut self.out, &mut self.file] {
            if v.capacity() > KEEP {
                *v = Vec::new();
                shed = true;
            }
        }
        if shed {
            forkd_daemon::fork::trim_heap();
        }
    }
}

/// One response, decided: nothing of it has been sent. The head is in [`Scratch::out`].
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    /// What the head says of the connection: after a `Close` the driver ends it.
    pub(super) persist: Persist,
    pub(super) payload: Payload,
}

/// Where the body comes from.
#[derive(Debug)]
pub(super) enum Payload {
    /// No body: HEAD, 304, OPTIONS (the head may still state a length).
    None,
    /// Bytes compiled into the binary: an embedded asset or part of it, an error's text.
    Static(&'static [u8]),
    /// The first `n` bytes of [`Scratch::file`]: a small file read whole, so it leaves with
    /// its head in one send.
    Buffered(usize),
    /// The bytes `range` of a small file the file cache holds, sent from there.
    Shared {
        body: Rc<[u8]>,
        range: std::ops::Range<usize>,
    },
    /// `len` bytes of `file` from `offset`, sent by `sendfile` straight from the page cache,
    /// with an explicit offset, so a descriptor the file cache shares moves no file position.
    /// The file is closed when the reply is dropped, unless the cache still holds it.
    File {
        file: Rc<File>,
        offset: u64,
        len: u64,
    },
}

impl Reply {
    /// The body's length in bytes, as the access log counts it (0 for HEAD).
    pub(super) fn body_len(&self) -> u64 {
        match &self.payload {
            Payload::None => 0,
            Payload::Static(b) => b.len() as u64,
            Payload::Buffered(n) => *n as u64,
            Payload::Shared { range, .. } => range.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }

    /// The body held in memory, which goes out gathered with the head; empty for a file.
    fn in_memory<'a>(&'a self, s: &'a Scratch) -> &'a [u8] {
        match &self.payload {
            Payload::Static(b) => b,
            // `decide` never states more than it read into the buffer, or than the file holds.
            Payload::Buffered(n) => s.file.get(..*n).unwrap_or_default(),
            Payload::Shared { body, range } => body.get(range.clone()).unwrap_or_default(),
            Payload::None | Payload::File { .. } => &[],
        }
    }
}

/// What to do next to send a reply.
#[derive(Debug)]
pub(super) enum Step<'a> {
    /// Send these bytes in one gathered call (`sendmsg`). With `more`, file data follows, so
    /// the kernel may hold a partial segment for it (`MSG_MORE`).
    Gather {
        bufs: [IoSlice<'a>; 2],
        more: bool,
    },
    /// Send `len` bytes of `file` from `offset` (`sendfile`; it may take fewer).
    File {
        file: &'a File,
        offset: u64,
        len: u64,
    },
    Done,
}

/// How much of a reply has gone out: the state a partial write resumes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Progress {
    /// Bytes of the gathered run (the head and a body in memory) sent, of `gathered_len`.
    gathered: usize,
    gathered_len: usize,
    /// Bytes of a file body sent, of `file_len`.
    file: u64,
    file_len: u64,
}

impl Progress {
    /// Nothing of `reply` sent yet.
    pub(super) fn new(reply: &Reply, s: &Scratch) -> Progress {
        Progress {
            gathered: 0,
            gathered_len: s.out.len() + reply.in_memory(s).len(),
            file: 0,
            file_len: match reply.payload {
                Payload::File { len, .. } => len,
                _ => 0,
            },
        }
    }

    /// The bytes of the gathered run, head and body in memory.
    pub(super) fn gathered_len(&self) -> u64 {
        self.gathered_len as u64
    }

    /// The bytes of a file body.
    pub(super) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The next step, from what is left.
    pub(super) fn step<'a>(&self, reply: &'a Reply, s: &'a Scratch) -> Step<'a> {
        if self.gathered < self.gathered_len {
            let head = s.out.as_slice();
            let body = reply.in_memory(s);
            let (head, body) = match self.gathered.checked_sub(head.len()) {
                None => (head.get(self.gathered..).unwrap_or_default(), body),
                Some(in_body) => (&[][..], body.get(in_body..).unwrap_or_default()),
            };
            return Step::Gather {
                bufs: [IoSlice::new(head), IoSlice::new(body)],
                more: self.file_len > 0,
            };
        }
        match &reply.payload {
            Payload::File { file, offset, .. } if self.file < self.file_len => Step::File {
                file,
                offset: offset.saturating_add(self.file),
                len: self.file_len - self.file,
            },
            _ => Step::Done,
        }
    }

    /// Accounts for `n` bytes taken by the kernel in the last step.
    pub(super) fn advance(&mut self, n: u64) {
        if self.gathered < self.gathered_len {
            let left = self.gathered_len - self.gathered;
            self.gathered += usize::try_from(n).unwrap_or(left).min(left);
        } else {
            self.file = self.file.saturating_add(n).min(self.file_len);
        }
    }

    /// Whether the gathered run has gone out whole.
    pub(super) fn gathered_done(&self) -> bool {
        self.gathered == self.gathered_len
    }

    pub(super) fn is_done(&self) -> bool {
        self.gathered_done() && self.file == self.file_len
    }

    /// What is left of `reply` to send, detached from the buffers `s` it was encoded in (an
    /// event worker's, shared by all its connections): the unsent part of the gathered run,
    /// copied, and the reply with its file (if any) moved on past what went out. A fresh
    /// `Progress` over a `Scratch` whose `out` holds the copy sends the same bytes this one
    /// would have.
    pub(super) fn detach(&self, reply: Reply, s: &Scratch) -> (Vec<u8>, Reply) {
        let mut rest = Vec::new();
        if let Step::Gather { bufs, .. } = self.step(&reply, s) {
            rest.reserve_exact(bufs.iter().map(|b| b.len()).sum());
            for b in &bufs {
                rest.extend_from_slice(b);
            }
        }
        let payload = match reply.payload {
            Payload::File { file, offset, len } if self.file < len => Payload::File {
                file,
                offset: offset.saturating_add(self.file),
                len: len - self.file,
            },
            _ => Payload::None,
        };
        let rest_reply = Reply {
            status: reply.status,
            persist: reply.persist,
            payload,
        };
        (rest, rest_reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scratch(head: &[u8]) -> Scratch {
        Scratch {
            out: head.to_vec(),
            ..Scratch::default()
        }
    }

    /// The bytes of a gathered step, joined.
    fn gathered(step: &Step<'_>) -> Vec<u8> {
        match step {
            Step::Gather { bufs, .. } => bufs.iter().flat_map(|b| b.to_vec()).collect(),
            other => panic!("not a gathered step: {other:?}"),
        }
    }

    #[test]
    fn head_and_memory_body_resume_after_partial_sends() {
        let shared = Payload::Shared {
            body: Rc::from(&b"a body!"[..]),
            range: 2..6,
        };
        for payload in [Payload::Static(b"body"), Payload::Buffered(4), shared] {
            let mut s = scratch(b"HEAD");
            s.file = b"body and more".to_vec();
            let reply = Reply {
                status: 200,
                persist: Persist::KeepAlive,
                payload,
            };
            assert_eq!(reply.body_len(), 4);
            let mut p = Progress::new(&reply, &s);
            assert_eq!(p.gathered_len(), 8);
            let mut seen = Vec::new();
            // Taken a few bytes at a time, across the head's end: the same bytes, once each.
            for n in [3, 2, 1, 2] {
                let step = p.step(&reply, &s);
                assert!(matches!(step, Step::Gather { more: false, .. }));
                seen.extend_from_slice(&gathered(&step)[..n]);
                p.advance(n as u64);
            }
            assert_eq!(seen, b"HEADbody");
            assert!(p.is_done());
            assert!(matches!(p.step(&reply, &s), Step::Done));
        }
    }

    /// The bytes a reply's steps give from `p` on, a file body read from the file.
    fn all_bytes(mut p: Progress, reply: &Reply, s: &Scratch) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut out = Vec::new();
        loop {
            match p.step(reply, s) {
                Step::Done => return out,
                step @ Step::Gather { .. } => {
                    let b = gathered(&step);
                    p.advance(b.len() as u64);
                    out.extend(b);
                }
                Step::File { file, offset, len } => {
                    let mut b = vec![0; len as usize];
                    file.read_exact_at(&mut b, offset).unwrap();
                    p.advance(len);
                    out.extend(b);
                }
            }
        }
    }

    #[test]
    fn a_detached_remainder_sends_the_same_bytes() {
        let content: Vec<u8> = (0..100u8).collect();
        let make = || {
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(&content).unwrap();
            Reply {
                status: 200,
                persist: Persist::KeepAlive,
                payload: Payload::File {
                    file: file.into(),
                    offset: 10,
                    len: 50,
                },
            }
        };
        let mut s = scratch(b"HEAD");
        s.file = b"unused".to_vec();
        let whole = all_bytes(Progress::new(&make(), &s), &make(), &s);
        assert_eq!(&whole[..4], b"HEAD");
        assert_eq!(&whole[4..], &content[10..60]);
        // Cut after every possible count of bytes, in the head and in the file.
        for cut in 0..=whole.len() as u64 {
            let reply = make();
            let mut p = Progress::new(&reply, &s);
            let mut taken = 0;
            while taken < cut {
                let n = match p.step(&reply, &s) {
                    Step::Gather { bufs, .. } => bufs.iter().map(|b| b.len() as u64).sum(),
                    Step::File { len, .. } => len,
                    Step::Done => break,
                }
                .min(cut - taken);
                p.advance(n);
                taken += n;
            }
            let (rest, reply) = p.detach(reply, &s);
            let s2 = scratch(&rest);
            let tail = all_bytes(Progress::new(&reply, &s2), &reply, &s2);
            assert_eq!(tail, &whole[cut as usize..], "cut at {cut}");
            assert_eq!((reply.status, reply.persist), (200, Persist::KeepAlive));
        }
        // A body in memory is copied out with the rest of the head.
        let s = Scratch {
            out: b"HEAD".to_vec(),
            file: b"body".to_vec(),
            ..Scratch::default()
        };
        let reply = Reply {
            status: 200,
            persist: Persist::Close,
            payload: Payload::Buffered(4),
        };
        let mut p = Progress::new(&reply, &s);
        p.advance(2);
        let (rest, reply) = p.detach(reply, &s);
        assert_eq!(rest, b"ADbody");
        assert!(matches!(reply.payload, Payload::None));
    }

    #[test]
    fn no_body_is_one_step() {
        let s = scratch(b"HTTP/1.1 304 Not Modified\r\n\r\n");
        let reply = Reply {
            status: 304,
            persist: Persist::Close,
            payload: Payload::None,
        };
        let mut p = Progress::new(&reply, &s);
        assert_eq!(gathered(&p.step(&reply, &s)), s.out);
        p.advance(s.out.len() as u64);
        assert!(p.is_done());
        assert_eq!(reply.body_len(), 0);
    }

    #[test]
    fn file_follows_its_head_and_resumes_at_the_offset_reached() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[0; 100]).unwrap();
        let s = scratch(b"HEAD");
        let reply = Reply {
            status: 206,
            persist: Persist::KeepAlive,
            payload: Payload::File {
                file: Rc::new(file),
                offset: 10,
                len: 50,
            },
        };
        assert_eq!(reply.body_len(), 50);
        let mut p = Progress::new(&reply, &s);
        assert_eq!((p.gathered_len(), p.file_len()), (4, 50));
        // The head alone, flagged so it may share a segment with the file's first bytes.
        let step = p.step(&reply, &s);
        assert!(matches!(step, Step::Gather { more: true, .. }));
        assert_eq!(gathered(&step), b"HEAD");
        p.advance(4);
        assert!(p.gathered_done());
        match p.step(&reply, &s) {
            Step::File { offset, len, .. } => assert_eq!((offset, len), (10, 50)),
            other => panic!("{other:?}"),
        }
        p.advance(20);
        match p.step(&reply, &s) {
            Step::File { offset, len, .. } => assert_eq!((offset, len), (30, 30)),
            other => panic!("{other:?}"),
        }
        p.advance(30);
        assert!(p.is_done());
        assert!(matches!(p.step(&reply, &s), Step::Done));
    }
}
