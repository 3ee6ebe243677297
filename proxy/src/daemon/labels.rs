//! The daemon's vocabulary: how a connection came in and was carried, why one was refused,
//! failed or closed. The enums live in `bip324-control`, so that logs, metrics labels and the
//! control socket's JSON share one spelling (`as_str`) with `bip324-redirect`, which reads
//! them.

pub(crate) use bip324_control::{
    CloseKind, Direction, FailureReason, Front, RefusalKind, TransportKind,
};
