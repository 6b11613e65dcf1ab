//! Inverted dropout of the CPU backend: the mask is a function of (seed, site, index), so the
//! same elements are kept on every backend and in every block split.

use super::PAR_MIN;
use crate::engine::DropMask;
use rayon::prelude::*;

pub(super) fn dropout(x: &mut [f32], n: usize, mask: DropMask) {
    let scale = mask.scale();
    let body = |start: usize, xs: &mut [f32]| {
        for (j, v) in xs.iter_mut().enumerate() {
            *v = if mask.keep(start + j) { *v * scale } else { 0.0 };
        }
    };
    let x = &mut x[..n];
    if n < PAR_MIN {
        body(0, x);
    } else {
        x.par_chunks_mut(PAR_MIN).enumerate().for_each(|(c, xs)| body(c * PAR_MIN, xs));
    }
}
