//! The cgroup eBPF backend of `bip324-redirect` (programs arrive with the eBPF issue).
//!
//! This crate is kept outside the host workspace: its programs are built for the
//! `bpfel-unknown-none` target with nightly, while everything else builds on stable.
#![no_std]
