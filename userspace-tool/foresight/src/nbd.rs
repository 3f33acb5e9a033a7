// SPDX-License-Identifier: GPL-2.0
//! An NBD client over libnbd (Debian's libnbd0, opened when first needed;
//! its Rust bindings are not on crates.io): a thin safe layer over the handful of calls the copy needs.
//!
//! Commands are issued with libnbd's asynchronous API and kept in flight up
//! to a window, so a copy streams instead of paying a round trip per
//! request; every command has a deadline, so a server that stops answering
//! (a stopped process, a dead link) fails the copy instead of hanging it.

use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

mod ffi {
    //! libnbd, opened at the first connection (`dlopen`): the tool's other
    //! commands neither need libnbd installed nor pay for loading it and
    //! its dependencies (GnuTLS, libxml2, ICU) at every start.
    use std::ffi::{c_char, c_int, c_void};
    use std::sync::OnceLock;

    #[repr(C)]
    pub struct nbd_handle {
        _private: [u8; 0],
    }

    /// `nbd_completion_callback`: all null for none.
    #[repr(C)]
    pub struct nbd_completion_callback {
        pub callback: Option<unsafe extern "C" fn(*mut c_void, *mut c_int) -> c_int>,
        pub user_data: *mut c_void,
        pub free: Option<unsafe extern "C" fn(*mut c_void)>,
    }

    pub const LIBNBD_TLS_ALLOW: c_int = 1;

    /// The library's name as Debian's libnbd0 installs it (the ABI the
    /// declarations below follow).
    const SONAME: &str = "libnbd.so.0";

    /// Declares the functions used: a table of pointers filled by [`load`],
    /// and for each a function of the same name and signature calling it.
    macro_rules! libnbd {
        ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
            struct Lib {
                // Kept open for the process's life: the pointers below
                // point into it.
                _lib: libloading::Library,
                $($name: unsafe extern "C" fn($($ty),*) -> $ret,)*
            }

            static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();

            /// Opens libnbd once; an error names what is missing.
            pub fn load() -> Result<(), String> {
                let lib = LIB.get_or_init(|| {
                    // SAFETY: libnbd's initialisers have no preconditions
                    // and do not depend on the loading thread.
                    let lib = unsafe { libloading::Library::new(SONAME) }
                        .map_err(|e| format!("the NBD client needs {SONAME} (Debian: libnbd0): {e}"))?;
                    Ok(Lib {
                        // SAFETY: each symbol has the C signature libnbd's
                        // <libnbd.h> declares for it, as written here.
                        $($name: *unsafe {
                            lib.get::<unsafe extern "C" fn($($ty),*) -> $ret>(
                                concat!(stringify!($name), "\0").as_bytes(),
                            )
                        }
                        .map_err(|e| format!("{SONAME}: {e}"))?,)*
                        _lib: lib,
                    })
                });
                lib.as_ref().map(|_| ()).map_err(Clone::clone)
            }

            fn lib() -> &'static Lib {
                match LIB.get() {
                    Some(Ok(lib)) => lib,
                    _ => unreachable!("libnbd is loaded before a handle exists"),
                }
            }

            $(
                /// libnbd's function of the same name.
                ///
                /// # Safety
                ///
                /// As libnbd's documentation requires of its arguments;
                /// [`load`] has succeeded.
                pub unsafe fn $name($($arg: $ty),*) -> $ret {
                    // SAFETY: the caller's.
                    unsafe { (lib().$name)($($arg),*) }
                }
            )*
        };
    }

    libnbd! {
        fn nbd_create() -> *mut nbd_handle;
        fn nbd_close(h: *mut nbd_handle) -> ();
        fn nbd_get_error() -> *const c_char;
        fn nbd_get_errno() -> c_int;
        fn nbd_set_tls(h: *mut nbd_handle, tls: c_int) -> c_int;
        fn nbd_set_tls_certificates(h: *mut nbd_handle, dir: *const c_char) -> c_int;
        fn nbd_aio_connect_uri(h: *mut nbd_handle, uri: *const c_char) -> c_int;
        fn nbd_aio_is_connecting(h: *mut nbd_handle) -> c_int;
        fn nbd_aio_is_ready(h: *mut nbd_handle) -> c_int;
        fn nbd_poll(h: *mut nbd_handle, timeout: c_int) -> c_int;
        fn nbd_aio_get_fd(h: *mut nbd_handle) -> c_int;
        fn nbd_get_size(h: *mut nbd_handle) -> i64;
        fn nbd_is_read_only(h: *mut nbd_handle) -> c_int;
        fn nbd_can_flush(h: *mut nbd_handle) -> c_int;
        fn nbd_can_trim(h: *mut nbd_handle) -> c_int;
        fn nbd_can_zero(h: *mut nbd_handle) -> c_int;
        fn nbd_aio_pread(
            h: *mut nbd_handle,
            buf: *mut c_void,
            count: usize,
            offset: u64,
            cb: nbd_completion_callback,
            flags: u32
        ) -> i64;
        fn nbd_aio_pwrite(
            h: *mut nbd_handle,
            buf: *const c_void,
            count: usize,
            offset: u64,
            cb: nbd_completion_callback,
            flags: u32
        ) -> i64;
        fn nbd_aio_zero(
            h: *mut nbd_handle,
            count: u64,
            offset: u64,
            cb: nbd_completion_callback,
            flags: u32
        ) -> i64;
        fn nbd_aio_trim(
            h: *mut nbd_handle,
            count: u64,
            offset: u64,
            cb: nbd_completion_callback,
            flags: u32
        ) -> i64;
        fn nbd_aio_flush(h: *mut nbd_handle, cb: nbd_completion_callback, flags: u32) -> i64;
        fn nbd_aio_command_completed(h: *mut nbd_handle, cookie: u64) -> c_int;
    }

    pub fn no_completion() -> nbd_completion_callback {
        nbd_completion_callback {
            callback: None,
            user_data: std::ptr::null_mut(),
            free: None,
        }
    }
}

/// Commands kept in flight at most.
pub const WINDOW: usize = 16;

/// libnbd's message for the last failed call of this thread.
fn last_error(what: &str) -> String {
    // SAFETY: nbd_get_error returns a thread-local string or NULL, valid
    // until the next libnbd call of this thread; it is copied at once.
    let msg = unsafe {
        let p: *const c_char = ffi::nbd_get_error();
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    // SAFETY: a plain thread-local read.
    let errno = unsafe { ffi::nbd_get_errno() };
    match (msg.is_empty(), errno) {
        (true, 0) => format!("{what} failed"),
        (true, e) => format!("{what}: {}", std::io::Error::from_raw_os_error(e)),
        (false, _) => format!("{what}: {msg}"),
    }
}

/// A command in flight and the memory libnbd uses until it completes.
struct Pending {
    cookie: u64,
    what: &'static str,
    buf: Option<Vec<u8>>,
}

/// A connected NBD export.
pub struct Nbd {
    h: NonNull<ffi::nbd_handle>,
    uri: String,
    size: u64,
    can_flush: bool,
    can_trim: bool,
    can_zero: bool,
    timeout: Duration,
    inflight: VecDeque<Pending>,
    /// When the oldest command in flight became the oldest: a command's
    /// deadline runs from then (not from its issue: the window behind a
    /// slow link is not a dead server).
    front_since: Instant,
}

impl Nbd {
    /// Connects to `uri` (`nbd://HOST[:PORT]/EXPORT`, `nbds://` for TLS,
    /// `nbd+unix:///EXPORT?socket=PATH`). With a plain `nbd://` URI, TLS is
    /// used when the server offers it. `certs`: the directory of the CA
    /// and client certificates (`ca-cert.pem`, `client-cert.pem`,
    /// `client-key.pem`; libnbd's default otherwise). Every step, and later
    /// every command, must answer within `timeout`.
    pub fn connect(uri: &str, timeout: Duration, certs: Option<&str>) -> Result<Self, String> {
        let curi = CString::new(uri).map_err(|_| format!("{uri}: a NUL byte in the URI"))?;
        ffi::load()?;
        // SAFETY: nbd_create has no preconditions (libnbd is loaded).
        let h =
            NonNull::new(unsafe { ffi::nbd_create() }).ok_or_else(|| last_error("nbd_create"))?;
        let mut nbd = Nbd {
            h,
            uri: uri.to_string(),
            size: 0,
            can_flush: false,
            can_trim: false,
            can_zero: false,
            timeout,
            inflight: VecDeque::new(),
            front_since: Instant::now(),
        };
        // SAFETY: a valid handle; TLS "allow" is a valid setting.
        if unsafe { ffi::nbd_set_tls(nbd.h.as_ptr(), ffi::LIBNBD_TLS_ALLOW) } < 0 {
            return Err(last_error("nbd_set_tls"));
        }
        if let Some(dir) = certs {
            let cdir = CString::new(dir).map_err(|_| format!("{dir}: a NUL byte in the path"))?;
            // SAFETY: a valid handle and a NUL-terminated path (copied).
            if unsafe { ffi::nbd_set_tls_certificates(nbd.h.as_ptr(), cdir.as_ptr()) } < 0 {
                return Err(last_error("nbd_set_tls_certificates"));
            }
        }
        // SAFETY: a valid handle and a NUL-terminated URI (copied by libnbd).
        if unsafe { ffi::nbd_aio_connect_uri(nbd.h.as_ptr(), curi.as_ptr()) } < 0 {
            return Err(last_error(&format!("connect to {uri}")));
        }
        let start = Instant::now();
        // SAFETY: a valid handle (this and the polls below).
        while unsafe { ffi::nbd_aio_is_connecting(nbd.h.as_ptr()) } == 1 {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(format!("connect to {uri}: no answer in {timeout:?}"));
            }
            nbd.poll(left)
                .map_err(|e| format!("connect to {uri}: {e}"))?;
        }
        // SAFETY: a valid handle.
        if unsafe { ffi::nbd_aio_is_ready(nbd.h.as_ptr()) } != 1 {
            return Err(last_error(&format!("connect to {uri}")));
        }
        let p = nbd.h.as_ptr();
        // SAFETY: a valid, connected handle (these only read negotiated flags).
        let (size, ro, flush, trim, zero) = unsafe {
            (
                ffi::nbd_get_size(p),
                ffi::nbd_is_read_only(p),
                ffi::nbd_can_flush(p),
                ffi::nbd_can_trim(p),
                ffi::nbd_can_zero(p),
            )
        };
        if size < 0 {
            return Err(last_error(&format!("{uri}: size")));
        }
        if ro == 1 {
            return Err(format!("{uri}: the export is read-only"));
        }
        nbd.size = size as u64;
        nbd.can_flush = flush == 1;
        nbd.can_trim = trim == 1;
        nbd.can_zero = zero == 1;
        Ok(nbd)
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn can_trim(&self) -> bool {
        self.can_trim
    }

    pub fn can_zero(&self) -> bool {
        self.can_zero
    }

    /// One `nbd_poll`, at most `left` (rounded up to a millisecond).
    ///
    /// Waiting for replies, the socket acknowledges at once (TCP_QUICKACK,
    /// which Linux clears again by itself): a server that leaves Nagle's
    /// algorithm on holds each reply but the first until the one before
    /// is acknowledged, and with nothing to send the client would delay
    /// that by 40 ms. (In `make bench`, with qemu-storage-daemon as the
    /// server, every drain of a migration's copy then took 41 ms, and a
    /// final copy up to 290 ms waiting for room in the window.)
    fn poll(&mut self, left: Duration) -> Result<c_int, String> {
        let ms = left.as_millis().clamp(1, 1000) as c_int;
        // SAFETY: a valid handle.
        let fd = unsafe { ffi::nbd_aio_get_fd(self.h.as_ptr()) };
        if fd >= 0 {
            let on: c_int = 1;
            // SAFETY: `fd` is libnbd's open socket for this handle, `on`
            // outlives the call and its size is given; an error (not a TCP
            // socket) changes nothing and is ignored.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    (&on as *const c_int).cast(),
                    std::mem::size_of::<c_int>() as libc::socklen_t,
                );
            }
        }
        // SAFETY: a valid handle.
        let r = unsafe { ffi::nbd_poll(self.h.as_ptr(), ms) };
        if r < 0 {
            return Err(last_error(&format!("{}: poll", self.uri)));
        }
        Ok(r)
    }

    /// Registers a command libnbd accepted (`cookie`), or reports its error.
    fn issued(
        &mut self,
        what: &'static str,
        cookie: i64,
        buf: Option<Vec<u8>>,
    ) -> Result<(), String> {
        if cookie < 0 {
            return Err(last_error(&format!("{}: {what}", self.uri)));
        }
        if self.inflight.is_empty() {
            self.front_since = Instant::now();
        }
        self.inflight.push_back(Pending {
            cookie: cookie as u64,
            what,
            buf,
        });
        Ok(())
    }

    /// Waits for the oldest command in flight; returns its buffer.
    fn retire_oldest(&mut self) -> Result<Option<Vec<u8>>, String> {
        let Some(front) = self.inflight.front() else {
            return Ok(None);
        };
        let (cookie, what) = (front.cookie, front.what);
        let since = self.front_since;
        loop {
            // SAFETY: a valid handle; the cookie is one of this handle's.
            match unsafe { ffi::nbd_aio_command_completed(self.h.as_ptr(), cookie) } {
                1 => break,
                0 => {}
                _ => {
                    let e = last_error(&format!("{}: {what}", self.uri));
                    self.inflight.pop_front();
                    self.front_since = Instant::now();
                    return Err(e);
                }
            }
            let left = self.timeout.saturating_sub(since.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "{}: {what}: no reply from the server in {:?}",
                    self.uri, self.timeout
                ));
            }
            self.poll(left)?;
        }
        self.front_since = Instant::now();
        Ok(self.inflight.pop_front().and_then(|p| p.buf))
    }

    /// Keeps at most `WINDOW - 1` commands in flight before a new one.
    fn make_room(&mut self) -> Result<(), String> {
        while self.inflight.len() >= WINDOW {
            self.retire_oldest()?;
        }
        Ok(())
    }

    /// Writes `data` at `offset` (completes later; see [`Nbd::drain`]).
    pub fn write(&mut self, offset: u64, data: Vec<u8>) -> Result<(), String> {
        self.make_room()?;
        // SAFETY: the buffer is kept in `inflight` (its heap memory does not
        // move) until the command is retired or the handle closed.
        let c = unsafe {
            ffi::nbd_aio_pwrite(
                self.h.as_ptr(),
                data.as_ptr() as *const c_void,
                data.len(),
                offset,
                ffi::no_completion(),
                0,
            )
        };
        self.issued("write", c, Some(data))
    }

    /// Writes zeroes (the server may unmap them).
    pub fn zero(&mut self, offset: u64, len: u64) -> Result<(), String> {
        self.make_room()?;
        // SAFETY: a valid handle; no buffer.
        let c = unsafe { ffi::nbd_aio_zero(self.h.as_ptr(), len, offset, ffi::no_completion(), 0) };
        self.issued("write-zeroes", c, None)
    }

    /// Discards a range (content then undefined).
    pub fn trim(&mut self, offset: u64, len: u64) -> Result<(), String> {
        self.make_room()?;
        // SAFETY: a valid handle; no buffer.
        let c = unsafe { ffi::nbd_aio_trim(self.h.as_ptr(), len, offset, ffi::no_completion(), 0) };
        self.issued("trim", c, None)
    }

    /// Waits for every command in flight; the first error wins.
    pub fn drain(&mut self) -> Result<(), String> {
        let mut first = None;
        while !self.inflight.is_empty() {
            if let Err(e) = self.retire_oldest() {
                if e.contains("no reply") {
                    return Err(e);
                }
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Waits for every command, then makes them durable (if the server
    /// has a flush; one without a volatile cache has nothing to flush).
    pub fn flush(&mut self) -> Result<(), String> {
        self.drain()?;
        if self.can_flush {
            // SAFETY: a valid handle; no buffer.
            let c = unsafe { ffi::nbd_aio_flush(self.h.as_ptr(), ffi::no_completion(), 0) };
            self.issued("flush", c, None)?;
            self.drain()?;
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset`, after the commands in flight.
    pub fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, String> {
        self.drain()?;
        let mut buf = vec![0u8; len];
        // SAFETY: the buffer is kept in `inflight` until retired (below) or
        // the handle closed; libnbd writes at most `len` bytes into it.
        let c = unsafe {
            ffi::nbd_aio_pread(
                self.h.as_ptr(),
                buf.as_mut_ptr() as *mut c_void,
                buf.len(),
                offset,
                ffi::no_completion(),
                0,
            )
        };
        self.issued("read", c, Some(buf))?;
        Ok(self.retire_oldest()?.unwrap_or_default())
    }
}

impl Drop for Nbd {
    fn drop(&mut self) {
        // SAFETY: the handle is valid and not used after this; closing it
        // abandons the commands in flight, so their buffers (dropped with
        // `inflight` after this) are no longer referenced by libnbd.
        unsafe { ffi::nbd_close(self.h.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connection_is_an_error() {
        // Port 1 on loopback: nothing listens there.
        let e = Nbd::connect("nbd://127.0.0.1:1/x", Duration::from_secs(5), None)
            .err()
            .expect("no server");
        assert!(e.contains("connect to nbd://127.0.0.1:1/x"), "{e}");
        let e = Nbd::connect("not a uri\0", Duration::from_secs(1), None)
            .err()
            .expect("bad uri");
        assert!(e.contains("NUL"), "{e}");
    }

    /// A real server: qemu-storage-daemon exporting a file on a Unix socket
    /// (what libvirt's destination runs, as QEMU's NBD server).
    #[test]
    fn against_qemu_storage_daemon() {
        let dir = std::env::temp_dir().join(format!("foresight-nbd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("disk.img");
        let sock = dir.join("nbd.sock");
        std::fs::write(&img, vec![0x5a; 1 << 20]).unwrap();
        struct Server(std::process::Child);
        impl Drop for Server {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let qsd = std::process::Command::new("qemu-storage-daemon")
            .arg("--blockdev")
            .arg(format!(
                "driver=file,node-name=f,filename={}",
                img.display()
            ))
            .arg("--nbd-server")
            .arg(format!("addr.type=unix,addr.path={}", sock.display()))
            .arg("--export")
            .arg("type=nbd,id=e,node-name=f,name=disk,writable=on")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("qemu-storage-daemon (Debian's qemu-system-x86; make test installs it)");
        let qsd = Server(qsd);
        let uri = format!("nbd+unix:///disk?socket={}", sock.display());
        let start = Instant::now();
        let mut nbd = loop {
            match Nbd::connect(&uri, Duration::from_secs(5), None) {
                Ok(n) => break n,
                Err(e) if start.elapsed() > Duration::from_secs(20) => panic!("{e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        assert_eq!(nbd.size(), 1 << 20);
        assert!(nbd.can_zero());
        for i in 0..40u64 {
            nbd.write(i * 4096, vec![i as u8; 4096]).unwrap();
        }
        nbd.zero(65536, 8192).unwrap();
        nbd.flush().unwrap();
        let got = nbd.read(0, 40 * 4096).unwrap();
        for i in 0..40usize {
            let want = if (16..18).contains(&i) { 0 } else { i as u8 };
            assert!(
                got[i * 4096..(i + 1) * 4096].iter().all(|&b| b == want),
                "block {i}"
            );
        }
        assert!(nbd
            .read(41 * 4096, 4096)
            .unwrap()
            .iter()
            .all(|&b| b == 0x5a));
        // Out of range: an error (libnbd checks bounds itself), and the
        // handle stays usable.
        let e = nbd.write(1 << 20, vec![0; 4096]).unwrap_err();
        assert!(e.contains("out of bounds"), "{e}");
        nbd.write(0, vec![7; 4096]).unwrap();
        nbd.flush().unwrap();
        drop(nbd);
        let data = std::fs::read(&img).unwrap();
        assert!(data[..4096].iter().all(|&b| b == 7));

        // A server that stops answering fails the command at its deadline.
        // (First one round trip: the server serves this connection, so
        // what fails below is the stopped server's silence.)
        let mut nbd = Nbd::connect(&uri, Duration::from_secs(2), None).unwrap();
        nbd.read(0, 4096).unwrap();
        let stop = |sig: &str| {
            let ok = std::process::Command::new("kill")
                .args([sig, &qsd.0.id().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok);
        };
        stop("-STOP");
        let t = Instant::now();
        nbd.write(0, vec![1; 4096]).unwrap();
        let e = nbd.flush().unwrap_err();
        assert!(e.contains("no reply from the server"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        stop("-CONT");
        drop(nbd);
        drop(qsd);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// TLS: a qemu-storage-daemon that requires it (x509, client
    /// certificates verified), certificates made with openssl. `nbds://`
    /// connects; a plain `nbd://` URI uses TLS because the server asks for
    /// it; without the certificates the connection is refused.
    #[test]
    fn tls_when_the_server_asks() {
        let dir = std::env::temp_dir().join(format!("foresight-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = r#"set -e
            ext() { printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=%s\n' "$1"; }
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem -days 2 -subj /CN=test-ca
            for who in server client; do
                openssl req -newkey rsa:2048 -nodes -keyout $who-key.pem -out $who.csr -subj /CN=$who
                ext ${who}Auth >$who.ext
                openssl x509 -req -in $who.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
                    -out $who-cert.pem -days 2 -extfile $who.ext
            done
            truncate -s 1M disk.img"#;
        let ok = std::process::Command::new("sh")
            .args(["-c", script])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl could not make the certificates");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        struct Server(std::process::Child);
        impl Drop for Server {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _qsd = Server(
            std::process::Command::new("qemu-storage-daemon")
                .arg("--object")
                .arg(format!(
                    "tls-creds-x509,id=tls0,dir={},endpoint=server,verify-peer=on",
                    dir.display()
                ))
                .arg("--blockdev")
                .arg(format!(
                    "driver=file,node-name=f,filename={}/disk.img",
                    dir.display()
                ))
                .arg("--nbd-server")
                .arg(format!(
                    "addr.type=inet,addr.host=127.0.0.1,addr.port={port},tls-creds=tls0"
                ))
                .arg("--export")
                .arg("type=nbd,id=e,node-name=f,name=disk,writable=on")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("qemu-storage-daemon"),
        );
        let certs = dir.to_str().unwrap().to_string();
        let start = Instant::now();
        let tls = format!("nbds://127.0.0.1:{port}/disk");
        let mut nbd = loop {
            match Nbd::connect(&tls, Duration::from_secs(5), Some(&certs)) {
                Ok(n) => break n,
                Err(e) if start.elapsed() > Duration::from_secs(20) => panic!("{e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        nbd.write(0, vec![9; 4096]).unwrap();
        nbd.flush().unwrap();
        drop(nbd);
        let plain = format!("nbd://127.0.0.1:{port}/disk");
        let mut nbd = Nbd::connect(&plain, Duration::from_secs(5), Some(&certs)).unwrap();
        assert!(nbd.read(0, 4096).unwrap().iter().all(|&b| b == 9));
        drop(nbd);
        let empty = dir.join("none");
        std::fs::create_dir_all(&empty).unwrap();
        let e = Nbd::connect(&plain, Duration::from_secs(5), empty.to_str())
            .err()
            .expect("no certificates, no connection");
        assert!(e.contains("connect to"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
