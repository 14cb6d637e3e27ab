//! Terminals for containers and exec'd processes: the OCI runtime's console socket (a
//! unix socket the runtime connects to, handing over the pseudo-terminal's master with
//! `SCM_RIGHTS`) and window resizing of a master (`TIOCSWINSZ`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static SOCKET_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A listening console socket (`--console-socket PATH`); removed when dropped.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Listens on a fresh socket in `dir` (kept short: socket paths are limited to 108 bytes).
    pub fn bind(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let n = SOCKET_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("console-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(Self { listener, path })
    }

    /// The socket's path, for the runtime's `--console-socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the runtime to hand over the terminal's master, up to `timeout` or until
    /// `gave_up()` (the runtime exited without connecting). Blocking.
    pub fn receive(&self, timeout: Duration, gave_up: impl Fn() -> bool) -> io::Result<OwnedFd> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline || gave_up() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the runtime did not hand over a terminal",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        receive_fd(stream.as_raw_fd())
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Receives one file descriptor sent with `SCM_RIGHTS` on socket `fd`.
fn receive_fd(fd: RawFd) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut name = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut received: Vec<RawFd> = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            received.extend(fds);
        }
    }
    let mut owned: Vec<OwnedFd> = received.into_iter().map(own).collect();
    if owned.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the runtime sent no terminal",
        ));
    }
    // Any extra descriptors close when `owned` drops.
    Ok(owned.swap_remove(0))
}

#[allow(unsafe_code)]
fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: the descriptor was just received with SCM_RIGHTS: it is open, and nothing
    // else in this process refers to it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Sets the window size of the terminal whose master is `master`.
#[allow(unsafe_code)]
pub fn set_window_size(master: BorrowedFd<'_>, columns: u16, rows: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which lives for the call;
    // `master` is an open descriptor.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
