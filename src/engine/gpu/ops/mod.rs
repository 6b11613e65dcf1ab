//! The ops, one file per shader family (`shaders/NAME.wgsl`): each declares its shader once and
//! records its dispatches through `record_*` functions that check their buffers with the op's
//! contract first ([`crate::engine::contract`]).

pub(crate) mod attention;
pub(crate) mod bias;
pub(crate) mod conv;
pub(crate) mod dropout;
pub(crate) mod elementwise;
pub(crate) mod embedding;
pub(crate) mod layer_norm;
pub(crate) mod lstm;
pub(crate) mod matmul;
pub(crate) mod nade;
pub(crate) mod optim;
pub(crate) mod rel_attention;
pub(crate) mod roll;
pub(crate) mod softmax_xent;
