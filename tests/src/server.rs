//! A thread-per-connection TCP server that stops (and joins its accept thread) on drop.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

pub struct Server {
    addr: SocketAddr,
    listener_fd: i32,
    stopping: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves each accepted connection on its own thread. Threads inherit the network
    /// namespace of the thread that calls this.
    pub fn spawn(
        listener: TcpListener,
        handler: impl Fn(TcpStream) + Send + Sync + Clone + 'static,
    ) -> io::Result<Server> {
        // A burst of connections (the load test opens a thousand at once) must wait in the
        // queue, not overflow std's 128 into SYN retransmits that outlast the proxy's
        // handshake timeout. Bitcoin Core listens with SOMAXCONN too; listening again on a
        // listening socket only resizes its queue.
        nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::MAXALLOWABLE)?;
        let addr = listener.local_addr()?;
        let listener_fd = listener.as_raw_fd();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let accept_thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let handler = handler.clone();
                    std::thread::spawn(move || handler(stream));
                }
            }
        });
        Ok(Server {
            addr,
            listener_fd,
            stopping,
            accept_thread: Some(accept_thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // shutdown() on a listening socket wakes a blocked accept() on Linux.
        // SAFETY: the fd stays open until the accept thread, which owns it, is joined below.
        unsafe { libc::shutdown(self.listener_fd, libc::SHUT_RDWR) };
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}
