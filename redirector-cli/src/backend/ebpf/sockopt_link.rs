//! aya 0.14 keeps the bpf_link of a cgroup sockopt program to itself (unlike the other cgroup
//! program types it cannot become an `FdLink`, so it cannot be pinned). This creates and pins
//! that link with the bpf(2) system call directly.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

// From linux/bpf.h: stable kernel ABI.
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_CGROUP_GETSOCKOPT: u32 = 21;

/// The `link_create` member of `union bpf_attr` (the rest stays zero).
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// The `obj_pin` member of `union bpf_attr`.
#[repr(C)]
struct ObjPin {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

fn bpf<T>(command: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, fully initialised prefix of `union bpf_attr` for `command`;
    // the kernel reads at most `size_of::<T>()` bytes of it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Attaches the getsockopt program to `cgroup` through a new bpf_link pinned at `pin`.
pub(super) fn attach_getsockopt(
    program: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    pin: &Path,
) -> io::Result<()> {
    let create = LinkCreate {
        prog_fd: program.as_raw_fd() as u32,
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_GETSOCKOPT,
        flags: 0,
    };
    let fd = bpf(BPF_LINK_CREATE, &create)?;
    // SAFETY: BPF_LINK_CREATE returned a new file descriptor that nothing else owns.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pin path contains NUL"))?;
    let pin_attr = ObjPin {
        pathname: path.as_ptr() as u64,
        bpf_fd: link.as_raw_fd() as u32,
        file_flags: 0,
    };
    bpf(BPF_OBJ_PIN, &pin_attr)?;
    // The pin now holds the link; closing our descriptor keeps it attached.
    Ok(())
}
