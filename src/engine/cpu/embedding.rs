//! The embedding lookup of the CPU backend and its backward (rows of the table's gradient summed
//! in token order).

pub(super) fn embedding_fwd(ids: &[u32], table: &[f32], out: &mut [f32], n: usize, e: usize) {
    let rows = table.len() / e.max(1);
    for i in 0..n {
        let id = ids[i] as usize;
        assert!(id < rows, "embedding_fwd: token id {id} outside the table of {rows} rows");
        out[i * e..][..e].copy_from_slice(&table[id * e..][..e]);
    }
}

pub(super) fn embedding_bwd(ids: &[u32], dout: &[f32], dtable: &mut [f32], n: usize, e: usize) {
    for i in 0..n {
        let id = ids[i] as usize;
        let d = &mut dtable[id * e..][..e];
        d.iter_mut().zip(&dout[i * e..][..e]).for_each(|(d, g)| *d += g);
    }
}
