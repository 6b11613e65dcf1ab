//! The stream of `Rng::new(seed)`, recorded from the hand-written xoshiro256** (seeded by
//! SplitMix64) before `src/rng.rs` moved onto `rand_xoshiro` (issue 11): the same seed must give the
//! same numbers, and a checkpoint's stored state (`{"s":[..]}`, what `--resume` reads back) the same
//! JSON and the same continuation, so that every documented run stays reproducible bit for bit.

use etude::rng::Rng;

/// (seed, 4 x next_u64, 3 x normal (f32 bits), 4 x below(1000), 2 x uniform (f64 bits),
/// uniform_range(-1, 1) (f32 bits), shuffle of 0..10, the state's JSON after all that, the next u64).
#[allow(clippy::type_complexity)]
const GOLDEN: &[(u64, [u64; 4], [u32; 3], [usize; 4], [u64; 2], u32, [u32; 10], &str, u64)] = &[
    (0x0, [11091344671253066420, 13793997310169335082, 1900383378846508768, 7684712102626143532], [1061799452, 3215188909, 1056548924], [114, 67, 106, 654], [4602607808957388670, 4599010461569639338], 0x3ed157ac, [8, 7, 3, 5, 9, 6, 2, 0, 4, 1], r#"{"s":[2159862602716067150,7172597177854320630,3282126461868503536,9732167132500716964]}"#, 11899763405200761656),
    (0x1, [12966619160104079557, 9600361134598540522, 10590380919521690900, 7218738570589545383], [1057410627, 3218609228, 3204548843], [932, 957, 932, 669], [4603578939318398993, 4606196511261369394], 0xbf56ce7a, [5, 7, 9, 1, 6, 2, 3, 8, 0, 4], r#"{"s":[14871731576886729707,12427172747425512362,16467253606734960551,9894405831166545687]}"#, 7148019177890935463),
    (0x7, [12923355070828475994, 5142052590334782674, 15488392906492639638, 18098058644649177664], [1036089975, 1072695743, 1061648830], [541, 731, 938, 880], [4601803673437222512, 4603227169494151318], 0xbef9242a, [9, 0, 2, 6, 5, 3, 7, 8, 1, 4], r#"{"s":[8211422037171890071,329994692057314259,3066743329605045607,11469595439521049957]}"#, 754786658046315491),
    (0x2a, [1546998764402558742, 6990951692964543102, 12544586762248559009, 17057574109182124193], [1015153796, 1056200131, 3206787857], [682, 290, 801, 321], [4604580688799095568, 4606081443881757902], 0x3e6f20b0, [7, 3, 9, 4, 2, 1, 0, 5, 6, 8], r#"{"s":[8114173152144380497,12584134993929442526,5226291833017099434,11294221353200048648]}"#, 7360099428760650964),
    (0xdeadbeef, [14219364052333592195, 7332719151195188792, 6122488799882574371, 4799409443904522999], [3189227890, 3189371309, 3195258224], [387, 445, 687, 12], [4603970982232343099, 4602712878134072589], 0x3f581568, [9, 3, 5, 0, 1, 8, 4, 6, 2, 7], r#"{"s":[12595132920134457965,11050414547753588664,17650964049560820402,2096343094005412450]}"#, 9120740762717630583),
    (0xffffffffffffffff, [10328197420357168392, 14156678507024973869, 9357971779955476126, 13791585006304312367], [3187255352, 1042289964, 3208276967], [257, 43, 479, 481], [4596053820684481424, 4605169541030274277], 0xbf213d1b, [4, 6, 2, 1, 5, 9, 0, 8, 3, 7], r#"{"s":[8316885441738622084,12314619978401811596,11635578047394348391,14745315449573689650]}"#, 4480112181208829827),
];

#[test]
fn every_method_gives_the_recorded_stream() {
    for &(seed, u, n, b, f, ur, xs, state, next) in GOLDEN {
        let mut r = Rng::new(seed);
        assert_eq!(u, [(); 4].map(|_| r.next_u64()), "seed {seed:#x}: next_u64");
        assert_eq!(n, [(); 3].map(|_| r.normal().to_bits()), "seed {seed:#x}: normal");
        assert_eq!(b, [(); 4].map(|_| r.below(1000)), "seed {seed:#x}: below");
        assert_eq!(f, [(); 2].map(|_| r.uniform().to_bits()), "seed {seed:#x}: uniform");
        assert_eq!(ur, r.uniform_range(-1.0, 1.0).to_bits(), "seed {seed:#x}: uniform_range");
        let mut shuffled: Vec<u32> = (0..10).collect();
        r.shuffle(&mut shuffled);
        assert_eq!(xs.to_vec(), shuffled, "seed {seed:#x}: shuffle");
        assert_eq!(serde_json::to_string(&r).unwrap(), state, "seed {seed:#x}: the stored state's JSON");
        // A state read back from a checkpoint continues the stream where it was saved.
        let mut back: Rng = serde_json::from_str(state).unwrap();
        assert_eq!(back, r, "seed {seed:#x}: state round trip");
        assert_eq!(back.next_u64(), next, "seed {seed:#x}: continuation after reading the state");
        assert_eq!(r.next_u64(), next);
    }
}
