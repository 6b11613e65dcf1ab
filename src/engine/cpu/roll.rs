//! The piano-roll ops on the CPU (see [`crate::engine::roll::RollOps`]): the reference for
//! `shaders/bce.wgsl` and `shaders/bag.wgsl`.

use super::{CpuBackend, CpuBuf};
use crate::engine::roll::{bce_one, sigmoid, RollOps};
use crate::engine::nade::{Nade, NadeGrads, NadeIn};
use crate::engine::{contract, Bag, Bce};

impl RollOps for CpuBackend {
    fn bce_logits(&self, logits: &CpuBuf, y: &CpuBuf, w: &CpuBuf, dlogits: &mut CpuBuf, stats: &mut CpuBuf, bce: Bce) {
        contract::bce_logits(&bce, [logits.len(), y.len(), w.len(), dlogits.len(), stats.len()]);
        let Bce { n, k, grad_scale } = bce;
        let (logits, y, w) = (&logits[..n * k], &y[..n * k], &w[..n]);
        let (dlogits, stats) = (&mut dlogits[..n * k], &mut stats[..n]);
        for i in 0..n {
            let wi = w[i];
            let mut sum = 0.0f32;
            for j in 0..k {
                let (x, t) = (logits[i * k + j], y[i * k + j]);
                sum += bce_one(x, t);
                dlogits[i * k + j] = (sigmoid(x) - t) * wi * grad_scale;
            }
            stats[i] = wi * sum;
        }
    }

    fn bag_fwd(&self, ids: &Vec<u32>, table: &CpuBuf, out: &mut CpuBuf, bag: Bag) {
        contract::bag_fwd(&bag, [ids.len(), table.len(), out.len()]);
        let Bag { n, slots, e } = bag;
        let rows = table.len() / e.max(1);
        let out = &mut out[..n * e];
        out.fill(0.0);
        for i in 0..n {
            let o = &mut out[i * e..][..e];
            for &id in &ids[i * slots..][..slots] {
                let id = id as usize;
                if id < rows {
                    o.iter_mut().zip(&table[id * e..][..e]).for_each(|(o, t)| *o += t);
                }
            }
        }
    }

    fn bag_bwd(&self, ids: &Vec<u32>, dout: &CpuBuf, dtable: &mut CpuBuf, bag: Bag, rows: usize) {
        contract::bag_bwd(&bag, rows, [ids.len(), dout.len(), dtable.len()]);
        let Bag { n, slots, e } = bag;
        for i in 0..n {
            let d = &dout[i * e..][..e];
            for &id in &ids[i * slots..][..slots] {
                let id = id as usize;
                if id < rows {
                    dtable[id * e..][..e].iter_mut().zip(d).for_each(|(t, g)| *t += g);
                }
            }
        }
    }

    fn nade_fwd(&self, x: NadeIn<'_, CpuBuf>, logits: &mut CpuBuf, stats: &mut CpuBuf, nade: Nade) {
        super::nade::nade_fwd(x, logits, stats, nade)
    }

    fn nade_bwd(&self, x: NadeIn<'_, CpuBuf>, logits: &CpuBuf, g: NadeGrads<'_, CpuBuf>, nade: Nade) {
        super::nade::nade_bwd(x, logits, g, nade)
    }
}
