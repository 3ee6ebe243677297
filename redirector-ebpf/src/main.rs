//! The eBPF programs (see `programs.rs`); on the host this binary is only a stub.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("redirector-ebpf holds eBPF programs: build them with `cargo xtask ebpf`");
    std::process::exit(2);
}
