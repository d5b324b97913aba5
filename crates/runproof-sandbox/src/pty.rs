//! Interactive runs: the command gets a pty of its own (from the sandbox's
//! private devpts instance), and the supervisor relays bytes between it and
//! the user's terminal. The command never holds a descriptor of the host's
//! terminal, so it cannot push input into the host shell (TIOCSTI) or change
//! the terminal of another session.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;

pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty on a descriptor number.
    unsafe { libc::isatty(0) == 1 && libc::isatty(1) == 1 }
}

/// Signals the supervisor handles itself while a run is in progress.
pub struct SignalWatch {
    fd: Option<OwnedFd>,
    set: libc::sigset_t,
}

impl SignalWatch {
    /// Watch SIGINT, SIGTERM, SIGHUP and SIGQUIT (and SIGWINCH with a pty)
    /// through a signalfd. They are blocked in the calling thread and in
    /// threads it starts afterwards.
    pub fn new(pty: bool) -> SignalWatch {
        // SAFETY: sigset manipulation on a local set; signalfd on it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::sigaddset(&mut set, s);
            }
            if pty {
                libc::sigaddset(&mut set, libc::SIGWINCH);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            SignalWatch {
                fd: (fd >= 0).then(|| OwnedFd::from_raw_fd(fd)),
                set,
            }
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// Signals received since the last call.
    pub fn read(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let Some(fd) = &self.fd else { return out };
        loop {
            // SAFETY: reading whole signalfd_siginfo records into a local.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let n = unsafe {
                libc::read(
                    fd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    std::mem::size_of::<libc::signalfd_siginfo>(),
                )
            };
            if n <= 0 {
                break;
            }
            out.push(info.ssi_signo as i32);
        }
        out
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        // SAFETY: unblock what `new` blocked.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.set, std::ptr::null_mut()) };
    }
}

/// Relays between the user's terminal and the sandbox's pty.
pub struct Relay {
    master: Arc<OwnedFd>,
    saved: Option<libc::termios>,
    stop: OwnedFd,
    input: Option<JoinHandle<()>>,
    output: Option<JoinHandle<()>>,
}

pub(crate) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut p = [0; 2];
    // SAFETY: p is a valid out-array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

fn copy_loop(from: RawFd, to: RawFd, stop: Option<RawFd>) {
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: from,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: valid pollfd array.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        if fds[1].revents != 0 {
            return;
        }
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
        let mut off = 0;
        while off < n as usize {
            // SAFETY: writing from the local buffer.
            let w =
                unsafe { libc::write(to, buf[off..n as usize].as_ptr().cast(), n as usize - off) };
            if w <= 0 {
                return;
            }
            off += w as usize;
        }
    }
}

impl Relay {
    pub fn start(master: OwnedFd) -> std::io::Result<Relay> {
        let master = Arc::new(master);
        // SAFETY: termios calls on stdin with a local struct.
        let saved = unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) == 0 {
                let mut raw = t;
                libc::cfmakeraw(&mut raw);
                libc::tcsetattr(0, libc::TCSANOW, &raw);
                Some(t)
            } else {
                None
            }
        };
        let (stop_r, stop_w) = pipe()?;
        let relay_master = master.clone();
        let stop_fd = stop_r.as_raw_fd();
        let stop_r = Arc::new(stop_r);
        let keep = stop_r.clone();
        let input = std::thread::spawn(move || {
            let _keep = keep;
            copy_loop(0, relay_master.as_raw_fd(), Some(stop_fd));
        });
        let out_master = master.clone();
        let output = std::thread::spawn(move || copy_loop(out_master.as_raw_fd(), 1, None));
        let r = Relay {
            master,
            saved,
            stop: stop_w,
            input: Some(input),
            output: Some(output),
        };
        r.resize();
        Ok(r)
    }

    /// Copy the user's window size to the sandbox's pty.
    pub fn resize(&self) {
        // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a local winsize.
        unsafe {
            let mut ws: libc::winsize = std::mem::zeroed();
            if libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
            }
        }
    }

    /// Flush the remaining output, stop relaying and restore the terminal.
    pub fn finish(mut self) {
        if let Some(o) = self.output.take() {
            let _ = o.join();
        }
        // SAFETY: one byte on our own pipe wakes the input thread.
        unsafe { libc::write(self.stop.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        if let Some(i) = self.input.take() {
            let _ = i.join();
        }
        if let Some(t) = self.saved.take() {
            // SAFETY: restoring the saved termios.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(t) = self.saved.take() {
            // SAFETY: restoring the saved termios on an early exit.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}
