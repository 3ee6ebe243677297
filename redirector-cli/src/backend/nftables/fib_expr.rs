//! The `fib` expression, which the nftnl crate lacks, in the one form inbound mode needs:
//! `fib daddr type`, the route type of the packet's destination (`local` for this host).

use std::ptr::NonNull;

use nftnl::Rule;
use nftnl::expr::{Expression, Register};
use nftnl::nftnl_sys as sys;

/// `NFTA_FIB_F_DADDR` (linux/netfilter/nf_tables.h): look up the destination address.
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
/// `NFT_FIB_RESULT_ADDRTYPE`: the result is the route type (`RTN_LOCAL` = 2, ...).
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
/// `RTN_LOCAL`: an address of this host.
pub(super) const RTN_LOCAL: u32 = 2;

/// Loads the route type of the packet's destination into `register`.
pub(super) struct FibDaddrType {
    pub register: Register,
}

impl Expression for FibDaddrType {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: a freshly allocated "fib" expression given only attributes libnftnl
        // defines for it; a null allocation aborts, as nftnl does elsewhere.
        unsafe {
            let expr = NonNull::new(sys::nftnl_expr_alloc(c"fib".as_ptr()))
                .unwrap_or_else(|| std::process::abort());
            let set = |attr: u32, value: u32| {
                sys::nftnl_expr_set_u32(expr.as_ptr(), attr as u16, value);
            };
            set(sys::NFTNL_EXPR_FIB_DREG, self.register.to_raw());
            set(sys::NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
            set(sys::NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_DADDR);
            expr
        }
    }
}
