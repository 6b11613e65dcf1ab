mod common;

#[test]
fn fixtures_load_with_their_parameters() {
    for name in ["lstm", "lstm_seq", "wavenet_simple", "wavenet_simple_L10", "wavenet_gated", "wavenet_gated_L10", "wavenet_gated_attention"] {
        let f = common::Fixture::load(name);
        let params = f.params();
        assert!(!params.is_empty(), "{name}: no parameters listed");
        for (p, shape) in &params {
            assert_eq!(&f.get(&format!("param.{p}")).shape, shape, "{name}: param.{p}");
            assert_eq!(&f.get(&format!("grad.{p}")).shape, shape, "{name}: grad.{p}");
        }
        let x = f.get("x");
        assert_eq!(x.shape, vec![4, 16]);
        assert!(x.data.iter().all(|&v| (0.0..20.0).contains(&v)));
    }
}
