//! The HTTP application: a strict HTTP/1.1 static-file origin server for one accepted
//! connection at a time.
//!
//! It knows nothing of processes: the template in `daemon` lends [`Site::serve`] a connected
//! socket inside a child process (and closes it after), and this module answers requests on
//! it until the connection ends. One file per concern, as in hyper's `proto/h1`: `parse`
//! reads a request head and its framing, `chunked` walks a chunked body, `path` turns a
//! request target into a safe relative path (the one security-critical pure function), `open`
//! opens that path beneath the docroot race-free, `cache` keeps what those opens found for a
//! second, `site` holds the embedded demo blog, `conditional` and `range` weigh
//! preconditions and ranges, `encoding` picks a precompressed sibling by `Accept-Encoding`,
//! `mime` names media types, `log` formats the access log and `clock` caches the date.
//!
//! Deciding is not sending. `answer::decide` turns a request and what the docroot holds into
//! a `reply::Reply` (status, head, where the body comes from) without touching the socket;
//! `reply::Progress` is the one encoder that turns a reply into gathered sends and
//! `sendfile`s and resumes after a partial write; `respond` builds heads and its `Sender` runs
//! those steps on a blocking socket with deadlines; `conn` is one blocking connection's life.
//! `event` is the other driver: the same exchange as a state machine that an event worker
//! (`forkd_daemon::reactor`) drives, reusing `decide`, the encoder, `body` and `log` as they
//! are; [`Site`] implements both (`Service::serve` through `conn`, `EventService` through
//! `event`).

mod answer;
mod body;
mod cache;
pub mod chunked;
mod clock;
pub mod conditional;
mod conn;
pub mod encoding;
mod event;
mod listing;
mod log;
pub mod mime;
mod open;
pub mod parse;
pub mod path;
mod pressure;
pub mod range;
mod reply;
mod respond;
pub mod rules;
mod site;
mod test_hooks;
pub mod vhost;

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

pub use cache::Limits as FileCacheLimits;
pub use log::AccessLog;
pub use respond::busy_response;

use forkd_daemon::scoreboard::{self, Counter};

/// The limits the HTTP side counts on the daemon's scoreboard (incident 003: every limit hit
/// visible from outside). The order is that of [`COUNTERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hit {
    HeaderTimeout,
    KeepaliveTimeout,
    SendTimeout,
    BadRequest,
    UriTooLong,
    HeaderTooLarge,
    BodyTooLarge,
    UnsupportedCoding,
    VersionUnsupported,
    ExpectationFailed,
    PathRefused,
    AccessLogFailed,
    KeepaliveYielded,
    UnknownHost,
    AutoindexTruncated,
    ErrorPageMissing,
    BodyTimeout,
}

/// Names and meanings of the counters the HTTP side keeps on the scoreboard, in the order of
/// its internal `Hit` enum.
pub static COUNTERS: [Counter; 17] = [
    Counter {
        name: "header_timeout",
        help: "connections cut because a request head did not arrive in time (slowloris)",
    },
    Counter {
        name: "keepalive_timeout",
        help: "idle keep-alive connections closed",
    },
    Counter {
        name: "send_timeout",
        help: "responses cut because the client read too slowly",
    },
    Counter {
        name: "bad_request",
        help: "requests refused as malformed or ambiguous (400)",
    },
    Counter {
        name: "uri_too_long",
        help: "request targets over --max-uri-bytes (414)",
    },
    Counter {
        name: "header_too_large",
        help: "request heads over --max-header-bytes (431)",
    },
    Counter {
        name: "body_too_large",
        help: "request bodies over --max-body-bytes (413)",
    },
    Counter {
        name: "unsupported_coding",
        help: "transfer codings not supported (501)",
    },
    Counter {
        name: "version_unsupported",
        help: "HTTP versions other than 1.x (505)",
    },
    Counter {
        name: "expectation_failed",
        help: "Expect headers other than 100-continue (417)",
    },
    Counter {
        name: "path_refused",
        help: "paths refused as hidden: dot segments, dot-files, encoded separators",
    },
    Counter {
        name: "access_log_failed",
        help: "access-log lines lost to a failing write (disk full, file size limit)",
    },
    Counter {
        name: "keepalive_yielded",
        help: "keep-alive connections ended after a response so that clients queued behind a full prefork pool get their turn",
    },
    Counter {
        name: "unknown_host",
        help: "requests for a host no virtual host names (served from the default root, or 421/404 as unknown-host says)",
    },
    Counter {
        name: "autoindex_truncated",
        help: "directory listings cut at autoindex-max-entries entries",
    },
    Counter {
        name: "error_page_missing",
        help: "configured error pages that could not be served (the built-in text went instead)",
    },
    Counter {
        name: "body_timeout",
        help: "connections cut because a request body being dropped stalled or came too slowly",
    },
];

/// Counts one hit (a relaxed atomic add in shared memory; nothing when no board is mapped).
pub(crate) fn hit(h: Hit) {
    scoreboard::app_hit(h as usize);
}

impl Hit {
    /// Same as [`hit`], for call sites that read better with a method.
    pub(crate) fn count(self) {
        hit(self)
    }

    /// The counter of a request refused with `status` (408 is a head that did not come in
    /// time, whatever its cause).
    pub(crate) fn of_refusal(status: u16) -> Hit {
        match status {
            408 => Hit::HeaderTimeout,
            413 => Hit::BodyTooLarge,
            414 => Hit::UriTooLong,
            417 => Hit::ExpectationFailed,
            431 => Hit::HeaderTooLarge,
            501 => Hit::UnsupportedCoding,
            505 => Hit::VersionUnsupported,
            _ => Hit::BadRequest,
        }
    }
}

/// Everything that shapes how requests are answered. Every limit has a sane default; the
/// daemon's configuration maps its flags onto these fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// The files served for a directory request, tried in order: the first that exists is
    /// served (each a single file name, not a path).
    pub index: Vec<String>,
    /// A directory with none of the index files is answered with a listing of its entries
    /// (`listing`) instead of 404.
    pub autoindex: bool,
    /// The most entries a listing reads; a directory with more is listed up to here, with a
    /// line saying it was cut (counted as `autoindex_truncated`).
    pub autoindex_max_entries: usize,
    /// Error pages: a status (4xx or 5xx) and the path beneath the root of the file sent with
    /// it instead of the built-in text (`/404.html`), resolved as a request would be.
    pub error_pages: Vec<(u16, String)>,
    /// `Cache-Control` and extra fields by glob, and the security fields of every response.
    pub rules: rules::Rules,
    /// The whole request head must arrive within this time, counted from the connection's
    /// accept for the first request and from its first byte for later ones. A client that
    /// trickles bytes (slowloris) is cut when it runs out.
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection may wait for the next request.
    pub keepalive_timeout: Duration,
    /// How long one write may make no progress before the connection is dropped.
    pub send_timeout: Duration,
    /// The slowest average rate (bytes/s) a response or request body may move at; below it
    /// the connection is dropped, so a slow reader cannot pin a worker with a large file.
    pub min_send_rate: u64,
    /// The largest request head (request line plus fields) accepted; beyond it, 431 (or 414
    /// while the request line itself is still incomplete).
    pub max_header_bytes: usize,
    /// The longest request target accepted; beyond it, 414.
    pub max_uri_bytes: usize,
    /// The largest request body read and discarded; beyond it, 413 and close.
    pub max_body_bytes: u64,
    /// After this many requests a connection is closed (`Connection: close` on the last one);
    /// 0 and 1 both mean one request per connection.
    pub max_requests_per_connection: u64,
    /// The `Server` header value; empty to send none.
    pub server: String,
    /// Serve files and directories whose names start with a dot. Off by default: they are
    /// answered 404, as if absent, so `.git` or `.env` never leak.
    pub serve_dotfiles: bool,
    /// Dot paths served even without `serve_dotfiles`. Each entry is the leading whole
    /// components of a path beneath the root, without a leading or trailing `/` and not
    /// percent-encoded (`.well-known`); a name starting with `.` is served only where it lies
    /// inside such a prefix, in the request and in what the request resolved to through
    /// symlinks (`path::dots_allowed`). The default allows `/.well-known/` (RFC 8615: ACME
    /// HTTP-01 challenges, security.txt).
    pub dot_allow: Vec<String>,
    /// After a response the server chose to end the connection with (an error, the request
    /// limit), it keeps reading and discarding what the client still sends for at most this
    /// long, so the client's unread data does not turn our close into a reset that destroys
    /// the response before it is read (nginx's lingering close).
    pub linger_timeout: Duration,
    /// What each serving process may keep of the files it opened (`cache`): entries, and
    /// bytes of small files' bodies and paths. Zero entries turns the cache off.
    pub file_cache: cache::Limits,
    /// Serve `file.br`, `file.zst` or `file.gz` in place of `file` when the request accepts
    /// that coding and the sibling is no older than `file` (`encoding`, `answer`). Looked for
    /// only for files of a compressible type (`mime::compressible`), whose answers all carry
    /// `Vary: Accept-Encoding`.
    pub precompressed: bool,
    /// The operator's media types by extension (lower case, no dot), before the built-in ones.
    pub mime: Vec<(String, String)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            index: vec!["index.html".to_string()],
            autoindex: false,
            autoindex_max_entries: 1000,
            error_pages: Vec::new(),
            rules: rules::Rules::default(),
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(10),
            min_send_rate: 16 * 1024,
            // RFC 9112 section 3: request lines of at least 8000 octets should be supported;
            // a target of 8 KiB is such a line, and 16 KiB of head holds it and ordinary
            // fields (conn's buffers are sized from this).
            max_header_bytes: 16 * 1024,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 1024 * 1024,
            max_requests_per_connection: 1000,
            server: "forkd".to_string(),
            serve_dotfiles: false,
            dot_allow: vec![".well-known".to_string()],
            linger_timeout: Duration::from_secs(2),
            file_cache: cache::Limits {
                entries: 1024,
                bytes: 8 * 1024 * 1024,
            },
            precompressed: true,
            mime: Vec::new(),
        }
    }
}

/// Where files come from.
#[derive(Debug)]
pub enum Docroot {
    /// A directory on disk.
    Dir(Tree),
    /// The demo blog compiled into the binary.
    Embedded,
}

/// A document root on disk: an `O_PATH | O_DIRECTORY | O_CLOEXEC` descriptor of it, opened in
/// the master before any chroot or privilege drop (every file is opened relative to it with
/// `RESOLVE_BENEATH`, so nothing outside it is ever reachable), and the cache of what those
/// opens found. Every driver hands `answer::decide` the docroot, so every driver gets the
/// cache. The cache is per process: interior mutability, not shared memory.
#[derive(Debug)]
pub struct Tree {
    fd: OwnedFd,
    cache: RefCell<cache::FileCache>,
}

impl AsFd for Tree {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Docroot {
    /// Opens `path` as the document root, with no file cache (see [`Docroot::cache_files`]).
    pub fn open(path: &Path) -> io::Result<Docroot> {
        open::root(path).map(|fd| {
            Docroot::Dir(Tree {
                fd,
                cache: RefCell::new(cache::FileCache::new(
                    cache::Limits::OFF,
                    answer::SMALL_FILE,
                )),
            })
        })
    }

    /// Gives a docroot on disk a file cache within `limits`, empty (the embedded site needs
    /// none). [`Site::new`] does this with the configuration's limits.
    pub fn cache_files(&mut self, limits: cache::Limits) {
        if let Docroot::Dir(tree) = self {
            tree.cache = RefCell::new(cache::FileCache::new(limits, answer::SMALL_FILE));
        }
    }
}

/// The virtual hosts: their names and, in the same order as the names give them, their roots.
#[derive(Debug, Default)]
pub struct VHosts {
    pub names: vhost::Names,
    pub roots: Vec<Docroot>,
}

impl VHosts {
    /// The root a request for `host` is answered from, or the status it is refused with.
    /// A host no virtual host names is counted (`unknown_host`).
    pub(crate) fn select<'a>(
        &'a self,
        default: &'a Docroot,
        host: Option<&[u8]>,
    ) -> Result<&'a Docroot, u16> {
        match self.names.select(host) {
            vhost::Selected::VHost(i) => Ok(self.roots.get(i).unwrap_or(default)),
            vhost::Selected::Default => Ok(default),
            vhost::Selected::Unknown => {
                Hit::UnknownHost.count();
                Ok(default)
            }
            vhost::Selected::Refused(status) => {
                Hit::UnknownHost.count();
                Err(status)
            }
        }
    }
}

/// The application a child process runs on each connection it is given.
pub struct Site {
    pub config: Config,
    pub docroot: Docroot,
    /// Virtual hosts, each with a root of its own; none by default.
    pub vhosts: VHosts,
    pub log: AccessLog,
    /// Connection buffers kept between connections (see `conn::Buffers`); an event worker's
    /// one input buffer and scratch, shared by all its connections.
    buffers: conn::Buffers,
    /// An event worker's date, formatted once a second for all its connections.
    clock: clock::Clock,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("config", &self.config)
            .field("docroot", &self.docroot)
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl Site {
    /// The site, its docroot given the file cache the configuration asks for.
    pub fn new(config: Config, mut docroot: Docroot, log: AccessLog) -> Site {
        docroot.cache_files(config.file_cache);
        Site {
            config,
            docroot,
            vhosts: VHosts::default(),
            log,
            buffers: conn::Buffers::default(),
            clock: clock::Clock::new(),
        }
    }

    /// Gives the site virtual hosts. The file cache's budget is shared out evenly among the
    /// roots, so a child costs the same with one root or many.
    pub fn set_vhosts(&mut self, mut vhosts: VHosts) {
        let parts = vhosts.roots.len() + 1;
        let share = |n: u64| n / parts as u64;
        let limits = cache::Limits {
            entries: match self.config.file_cache.entries {
                0 => 0,
                n => (n / parts).max(1),
            },
            bytes: share(self.config.file_cache.bytes),
        };
        self.docroot.cache_files(limits);
        for root in &mut vhosts.roots {
            root.cache_files(limits);
        }
        self.vhosts = vhosts;
    }

    /// Runs, once in the master, the set-up each forked child would otherwise repeat:
    /// httparse picks its SIMD routine on the first parse, and the connection buffers are
    /// allocated here so children inherit them instead of allocating and zeroing their own.
    pub fn prepare(&mut self) {
        let mut headers = [httparse::EMPTY_HEADER; 4];
        let _ = httparse::Request::new(&mut headers).parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        self.buffers = conn::Buffers::new(&self.config);
        test_hooks::init();
    }

    /// Fork mode, in the master before each fork: brings the date up to the current second,
    /// so the child that serves the connection inherits it formatted.
    pub fn before_fork(&mut self) {
        self.clock.tick();
    }

    /// Serves one accepted connection until it ends; returns the number of requests answered.
    /// Runs in a child process (prefork worker or per-connection child), never in the master.
    pub fn serve(&mut self, stream: &TcpStream, peer: SocketAddr) -> u64 {
        conn::serve(self, stream, peer)
    }
}
