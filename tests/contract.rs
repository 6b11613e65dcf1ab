//! One argument contract per op (`src/engine/contract.rs`): for every op family, a call with one
//! buffer too short panics on the CPU backend and on the GPU backend (lavapipe is enough) with the
//! same message, naming the op, the buffer, and the sizes expected against the elements given.
//! Each panic happens before anything runs or is recorded, and the GPU backend keeps working
//! after it.

mod common;

use etude::engine::cpu::CpuBackend;
use etude::engine::roll::RollOps;
use etude::engine::{AdamParams, AdamStep, Attention, Backend, Bag, Bce, Conv1d, Lstm, LstmSaved, LstmSeqs, MatMul, Qkv, Strided, Xent};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The panic message of `call` (which must panic).
fn message(call: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(call)).expect_err("a short buffer must panic");
    err.downcast_ref::<String>().cloned().or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

/// One call per op family with one buffer one element (or more) short, and the message the
/// contract must give.
fn short_calls<B: RollOps>(b: &B) -> Vec<(String, &'static str)> {
    let f = |n: usize| b.alloc(n);
    let f32s = |n: usize| b.alloc_f32(n);
    let ids = |n: usize| b.alloc_ids(n);
    let mut got = Vec::new();
    let mut case = |want: &'static str, call: &dyn Fn()| got.push((message(call), want));

    // host I/O
    case("write: buffer `dst` holds 4 elements, expected values written 5 = 5", &|| b.write(&mut f(4), &[1.0; 5]));
    case("write_ids: buffer `dst` holds 4 elements, expected values written 5 = 5", &|| b.write_ids(&mut ids(4), &[1; 5]));
    case("read: buffer `src` holds 4 elements, expected values read 5 = 5", &|| drop(b.read(&f(4), 5)));
    // elementwise
    case("add: buffer `x` holds 3 elements, expected n 10 = 10", &|| b.add(&f(3), &mut f(10), 10));
    case(
        "copy_strided: buffer `src` holds 26 elements, expected src_off 2 + (rows 3 - 1) x src_stride 10 + cols 5 = 27",
        &|| b.copy_strided(&f(26), &mut f(15), Strided::block(3, 5).from(2, 10)),
    );
    case(
        "copy_strided: buffer `dst` holds 20 elements, expected dst_off 1 + (rows 3 - 1) x dst_stride 10 + cols 5 = 26",
        &|| b.copy_strided(&f(27), &mut f(20), Strided::block(3, 5).from(2, 10).to(1, 10).adding()),
    );
    case("gated_fwd: buffer `a` holds 47 elements, expected batch 2 x 2 r 6 x t 4 = 48", &|| {
        b.gated_fwd(&f(47), &mut f(24), 2, 3, 4)
    });
    case("transpose: buffer `y` holds 59 elements, expected batch 2 x rows 5 x cols 6 = 60", &|| {
        b.transpose(&f(60), &mut f(59), 2, 5, 6)
    });
    // dense
    let mm = MatMul { m: 4, k: 5, n: 6, trans_a: false, trans_b: true, accumulate: false };
    case("matmul: buffer `b` holds 29 elements, expected k 5 x n 6 = 30", &|| b.matmul(&f(20), &f(29), &mut f(24), mm));
    case("bias_add: buffer `bias` holds 6 elements, expected channels 7 = 7", &|| {
        b.bias_add(&mut f(3 * 7 * 2), &f(6), 3, 7, 2)
    });
    case("bias_grad: buffer `dy` holds 41 elements, expected outer 3 x channels 7 x inner 2 = 42", &|| {
        b.bias_grad(&f(41), &mut f(7), 3, 7, 2)
    });
    // embedding
    case("embedding_fwd: buffer `out` holds 39 elements, expected n 5 x e 8 = 40", &|| {
        b.embedding_fwd(&ids(5), &f(10 * 8), &mut f(39), 5, 8)
    });
    case("embedding_bwd: buffer `ids` holds 4 elements, expected n 5 = 5", &|| {
        b.embedding_bwd(&ids(4), &f(40), &mut f(10 * 8), 5, 8)
    });
    // loss
    case("softmax_xent: buffer `stats` holds 9 elements, expected n 5 x 2 2 = 10", &|| {
        b.softmax_xent(&f(5 * 11), &ids(5), &mut f(5 * 11), &mut f32s(9), Xent { n: 5, v: 11, grad_scale: 0.2 })
    });
    // optimizer
    let step = AdamStep::adam(300, AdamParams::default());
    case("adamw: buffer `v` holds 299 elements, expected n 300 = 300", &|| {
        b.adamw(&mut f(300), &f(300), &mut f32s(300), &mut f32s(299), &f32s(1), step)
    });
    case("adamw: buffer `scale` holds 0 elements, expected one value = 1", &|| {
        b.adamw(&mut f(300), &f(300), &mut f32s(300), &mut f32s(300), &f32s(0), step)
    });
    case("grad_norm_clip: buffer `g` holds 99 elements, expected n 100 = 100", &|| {
        b.grad_norm_clip(&f(99), 100, 1.0, &mut f32s(1), &mut f32s(1))
    });
    // convolution
    let c = Conv1d { batch: 2, cin: 3, cout: 4, time: 5, k: 2, dilation: 2 };
    case("conv1d_fwd: buffer `w` holds 23 elements, expected cout 4 x cin 3 x k 2 = 24", &|| {
        b.conv1d_fwd(&f(30), &f(23), &f(4), &mut f(40), c)
    });
    case("conv1d_bwd_input: buffer `dx` holds 29 elements, expected batch 2 x cin 3 x time 5 = 30", &|| {
        b.conv1d_bwd_input(&f(40), &f(24), &mut f(29), c, true)
    });
    case("conv1d_bwd_weight: buffer `dbias` holds 3 elements, expected cout 4 = 4", &|| {
        b.conv1d_bwd_weight(&f(30), &f(40), &mut f(24), &mut f(3), c)
    });
    // attention
    let a = Attention { batch: 2, heads: 2, dim: 3, time: 5, shift: 1 };
    let (nq, np) = (a.qkv_len(), a.p_len());
    case("attention_fwd: buffer `p` holds 99 elements, expected batch 2 x heads 2 x time 5 x time 5 = 100", &|| {
        b.attention_fwd(&f(nq), &f(nq), &f(nq), &mut f(nq), &mut f(np - 1), a)
    });
    case("attention_bwd: buffer `dk` holds 59 elements, expected batch 2 x heads 2 x dim 3 x time 5 = 60", &|| {
        b.attention_bwd(Qkv { q: &f(nq), k: &f(nq), v: &f(nq) }, &f(np), &f(nq), Qkv { q: &mut f(nq), k: &mut f(nq - 1), v: &mut f(nq) }, a)
    });
    // LSTM
    let l = Lstm { batch: 4, time: 3, hidden: 32 };
    let (seq, gates, state, w) = (4 * 3 * 32, 4 * 3 * 128, 4 * 32, 128 * 32);
    case("lstm_fwd: buffer `h0` holds 100 elements, expected batch 4 x hidden 32 = 128", &|| {
        b.lstm_fwd(&f(gates), &f(w), &f(100), &f(state), LstmSeqs { hs: &mut f(seq), cs: &mut f(seq), gates: &mut f(gates) }, l)
    });
    case("lstm_bwd: buffer `dxw` holds 1535 elements, expected batch 4 x time 3 x 4 hidden 128 = 1536", &|| {
        let (hs, cs, g, dhs) = (f(seq), f(seq), f(gates), f(seq));
        b.lstm_bwd(&f(w), LstmSaved { h0: &f(state), c0: &f(state), seqs: LstmSeqs { hs: &hs, cs: &cs, gates: &g } }, &dhs, &mut f(gates - 1), &mut f(w), l)
    });
    // piano roll
    case("bce_logits: buffer `w` holds 5 elements, expected n 6 = 6", &|| {
        b.bce_logits(&f(6 * 88), &f(6 * 88), &f(5), &mut f(6 * 88), &mut f32s(6), Bce { n: 6, k: 88, grad_scale: 1.0 })
    });
    case("bag_fwd: buffer `ids` holds 17 elements, expected n 6 x slots 3 = 18", &|| {
        b.bag_fwd(&ids(17), &f(88 * 8), &mut f(6 * 8), Bag { n: 6, slots: 3, e: 8 })
    });
    case("bag_bwd: buffer `dtable` holds 703 elements, expected rows 88 x e 8 = 704", &|| {
        b.bag_bwd(&ids(18), &f(6 * 8), &mut f(703), Bag { n: 6, slots: 3, e: 8 }, 88)
    });
    got
}

#[test]
fn a_short_buffer_names_the_op_and_its_sizes_on_the_cpu() {
    for (got, want) in short_calls(&CpuBackend::new()) {
        assert_eq!(got, want);
    }
}

#[test]
fn a_short_buffer_names_the_op_and_its_sizes_on_the_gpu_as_on_the_cpu() {
    let g = common::open_gpu();
    let (d0, _) = g.stats();
    for (got, want) in short_calls(&g) {
        assert_eq!(got, want);
    }
    // Nothing was recorded by the failed calls, and the backend still works.
    assert_eq!(g.stats().0, d0, "a call that breaks its contract records nothing");
    let mut y = g.alloc(10);
    g.add(&g.alloc(10), &mut y, 10);
    g.fill(&mut y, 10, 2.5);
    assert_eq!(g.read(&y, 10), vec![2.5; 10]);
}
