//! The numeric ranges of the options are checked once, by clap, as the command line is parsed
//! (`src/cli/values.rs`, issue 25): a value out of range is one line naming the option, the rule and
//! the value, status 1, before anything is read; piano-roll mode and the token commands refuse the
//! same values with the same words.

mod cli_common;

use cli_common::*;

#[test]
fn values_out_of_range_are_refused_at_parse_time_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The checkpoint and data do not exist: the range is refused first, so nothing was opened.
    let cases: [(&[&str], &str); 9] = [
        (&["train", "--lr", "0"], "--lr must be a positive number, not 0"),
        (&["train", "--clip=nan"], "--clip must be a number >= 0, not nan"),
        (&["train", "--batch", "0"], "--batch must be at least 1, not 0"),
        (&["train", "--val-fraction", "1"], "--val-fraction must be in [0, 1), not 1"),
        (&["train", "--data", "missing.pianoroll.json.gz", "--window", "0"], "--window must be at least 1, not 0"),
        (&["generate", "--model", "missing.safetensors", "--top-p", "1.5"], "--top-p must be in (0, 1], not 1.5"),
        (&["generate", "--model", "missing.safetensors", "--temperature", "-1"], "--temperature must be positive, not -1"),
        (&["generate", "--model", "missing.safetensors", "--count", "x"], "--count must be a number"),
        (&["eval", "--model", "missing.safetensors", "--batch", "0"], "--batch must be at least 1, not 0"),
    ];
    for (args, expect) in cases {
        let line = one_line_error(args, dir, &[expect]);
        assert!(!line.contains("missing"), "the range comes before any file: {line}");
    }
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0, "a refused command wrote nothing");
}
