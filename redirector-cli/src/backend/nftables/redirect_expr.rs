//! The `redir` expression, which the nftnl crate lacks: `redirect to :PORT` with the port
//! taken from a register, as `nft` itself compiles it.

use std::ptr::NonNull;

use nftnl::Rule;
use nftnl::expr::{Expression, Register};
use nftnl::nftnl_sys as sys;

/// `NF_NAT_RANGE_PROTO_SPECIFIED` (linux/netfilter/nf_nat.h): the port range is given.
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;

/// Redirects to the local address of the packet's family (127.0.0.1 or ::1 on the output
/// hook) and the port held, in network byte order, in `port_register`: `redirect to :PORT`.
pub(super) struct Redirect {
    pub port_register: Register,
}

impl Expression for Redirect {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: the expression is freshly allocated (nftnl aborts on allocation failure
        // elsewhere; here a null pointer is turned into the same abort) and only given
        // attributes libnftnl defines for "redir".
        unsafe {
            let expr = NonNull::new(sys::nftnl_expr_alloc(c"redir".as_ptr()))
                .unwrap_or_else(|| std::process::abort());
            sys::nftnl_expr_set_u32(
                expr.as_ptr(),
                sys::NFTNL_EXPR_REDIR_REG_PROTO_MIN as u16,
                self.port_register.to_raw(),
            );
            // The kernel sets max = min when max is absent and reports both: say so here
            // too, so the rules read back are identical to the ones written.
            sys::nftnl_expr_set_u32(
                expr.as_ptr(),
                sys::NFTNL_EXPR_REDIR_REG_PROTO_MAX as u16,
                self.port_register.to_raw(),
            );
            sys::nftnl_expr_set_u32(
                expr.as_ptr(),
                sys::NFTNL_EXPR_REDIR_FLAGS as u16,
                NF_NAT_RANGE_PROTO_SPECIFIED,
            );
            expr
        }
    }
}
