//! The tempo map of one timeline: tick -> (quarter notes, seconds).
//!
//! [`super::read_midi`] builds one per timeline (one for formats 0 and 1, one per track for format 2)
//! and keeps them in the [`super::Score`]; everything that needs a note's time in seconds (render)
//! asks the score, so a file's timing is read once, by one set of rules.
//!
//! Arithmetic (kept as render had it, so that its audio stays sample-exact): with metrical division
//! a segment's seconds per tick is `us * 1e-6 / tpq` and the seconds at a tick are the segment's start
//! plus `ticks * seconds per tick`; with timecode division seconds are `tick * (1 / ticks per
//! second)`. Quarter notes are `tick / tpq` (metrical) or summed over the tempo segments (timecode).

use serde::Serialize;

/// Microseconds per quarter note before the first tempo event (120 bpm).
pub const DEFAULT_TEMPO_US: u32 = 500_000;

/// The header's division: what a tick is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Division {
    /// Ticks per quarter note.
    Metrical(f64),
    /// Ticks per second (frames per second x subframes per frame).
    Timecode(f64),
}

/// One tempo segment: from `tick` on, `us_per_quarter`; the time reached at its start.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TempoPoint {
    pub tick: u64,
    pub us_per_quarter: f64,
    pub quarters: f64,
    pub seconds: f64,
}

impl TempoPoint {
    fn at(tick: u64, us_per_quarter: f64, (quarters, seconds): (f64, f64)) -> TempoPoint {
        TempoPoint { tick, us_per_quarter, quarters, seconds }
    }
}

/// The tick -> (quarter notes, seconds) conversion of one timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TempoMap {
    pub division: Division,
    /// Tempo segments, sorted by tick; the first starts at tick 0.
    pub points: Vec<TempoPoint>,
}

impl TempoMap {
    /// `tempos`: (tick, microseconds per quarter), any order. Tempo 0 is ignored (it would make
    /// time stand still); of several changes at one tick the last in file order wins.
    pub fn new(division: Division, mut tempos: Vec<(u64, u32)>) -> TempoMap {
        tempos.sort_by_key(|&(tick, _)| tick); // stable: file order kept within a tick
        let mut map = TempoMap {
            division,
            points: vec![TempoPoint::at(0, DEFAULT_TEMPO_US as f64, (0.0, 0.0))],
        };
        for (tick, us) in tempos {
            if us == 0 {
                continue;
            }
            let reached = map.at(tick);
            let last = map.points.last_mut().expect("tempo map starts with one point");
            if last.tick == tick {
                last.us_per_quarter = us as f64;
            } else {
                map.points.push(TempoPoint::at(tick, us as f64, reached));
            }
        }
        map
    }

    /// (quarter notes, seconds) at `tick`.
    pub fn at(&self, tick: u64) -> (f64, f64) {
        let i = self.points.partition_point(|p| p.tick <= tick).saturating_sub(1);
        let p = self.points[i];
        let dt = (tick - p.tick.min(tick)) as f64;
        let sec_per_quarter = p.us_per_quarter * 1e-6;
        match self.division {
            // Quarter notes do not depend on tempo; seconds do.
            Division::Metrical(tpq) => (tick as f64 / tpq, p.seconds + dt * (sec_per_quarter / tpq)),
            // Seconds do not depend on tempo; quarter notes do.
            Division::Timecode(tps) => (p.quarters + dt / tps / sec_per_quarter, tick as f64 * (1.0 / tps)),
        }
    }

    /// Seconds at `tick`.
    pub fn seconds(&self, tick: u64) -> f64 {
        self.at(tick).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tempo_map_converts_ticks_through_tempo_changes() {
        // Moved from render, whose own map this one replaced.
        let map = TempoMap::new(Division::Metrical(480.0), vec![(0, 500_000), (960, 250_000)]);
        assert!((map.seconds(480) - 0.5).abs() < 1e-12);
        assert!((map.seconds(960) - 1.0).abs() < 1e-12);
        assert!((map.seconds(1440) - 1.25).abs() < 1e-12);
    }

    #[test]
    fn segments_add_up_and_tempo_zero_is_ignored() {
        // 480 tpq: 120 bpm, then 60 bpm from quarter 2; a tempo 0 at quarter 3 changes nothing.
        let map = TempoMap::new(Division::Metrical(480.0), vec![(1440, 0), (960, 1_000_000), (0, 500_000)]);
        assert_eq!(map.points.len(), 2);
        assert_eq!(map.at(960), (2.0, 1.0));
        assert_eq!(map.at(1920), (4.0, 3.0));
        // Timecode: 1000 ticks per second whatever the tempo; quarters follow the tempo.
        let map = TempoMap::new(Division::Timecode(1000.0), vec![(1000, 1_000_000)]);
        assert_eq!(map.at(3000), (4.0, 3.0));
    }
}
