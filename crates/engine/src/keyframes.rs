//! Keyframes: running the model only on the frames that need it.
//!
//! The heavy models cost 0.3-2 s a frame on a CPU, yet consecutive frames mostly show the same
//! picture, moved a little. So with [`Keyframes::Adaptive`] the model runs on *keyframes* only;
//! in between, the last mask is carried along the picture's motion (the stabiliser's block
//! matching, [`Motion`]), and the guided upsampling that follows snaps it to the current frame's
//! own edges. A frame becomes a keyframe when the carried mask can no longer be trusted:
//!
//! - the first frame, and a new shot (most of the picture unexplained by motion);
//! - the gap since the last keyframe reaches its bound, in frames or in seconds; the bound in
//!   frames shrinks while keyframes find the carried mask wrong (see below);
//! - change that motion does not explain, summed since the keyframe, reaches a budget: measured
//!   near the subject's outline (an arm moves, the head turns) and over the whole picture
//!   (something enters), whichever is larger;
//! - the subject itself moved more than a few pixels since the keyframe: carrying a mask along
//!   block motion is exact for a picture that slides, not for a body that walks or turns;
//! - the carried mask's area drifted from the keyframe's by more than a fraction;
//! - every few frames while there is no subject (nothing is carried that could notice one);
//! - right after a keyframe whose mask disagreed with the carried one on the area: the model
//!   runs again to confirm it, so a per-frame model's glitch is not carried for a whole gap;
//!   and again, up to [`MAX_CONFIRMS`] times, while each run disagrees with the one before.
//!
//! Each keyframe also checks the carrying: how far the model's new mask agrees with the mask
//! carried to the same frame ([`Rules::agreement`]). Where they disagree, the carried frames in
//! between were as wrong, whatever the rules above saw: the next gap is halved, down to the model
//! on every frame. Each keyframe that agrees doubles it, up to its bound, and a shot starts with
//! no gap at all (the model on its first two frames, then 1, 3 and 7 carried frames between
//! keyframes while they agree), so carrying is trusted only where it has been seen to work.
//! Footage on which the model changes its mind from frame to frame (a portrait model on an
//! animated rabbit) so runs it on nearly every frame, rather than carrying masks the model would
//! not have drawn.
//!
//! A mask carried forward falls behind a subject that moves slowly (block motion is measured a
//! little short), and the next keyframe then catches up in one step: the matte moves in jerks
//! the every-frame matte does not have. So a gap's carried frames wait for the keyframe that
//! ends it, and each is given a blend of the mask carried forward from the keyframe before and
//! the new keyframe's mask carried back, weighted by how near each keyframe is: the two errors
//! point opposite ways and cancel. A gap ended by a cut keeps the forward masks, and so does one
//! ended by a keyframe whose mask disagrees with the carried one unless its confirming runs
//! bear it out. So does a gap without a subject whose keyframe finds one: nothing was carried
//! that lags, and the new mask carried back would draw the subject before the model saw it (on
//! bikes, ISNet takes a box on the road from about alpha 0.1 to nearly 1 from one frame to the
//! next, and the every-frame matte eases it in after). The wait is one gap and its confirming
//! runs at most ([`Rules::max_gap_frames`] + [`MAX_CONFIRMS`] frames), so memory stays bounded.
//!
//! The motion measured here is handed to the matting step, whose stabiliser would otherwise
//! search the same motion again, so a carried frame costs one motion search and no model run.
//! It is measured on a smaller copy of the grid ([`MOTION_SIDE`]), except where the model runs
//! whatever the motion says (the gap is down to one frame, or a keyframe awaits confirmation):
//! there it is measured on the whole grid as the stabiliser does with the model on every frame,
//! so a stretch of keyframes gets the every-frame matte itself.
//! `light` (a 5 ms model: cheaper than the motion search) and the recurrent `video` tier (its
//! memory needs every frame) always run the model.

use crate::error::{EngineError, Result};
use crate::frame::{Mask, YuvFrame};
use crate::matte::{box_mean, unit_floats, Motion, TemporalStabiliser};
use crate::model::{Segmenter, Tier};
use rayon::prelude::*;

/// Longest side of the grid the planner measures motion on: a carried frame's whole cost, so
/// well below ISNet's 1024 (see [`Motion::measure_within`]).
pub const MOTION_SIDE: usize = 512;

/// Most model runs in a row that confirm a keyframe. A confirming run that itself disagrees
/// with the keyframe may be the glitch (MODNet drops a third of the man in carphone on one
/// frame in ten), so it is confirmed in turn; the bound keeps footage on which the model's
/// area never settles from running it on every frame.
const MAX_CONFIRMS: u32 = 2;

/// Coverage (alpha ≥ 0.5) below which a keyframe found no subject.
const NO_SUBJECT: f64 = 0.002;

/// Whether the model runs on every frame or only where the picture needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keyframes {
    /// Keyframes chosen from the motion (the default); tiers whose model is cheap or recurrent
    /// still run it on every frame.
    #[default]
    Adaptive,
    /// The model on every frame: the reference the adaptive mode is measured against.
    Every,
}

impl Keyframes {
    /// Every accepted name.
    pub const ALL: [Keyframes; 2] = [Keyframes::Adaptive, Keyframes::Every];

    /// The name used by the CLI, the API and `CLEARBG_KEYFRAMES`.
    pub fn name(self) -> &'static str {
        match self {
            Keyframes::Adaptive => "adaptive",
            Keyframes::Every => "every",
        }
    }
}

impl std::str::FromStr for Keyframes {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Keyframes> {
        Keyframes::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| EngineError::InvalidOptions(format!("keyframes must be `adaptive` or `every`, not {s:?}")))
    }
}

impl std::fmt::Display for Keyframes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// When a carried mask stops being trusted. Thresholds are luma differences (0-1) left after
/// motion compensation, 3x3-averaged: about 0.01 within a steady shot, 0.08-0.23 across a cut
/// (see the stabiliser's measurements in [`crate::matte`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// Most frames between two keyframes.
    pub max_gap_frames: u32,
    /// Most seconds between two keyframes.
    pub max_gap_seconds: f64,
    /// Mean residual over the picture at which a frame starts a new shot.
    pub cut: f32,
    /// Residual summed over the frames since the keyframe at which the carried mask is redone:
    /// each frame adds the larger of its mean near the subject's outline and its mean over the
    /// picture.
    pub drift_budget: f32,
    /// How far the subject (alpha ≥ 0.5) may move on average since the keyframe, as a
    /// fraction of the mask grid's long side.
    pub subject_shift: f32,
    /// Relative change of the mask's area (alpha ≥ 0.5) since the keyframe that forces one.
    pub area_drift: f64,
    /// Most frames between two keyframes while there is no subject (less than 0.2% of the
    /// picture): nothing is carried then, and nothing else would notice one arriving.
    pub max_gap_without_subject: u32,
    /// Agreement ([`Mask::agreement`]) between a keyframe's mask and the mask carried to it
    /// below which the next gap is halved; at or above it the gap doubles back towards
    /// `max_gap_frames`.
    pub agreement: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            max_gap_frames: 8,
            max_gap_seconds: 0.4,
            cut: 0.06,
            drift_budget: 0.08,
            subject_shift: 0.01,
            area_drift: 0.1,
            max_gap_without_subject: 3,
            agreement: 0.9,
        }
    }
}

/// The rules for `tier`, or `None` where the model runs on every frame whatever the mode.
pub fn rules_for(tier: Tier, mode: Keyframes) -> Option<Rules> {
    match (mode, tier) {
        (Keyframes::Every, _) | (_, Tier::Light | Tier::Video) => None,
        (Keyframes::Adaptive, Tier::Human | Tier::Original | Tier::Pro) => Some(Rules::default()),
    }
}

/// Why a frame ran the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Every frame runs the model (the mode, or the tier).
    Always,
    /// The video's first frame, or a frame of another size.
    First,
    /// A new shot.
    Cut,
    /// The longest gap was reached.
    Gap,
    /// Unexplained change since the keyframe reached the budget.
    Drift,
    /// The subject moved too far since the keyframe.
    Moved,
    /// The mask's area changed too much.
    Area,
    /// The last keyframe's mask disagreed with the carried one on the area: the model runs again
    /// to confirm it, so that a per-frame model's glitch is not carried for a whole gap.
    Confirm,
}

/// One frame's segmentation, as the matting step takes it.
#[derive(Debug, Clone)]
pub struct Segmented {
    /// The mask on the model's grid: inferred on a keyframe, carried otherwise.
    pub mask: Mask,
    /// The frame's Y plane on the mask's grid.
    pub luma: Vec<u8>,
    /// The motion from the previous frame on the mask's grid, when it was measured.
    pub motion: Option<Motion>,
    /// Why the model ran; `None`: the mask was carried.
    pub keyframe: Option<Reason>,
}

/// How many frames ran the model, and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames segmented.
    pub frames: u64,
    /// Frames on which the model ran.
    pub keyframes: u64,
    /// Keyframes forced by a new shot.
    pub cuts: u64,
    /// Keyframes forced by the longest gap.
    pub gaps: u64,
    /// Keyframes forced by unexplained change.
    pub drifts: u64,
    /// Keyframes forced by the subject's own motion.
    pub moves: u64,
    /// Keyframes forced by the mask's area.
    pub areas: u64,
    /// Keyframes run to confirm a keyframe that disagreed with the carried mask.
    pub confirms: u64,
}

struct Previous {
    luma: Vec<f32>,
    mask: Mask,
}

/// Segments a video's frames in order, running the model only on keyframes. One per video.
pub struct Keyframer {
    rules: Option<Rules>,
    fps: f64,
    previous: Option<Previous>,
    since_keyframe: u32,
    /// Most frames in the current gap: 1 at the start of a shot, doubled by each keyframe that
    /// agrees with the carried mask up to [`Rules::max_gap_frames`], halved by each that does not.
    gap_bound: u32,
    drift: f32,
    shift: f32,
    keyframe_coverage: f64,
    /// The last keyframe disagreed with the carried mask: run the model on the next frame too.
    confirm: bool,
    /// The last keyframe found a subject after one without (coverage below [`NO_SUBJECT`]).
    appeared: bool,
    /// Confirming runs since the keyframe they confirm.
    confirms_in_a_row: u32,
    stats: Stats,
    /// Where the per-pixel work runs ([`Keyframer::with_pool`]).
    pool: Option<rayon::ThreadPool>,
    /// Frames since the last settled keyframe: carried frames waiting for the next keyframe,
    /// and while it is disputed, that keyframe and its confirming runs.
    gap: Vec<(YuvFrame, Segmented)>,
    /// Where in `gap` the keyframe awaiting confirmation is.
    disputed: Option<usize>,
}

impl Keyframer {
    /// A planner for `tier` in `mode`, for a video of `fps` frames a second.
    pub fn new(tier: Tier, mode: Keyframes, fps: f64) -> Keyframer {
        Keyframer::with_rules(rules_for(tier, mode), fps)
    }

    /// The same with other rules (for experiments; the pipeline uses [`rules_for`]).
    pub fn with_rules(rules: Option<Rules>, fps: f64) -> Keyframer {
        Keyframer {
            rules,
            fps: if fps.is_finite() && fps > 0.0 { fps } else { 25.0 },
            previous: None,
            since_keyframe: 0,
            gap_bound: 1,
            drift: 0.0,
            shift: 0.0,
            keyframe_coverage: 0.0,
            confirm: false,
            appeared: false,
            confirms_in_a_row: 0,
            stats: Stats::default(),
            pool: None,
            gap: Vec::new(),
            disputed: None,
        }
    }

    /// The same with the per-pixel work (resizing, measuring and carrying motion, the keyframe
    /// tests, the blend) split over `pool`'s threads rather than rayon's global pool; the model
    /// still runs on the caller's thread.
    pub fn with_pool(mut self, pool: rayon::ThreadPool) -> Keyframer {
        self.pool = Some(pool);
        self
    }

    /// Most frames one [`Keyframer::push`] can return at once: a gap, its keyframe and the
    /// keyframe's confirming runs. The next stage's queue is made this much deeper, so that it
    /// takes them without holding up the next gap.
    pub fn most_settled_at_once(&self) -> usize {
        self.rules.map_or(1, |r| r.max_gap_frames as usize + MAX_CONFIRMS as usize)
    }

    /// What it has done so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Takes the next frame and returns the frames whose masks are settled, in order, each with
    /// its segmentation: a keyframe with the carried frames before it, or nothing while a gap
    /// is open. [`Keyframer::finish`] returns the rest at the end of the video.
    pub fn push(&mut self, segmenter: &mut Segmenter, frame: YuvFrame) -> Result<Vec<(YuvFrame, Segmented)>> {
        let segmented = self.segment(segmenter, &frame)?;
        Ok(self.settle(frame, segmented))
    }

    /// At the end of the video: the frames still waiting, as they are (a gap that no keyframe
    /// closed keeps the masks carried forward).
    pub fn finish(&mut self) -> Vec<(YuvFrame, Segmented)> {
        self.disputed = None;
        std::mem::take(&mut self.gap)
    }

    /// Adds a segmented frame to the open gap, or closes the gap when its keyframe is settled.
    ///
    /// A keyframe whose mask disagrees with the carried one may be the model's glitch: the gap
    /// then waits for the confirming runs, and is blended towards the keyframe only if the last
    /// of them agrees with it. Across a cut the next shot's mask means nothing to the frames
    /// before, and a subject that appeared was not in them: such gaps are not blended at all.
    fn settle(&mut self, frame: YuvFrame, segmented: Segmented) -> Vec<(YuvFrame, Segmented)> {
        let reason = segmented.keyframe;
        self.gap.push((frame, segmented));
        let keyframe_at = match reason {
            None => return Vec::new(),
            Some(Reason::Confirm) if self.confirm => return Vec::new(),
            Some(Reason::Confirm) => self.disputed.take().filter(|&at| {
                let (disputed, last) = (&self.gap[at].1.mask, &self.gap[self.gap.len() - 1].1.mask);
                let drift = self.rules.map_or(0.0, |r| r.area_drift);
                !area_differs(disputed.coverage(), last.coverage(), drift)
            }),
            Some(Reason::Gap | Reason::Drift | Reason::Moved | Reason::Area) if self.appeared => None,
            Some(Reason::Gap | Reason::Drift | Reason::Moved | Reason::Area) if self.confirm => {
                self.disputed = Some(self.gap.len() - 1);
                return Vec::new();
            }
            Some(Reason::Gap | Reason::Drift | Reason::Moved | Reason::Area) => Some(self.gap.len() - 1),
            Some(Reason::Always | Reason::First | Reason::Cut) => None,
        };
        let mut settled = std::mem::take(&mut self.gap);
        self.disputed = None;
        if let Some(at) = keyframe_at {
            let (gap, keyframe) = settled.split_at_mut(at);
            in_pool(self.pool.as_ref(), || blend_gap(gap, &keyframe[0].1));
        }
        settled
    }

    /// The frame's segmentation: the model's mask on a keyframe, the last mask carried forward
    /// otherwise.
    fn segment(&mut self, segmenter: &mut Segmenter, frame: &YuvFrame) -> Result<Segmented> {
        self.stats.frames += 1;
        let Some(rules) = self.rules else {
            let (mask, luma) = segmenter.segment_yuv(frame)?;
            self.stats.keyframes += 1;
            return Ok(Segmented { mask, luma, motion: None, keyframe: Some(Reason::Always) });
        };
        // The per-pixel work splits over the pool's threads; the model runs on this one. The
        // pool is taken out meanwhile, since the work borrows the keyframer whole.
        let pool = self.pool.take();
        let (luma, luma_f, carried, motion, reason) = in_pool(pool.as_ref(), || {
            let luma = segmenter.guide_luma(frame);
            let luma_f = unit_floats(&luma);
            let previous = self.previous.take().filter(|p| p.luma.len() == luma_f.len());
            // Where the model runs whatever the motion says, the motion is measured as the
            // stabiliser would measure it (see the module's overview).
            let keyframe_due = self.confirm || self.gap_bound <= 1;
            let (carried, motion) = previous
                .map(|p| {
                    let (w, h) = (p.mask.width as usize, p.mask.height as usize);
                    let search = TemporalStabiliser::default().search;
                    let motion = if keyframe_due {
                        Motion::measure(&p.luma, &luma_f, w, h, search)
                    } else {
                        Motion::measure_within(&p.luma, &luma_f, w, h, search, MOTION_SIDE)
                    };
                    (motion.carry(&p.mask), motion)
                })
                .unzip();
            let reason = match (&carried, &motion) {
                (Some(carried), Some(motion)) => self.reason(&rules, carried, motion),
                _ => Some(Reason::First),
            };
            (luma, luma_f, carried, motion, reason)
        });
        self.pool = pool;
        let mask = match (reason, carried) {
            (None, Some(carried)) => {
                self.since_keyframe += 1;
                carried
            }
            (reason, carried) => {
                let (mask, _) = segmenter.segment_yuv(frame)?;
                self.keyframe_taken(&rules, reason, carried.as_ref(), &mask);
                mask
            }
        };
        self.previous = Some(Previous { luma: luma_f, mask: mask.clone() });
        Ok(Segmented { mask, luma, motion, keyframe: reason })
    }

    /// Why this frame must run the model, or `None` when the carried mask will do.
    fn reason(&mut self, rules: &Rules, carried: &Mask, motion: &Motion) -> Option<Reason> {
        if self.confirm {
            return Some(Reason::Confirm);
        }
        let picture = motion.unexplained();
        if picture >= rules.cut {
            return Some(Reason::Cut);
        }
        let gap = self.since_keyframe + 1;
        let no_subject = self.keyframe_coverage < NO_SUBJECT;
        if gap >= self.gap_bound
            || gap as f64 >= rules.max_gap_seconds * self.fps
            || (no_subject && gap >= rules.max_gap_without_subject)
        {
            return Some(Reason::Gap);
        }
        self.drift += outline_residual(carried, motion).max(picture);
        if self.drift >= rules.drift_budget {
            return Some(Reason::Drift);
        }
        self.shift += subject_shift(carried, motion);
        if self.shift >= rules.subject_shift * motion.width.max(motion.height) as f32 {
            return Some(Reason::Moved);
        }
        if area_differs(self.keyframe_coverage, carried.coverage(), rules.area_drift) {
            return Some(Reason::Area);
        }
        None
    }

    /// Starts a new gap at a keyframe whose model ran for `reason` and found `mask`; `carried`
    /// is what the previous frame's mask would have become.
    fn keyframe_taken(&mut self, rules: &Rules, reason: Option<Reason>, carried: Option<&Mask>, mask: &Mask) {
        self.count(reason);
        let coverage = mask.coverage();
        self.confirms_in_a_row = if reason == Some(Reason::Confirm) { self.confirms_in_a_row + 1 } else { 0 };
        self.confirm = self.confirms_in_a_row < MAX_CONFIRMS
            && carried.is_some_and(|c| area_differs(c.coverage(), coverage, rules.area_drift));
        self.appeared = self.keyframe_coverage < NO_SUBJECT && coverage >= NO_SUBJECT;
        // A new shot starts with no gap (nothing yet says that carrying works on it); after
        // that, each keyframe halves or doubles the gap by how far the carrying agreed with it.
        self.gap_bound = match (reason, carried) {
            (Some(Reason::First | Reason::Cut), _) | (_, None) => 1,
            (_, Some(carried)) if carried.agreement(mask) < rules.agreement => (self.gap_bound / 2).max(1),
            (_, Some(_)) => (self.gap_bound * 2).min(rules.max_gap_frames),
        };
        self.since_keyframe = 0;
        self.drift = 0.0;
        self.shift = 0.0;
        self.keyframe_coverage = coverage;
    }

    fn count(&mut self, reason: Option<Reason>) {
        self.stats.keyframes += 1;
        match reason {
            Some(Reason::Cut) => self.stats.cuts += 1,
            Some(Reason::Gap) => self.stats.gaps += 1,
            Some(Reason::Drift) => self.stats.drifts += 1,
            Some(Reason::Moved) => self.stats.moves += 1,
            Some(Reason::Area) => self.stats.areas += 1,
            Some(Reason::Confirm) => self.stats.confirms += 1,
            _ => {}
        }
    }
}

/// Runs `work` on `pool`'s threads, or on rayon's global pool without one.
fn in_pool<T: Send>(pool: Option<&rayon::ThreadPool>, work: impl FnOnce() -> T + Send) -> T {
    match pool {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

/// Gives each carried frame of a gap a blend of its forward-carried mask and `keyframe`'s mask
/// carried back to it, weighted by its distance from either end of the gap. Leaves the gap as
/// it is when a motion is missing (the frames are then not one continuous shot).
fn blend_gap<T>(gap: &mut [(T, Segmented)], keyframe: &Segmented) {
    if gap.iter().any(|(_, s)| s.motion.is_none()) {
        return;
    }
    let Some(mut motion) = keyframe.motion.as_ref() else { return };
    let mut back = keyframe.mask.clone();
    let steps = (gap.len() + 1) as f32;
    for (i, (_, carried)) in gap.iter_mut().enumerate().rev() {
        back = motion.carry_back(&back);
        let t = (i + 1) as f32 / steps; // the keyframe's share: 0 at the gap's start, 1 at its end
        carried.mask.data.par_iter_mut().zip(&back.data).for_each(|(a, &b)| *a += t * (b - *a));
        motion = carried.motion.as_ref().expect("checked above");
    }
}

/// Whether coverage `now` differs from `was` by more than the fraction `drift` (of at least 1%
/// of the picture, so that a tiny subject is not redone on every pixel).
fn area_differs(was: f64, now: f64, drift: f64) -> bool {
    (now - was).abs() > drift * was.max(0.01)
}

/// Mean residual within a band around the subject's outline (about 1.5% of the grid's long
/// side either way): where a carried mask goes wrong first. 0 when there is no outline.
///
/// Where the subject touches the picture's edge, the edge is part of its outline too: a subject
/// entering the frame brings content that no motion explains, right there.
fn outline_residual(mask: &Mask, motion: &Motion) -> f32 {
    let (w, h) = (mask.width as usize, mask.height as usize);
    let r = (w.max(h) / 64).max(1);
    let subject: Vec<f32> = mask.data.par_iter().map(|&a| if a >= 0.5 { 1.0 } else { 0.0 }).collect();
    let near = box_mean(&subject, w, h, r);
    let at_edge = |x: usize, y: usize| x < r || y < r || x + r >= w || y + r >= h;
    let (mut sum, mut n) = (0f32, 0u32);
    motion.for_each_row(|y, residual, _| {
        for (x, &r) in residual.iter().enumerate() {
            let k = y * w + x;
            if (near[k] > 0.0 && near[k] < 1.0) || (subject[k] > 0.0 && at_edge(x, y)) {
                sum += r;
                n += 1;
            }
        }
    });
    if n == 0 {
        0.0
    } else {
        sum / n as f32
    }
}

/// Mean displacement, in grid pixels, of the subject's pixels (alpha ≥ 0.5) since the previous
/// frame. 0 without a subject.
fn subject_shift(mask: &Mask, motion: &Motion) -> f32 {
    let w = motion.width;
    let (mut sum, mut n) = (0f32, 0u32);
    motion.for_each_row(|y, _, sources| {
        for (x, (&a, &(sx, sy))) in mask.data[y * w..(y + 1) * w].iter().zip(sources).enumerate() {
            if a >= 0.5 {
                let (dx, dy) = (x as f32 - sx, y as f32 - sy);
                sum += (dx * dx + dy * dy).sqrt();
                n += 1;
            }
        }
    });
    if n == 0 {
        0.0
    } else {
        sum / n as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A planner well into a shot on which carrying has been seen to work: its gaps at their bound.
    fn trusted(rules: Rules, fps: f64) -> Keyframer {
        let mut k = Keyframer::with_rules(Some(rules), fps);
        k.gap_bound = rules.max_gap_frames;
        k
    }

    /// Nothing moved; `residual` everywhere.
    fn motion(residual: f32, w: usize, h: usize) -> Motion {
        Motion::from_parts(w, h, vec![residual; w * h], still(w, h))
    }

    fn still(w: usize, h: usize) -> Vec<(f32, f32)> {
        (0..w * h).map(|k| ((k % w) as f32, (k / w) as f32)).collect()
    }

    fn square(w: u32, h: u32, x0: u32, x1: u32) -> Mask {
        Mask { width: w, height: h, data: (0..w * h).map(|k| ((x0..x1).contains(&(k % w))) as u8 as f32).collect() }
    }

    #[test]
    fn names_round_trip_and_bad_names_are_option_errors() {
        for k in Keyframes::ALL {
            assert_eq!(k.name().parse::<Keyframes>().unwrap(), k);
        }
        assert!("sometimes".parse::<Keyframes>().unwrap_err().is_input_error());
        assert_eq!(Keyframes::default(), Keyframes::Adaptive);
    }

    #[test]
    fn cheap_and_recurrent_tiers_run_every_frame() {
        assert!(rules_for(Tier::Light, Keyframes::Adaptive).is_none());
        assert!(rules_for(Tier::Video, Keyframes::Adaptive).is_none());
        assert!(rules_for(Tier::Original, Keyframes::Every).is_none());
        assert!(rules_for(Tier::Original, Keyframes::Adaptive).is_some());
    }

    #[test]
    fn a_still_picture_is_carried_until_the_gap_bound() {
        let rules = Rules::default();
        let mut k = trusted(rules, 30.0);
        let mask = square(32, 32, 8, 24);
        k.keyframe_coverage = mask.coverage();
        let still = motion(0.0, 32, 32);
        let mut carried_run = 0;
        while k.reason(&rules, &mask, &still).is_none() {
            k.since_keyframe += 1;
            carried_run += 1;
        }
        assert_eq!(carried_run, rules.max_gap_frames - 1);
        assert_eq!(k.reason(&rules, &mask, &still), Some(Reason::Gap));
    }

    #[test]
    fn the_gap_bound_in_seconds_holds_at_low_frame_rates() {
        let rules = Rules::default();
        let mut k = trusted(rules, 5.0); // 0.4 s = 2 frames
        let mask = square(32, 32, 8, 24);
        k.keyframe_coverage = mask.coverage();
        assert_eq!(k.reason(&rules, &mask, &motion(0.0, 32, 32)), None);
        k.since_keyframe = 1;
        assert_eq!(k.reason(&rules, &mask, &motion(0.0, 32, 32)), Some(Reason::Gap));
    }

    #[test]
    fn cuts_unexplained_change_and_area_force_keyframes() {
        let rules = Rules::default();
        let mask = square(32, 32, 8, 24);
        let mut k = trusted(rules, 30.0);
        k.keyframe_coverage = mask.coverage();
        assert_eq!(k.reason(&rules, &mask, &motion(0.2, 32, 32)), Some(Reason::Cut));
        // Small unexplained change adds up frame by frame until the budget is spent.
        let small = motion(rules.drift_budget / 3.0 + 1e-4, 32, 32);
        assert_eq!(k.reason(&rules, &mask, &small), None);
        assert_eq!(k.reason(&rules, &mask, &small), None);
        assert_eq!(k.reason(&rules, &mask, &small), Some(Reason::Drift));
        // The subject shrank by half while being carried.
        let mut k = trusted(rules, 30.0);
        k.keyframe_coverage = mask.coverage();
        assert_eq!(k.reason(&rules, &square(32, 32, 8, 16), &motion(0.0, 32, 32)), Some(Reason::Area));
    }

    #[test]
    fn a_walking_subject_forces_keyframes_a_panning_background_does_not() {
        let rules = Rules::default(); // 1% of the 64 px grid: 0.64 px
        let mask = square(64, 64, 16, 48);
        let mut k = trusted(rules, 30.0);
        k.keyframe_coverage = mask.coverage();
        let shifted = |inside: bool, by: f32| {
            let mut source = still(64, 64);
            for (i, s) in source.iter_mut().enumerate() {
                if (16..48).contains(&(i % 64)) == inside {
                    s.0 -= by;
                }
            }
            Motion::from_parts(64, 64, vec![0.0; 64 * 64], source)
        };
        for _ in 0..5 {
            assert_eq!(k.reason(&rules, &mask, &shifted(false, 3.0)), None, "only the background moved");
        }
        assert_eq!(k.reason(&rules, &mask, &shifted(true, 0.25)), None);
        assert_eq!(k.reason(&rules, &mask, &shifted(true, 0.25)), None);
        assert_eq!(k.reason(&rules, &mask, &shifted(true, 0.25)), Some(Reason::Moved));
    }

    /// The model glitches on the keyframe's confirming run (a third of the subject gone): that
    /// run is confirmed in turn, and the chain stops after [`MAX_CONFIRMS`] runs.
    #[test]
    fn a_confirming_run_that_disagrees_is_confirmed_in_turn() {
        // Gaps kept at their bound: how disagreement shortens them is the next test's.
        let rules = Rules { agreement: 0.0, ..Rules::default() };
        let (whole, part) = (square(32, 32, 8, 24), square(32, 32, 8, 19));
        let mut k = trusted(rules, 30.0);
        let still = motion(0.0, 32, 32);
        k.keyframe_taken(&rules, Some(Reason::First), None, &whole);
        k.gap_bound = rules.max_gap_frames;
        assert_eq!(k.reason(&rules, &whole, &still), None, "agreeing frames are carried");
        k.keyframe_taken(&rules, Some(Reason::Gap), Some(&whole), &part);
        assert_eq!(k.reason(&rules, &part, &still), Some(Reason::Confirm));
        k.keyframe_taken(&rules, Some(Reason::Confirm), Some(&part), &whole);
        assert_eq!(k.reason(&rules, &whole, &still), Some(Reason::Confirm), "the confirming run disagreed");
        k.keyframe_taken(&rules, Some(Reason::Confirm), Some(&whole), &part);
        assert_eq!(k.reason(&rules, &part, &still), None, "at most {MAX_CONFIRMS} confirming runs");
        assert_eq!(k.stats().confirms, 2);
        // A confirming run that agrees ends the chain at once.
        k.keyframe_taken(&rules, Some(Reason::Gap), Some(&part), &whole);
        k.keyframe_taken(&rules, Some(Reason::Confirm), Some(&whole), &whole);
        assert_eq!(k.reason(&rules, &whole, &still), None);
    }

    /// A shot starts with the model on every frame; keyframes that agree with the carried mask
    /// let the gap grow to its bound, keyframes whose mask lies elsewhere bring the next keyframe
    /// nearer again, down to every frame; a cut starts over.
    #[test]
    fn gaps_grow_while_keyframes_agree_with_the_carried_mask_and_shrink_when_not() {
        let rules = Rules::default(); // 8 frames
        let (left, right) = (square(32, 32, 4, 16), square(32, 32, 16, 28)); // same area, apart
        let still = motion(0.0, 32, 32);
        let mut k = Keyframer::with_rules(Some(rules), 30.0);
        // Frames until the next keyframe, counting it.
        let gap = |k: &mut Keyframer| {
            while k.reason(&rules, &left, &still).is_none() {
                k.since_keyframe += 1;
            }
            k.since_keyframe + 1
        };
        let gaps_after = |k: &mut Keyframer, reason, carried: &Mask, mask: &Mask, times| {
            (0..times)
                .map(|_| {
                    k.keyframe_taken(&rules, Some(reason), Some(carried), mask);
                    gap(k)
                })
                .collect::<Vec<_>>()
        };
        k.keyframe_taken(&rules, Some(Reason::First), None, &left);
        assert_eq!(gap(&mut k), 1, "the model runs on a shot's second frame too");
        assert_eq!(gaps_after(&mut k, Reason::Gap, &left, &left, 4), [2, 4, 8, 8]);
        assert_eq!(gaps_after(&mut k, Reason::Gap, &left, &right, 5), [4, 2, 1, 1, 1]);
        assert_eq!(gaps_after(&mut k, Reason::Gap, &left, &left, 1), [2]);
        assert_eq!(gaps_after(&mut k, Reason::Cut, &right, &left, 1), [1], "a new shot earns its gaps again");
    }

    #[test]
    fn without_a_subject_the_model_runs_more_often() {
        let rules = Rules::default();
        let empty = square(32, 32, 0, 0);
        let mut k = trusted(rules, 30.0);
        k.keyframe_coverage = empty.coverage();
        k.since_keyframe = rules.max_gap_without_subject - 2;
        assert_eq!(k.reason(&rules, &empty, &motion(0.0, 32, 32)), None);
        k.since_keyframe += 1;
        assert_eq!(k.reason(&rules, &empty, &motion(0.0, 32, 32)), Some(Reason::Gap));
    }

    /// A band 16 px wide on a 64x16 grid, its left edge at `x`.
    fn band(x: f32) -> Mask {
        let data = (0..64 * 16)
            .map(|k| {
                let c = (k % 64) as f32;
                (c - x + 1.0).clamp(0.0, 1.0).min((x + 16.0 - c).clamp(0.0, 1.0))
            })
            .collect();
        Mask { width: 64, height: 16, data }
    }

    /// Where a mask's weight lies across the grid (its centroid's x).
    fn centre(mask: &Mask) -> f32 {
        let (sum, weight) = mask
            .data
            .iter()
            .enumerate()
            .fold((0f32, 0f32), |(s, w), (k, &a)| (s + a * (k % mask.width as usize) as f32, w + a));
        sum / weight
    }

    /// Motion of everything `by` pixels to the right since the previous frame.
    fn moved_right(by: f32) -> Motion {
        let source = still(64, 16).into_iter().map(|(x, y)| (x - by, y)).collect();
        Motion::from_parts(64, 16, vec![0.0; 64 * 16], source)
    }

    fn carried(mask: Mask, motion: Motion) -> Segmented {
        Segmented { mask, luma: Vec::new(), motion: Some(motion), keyframe: None }
    }

    /// The subject moves 1 px a frame, the motion is measured at half that: the masks carried
    /// forward lag further behind each frame. Blended with the next keyframe's mask carried
    /// back, each lands on the subject.
    #[test]
    fn a_gap_blended_with_the_next_keyframe_catches_up_with_the_subject() {
        let short = moved_right(0.5);
        let mut forward = band(16.0);
        let mut gap = Vec::new();
        for _ in 1..4 {
            forward = short.carry(&forward);
            gap.push(((), carried(forward.clone(), short.clone())));
        }
        let keyframe = Segmented { keyframe: Some(Reason::Gap), ..carried(band(20.0), short.clone()) };
        let truth = |j: usize| centre(&band(16.0 + j as f32));
        for (j, (_, s)) in gap.iter().enumerate().map(|(i, g)| (i + 1, g)) {
            assert!(truth(j) - centre(&s.mask) >= 0.49, "frame {j}: the forward carry lags");
        }
        blend_gap(&mut gap, &keyframe);
        for (j, (_, s)) in gap.iter().enumerate().map(|(i, g)| (i + 1, g)) {
            assert!((truth(j) - centre(&s.mask)).abs() < 0.05, "frame {j}: {} for {}", centre(&s.mask), truth(j));
        }
    }

    fn tiny_frame() -> YuvFrame {
        YuvFrame { width: 2, height: 2, color: Default::default(), data: vec![0; 6] }
    }

    /// Carried frames wait for their gap's keyframe and are blended towards it; not across a
    /// cut, and towards a keyframe that disagrees with the carried mask only once a confirming
    /// run bears it out.
    #[test]
    fn a_gap_is_released_at_its_keyframe_and_blended_only_within_a_shot() {
        let still = || moved_right(0.0);
        let rules = Rules::default();
        // Three carried frames of band(16), then a keyframe with `mask` found for `reason`, then
        // confirming runs finding `confirms`. Returns the gap's centres once it is settled.
        let run = |reason: Reason, mask: Mask, confirms: &[Mask]| {
            let mut k = trusted(rules, 30.0);
            k.keyframe_taken(&rules, Some(Reason::First), None, &band(16.0));
            for _ in 0..3 {
                assert!(k.settle(tiny_frame(), carried(band(16.0), still())).is_empty(), "a carried frame waits");
            }
            let mut previous = band(16.0);
            let mut settled = Vec::new();
            for (reason, mask) in
                std::iter::once((reason, mask)).chain(confirms.iter().map(|m| (Reason::Confirm, m.clone())))
            {
                assert!(settled.is_empty(), "settled before its confirmation");
                k.keyframe_taken(&rules, Some(reason), Some(&previous), &mask);
                previous = mask.clone();
                settled = k.settle(tiny_frame(), Segmented { keyframe: Some(reason), ..carried(mask, still()) });
            }
            assert_eq!(settled.len(), 4 + confirms.len(), "the gap, its keyframe and its confirmations, in order");
            assert_eq!(settled[3].1.keyframe, Some(reason));
            assert!(k.finish().is_empty());
            settled.into_iter().take(3).map(|(_, s)| centre(&s.mask)).collect::<Vec<_>>()
        };
        let carried_centre = centre(&band(16.0));
        let blended = run(Reason::Gap, band(17.0), &[]);
        assert!(carried_centre < blended[0] && blended[0] < blended[1] && blended[1] < blended[2]);
        assert!(run(Reason::Cut, band(17.0), &[]).iter().all(|&c| c == carried_centre), "not across a cut");
        // Half the subject gone, the rest moved: a glitch or not, it waits for confirmation.
        let mut half = band(17.0);
        half.data.iter_mut().enumerate().filter(|(k, _)| k % 64 >= 25).for_each(|(_, a)| *a = 0.0);
        let borne_out = run(Reason::Gap, half.clone(), &[half.clone()]);
        assert!(borne_out.iter().all(|&c| c < carried_centre - 0.1), "borne out: blended");
        let glitch = run(Reason::Gap, half.clone(), &[band(17.0), band(17.0)]);
        assert!(glitch.iter().all(|&c| c == carried_centre), "a glitch: left as carried");
        // At the end of the video the open gap is returned as carried.
        let mut k = trusted(rules, 30.0);
        assert!(k.settle(tiny_frame(), carried(band(16.0), still())).is_empty());
        assert_eq!(k.finish().len(), 1);
    }

    /// The carried frames had no subject and the keyframe finds one: the model had not seen it
    /// on them, so they are not blended towards it (and need not wait for its confirmation).
    #[test]
    fn a_gap_without_a_subject_is_not_blended_towards_one_that_appears() {
        let rules = Rules::default();
        let (empty, still) = (Mask { width: 64, height: 16, data: vec![0.0; 64 * 16] }, moved_right(0.0));
        let mut k = trusted(rules, 30.0);
        k.keyframe_taken(&rules, Some(Reason::First), None, &empty);
        for _ in 0..2 {
            assert!(k.settle(tiny_frame(), carried(empty.clone(), still.clone())).is_empty());
        }
        k.keyframe_taken(&rules, Some(Reason::Gap), Some(&empty), &band(16.0));
        let settled =
            k.settle(tiny_frame(), Segmented { keyframe: Some(Reason::Gap), ..carried(band(16.0), still.clone()) });
        assert_eq!(settled.len(), 3, "the gap and its keyframe, at once");
        assert!(settled[..2].iter().all(|(_, s)| s.mask.coverage() == 0.0), "the gap stays without a subject");
        // The keyframe is still confirmed, as any keyframe that disagrees with the carried mask.
        assert_eq!(k.reason(&rules, &band(16.0), &still), Some(Reason::Confirm));
        // Once there is a subject, a gap is blended towards its keyframe again.
        k.keyframe_taken(&rules, Some(Reason::Confirm), Some(&band(16.0)), &band(16.0));
        assert_eq!(
            k.settle(tiny_frame(), Segmented { keyframe: Some(Reason::Confirm), ..carried(band(16.0), still.clone()) })
                .len(),
            1
        );
        assert!(k.settle(tiny_frame(), carried(band(16.0), still.clone())).is_empty());
        k.keyframe_taken(&rules, Some(Reason::Gap), Some(&band(16.0)), &band(17.0));
        let settled = k.settle(tiny_frame(), Segmented { keyframe: Some(Reason::Gap), ..carried(band(17.0), still) });
        assert!(centre(&settled[0].1.mask) > centre(&band(16.0)), "blended");
    }

    #[test]
    fn the_outline_band_sees_change_at_the_edge_only() {
        let mask = square(64, 64, 16, 48);
        // New content in these columns, each over its rows.
        let changed_at = |columns: &[(usize, std::ops::Range<usize>)]| {
            let mut residual = vec![0.0; 64 * 64];
            for (x, rows) in columns {
                for y in rows.clone() {
                    residual[y * 64 + x] = 1.0;
                }
            }
            Motion::from_parts(64, 64, residual, still(64, 64))
        };
        // Change far from the outline (the middle of the subject, away from the picture's top
        // and bottom, which the subject touches) is not outline change.
        assert_eq!(outline_residual(&mask, &changed_at(&[(32, 8..56)])), 0.0);
        let m = changed_at(&[(32, 8..56), (16, 0..64)]);
        assert!(outline_residual(&mask, &m) > 0.05);
        assert_eq!(outline_residual(&square(64, 64, 0, 0), &m), 0.0);
        // A subject against the left edge: new content there counts.
        assert!(outline_residual(&square(64, 64, 0, 20), &changed_at(&[(0, 0..64)])) > 0.05);
    }
}
