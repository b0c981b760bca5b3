"""FCDs of matched lengths (issue 12, item 1): the empirical FCD is pooled over segments as long
as the simulation, so a fit at the true parameters scores KS(FCD) at the noise floor at every
fidelity, where whole-recording FCDs are biased by the share of overlapping window pairs."""
import numpy as np
import pytest

from raybrain import features as F
from raybrain.data import load_subject
from raybrain.data.subject import Subject
from raybrain.integrate import SimulationSettings, simulate
from raybrain.losses import PFICLoss, Target
from raybrain.objective import Objective, scale_sc
from raybrain.parametrisation import Global


def test_segment_starts_spread_non_overlapping_segments_over_the_recording():
    s = F.segment_starts(1200, 167)
    assert len(s) == 7 and s[0] == 0 and s[-1] + 167 == 1200
    assert np.all(np.diff(s) >= 167)  # no overlap
    assert F.segment_starts(500, 500).tolist() == [0] and F.segment_starts(500, 300).tolist() == [0]


def test_segmented_fcd_is_the_pooled_fcd_of_each_segment():
    x = np.random.default_rng(0).standard_normal((2, 400, 6))
    d = F.segmented_fcd_distribution(x, 20, 3, 90)
    for b in range(2):
        parts = [F.fcd_distribution(x[b, a:a + 90], 20, 3) for a in F.segment_starts(400, 90)]
        np.testing.assert_allclose(d[b], np.sort(np.concatenate(parts)), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(F.segmented_fcd_distribution(x, 20, 3, None), F.fcd_distribution(x, 20, 3))
    np.testing.assert_array_equal(F.segmented_fcd_distribution(x, 20, 3, 400), F.fcd_distribution(x, 20, 3))


def test_a_simulation_longer_than_the_target_segment_is_cut_into_segments_too():
    rng = np.random.default_rng(1)
    emp, sim = rng.standard_normal((100, 5)), rng.standard_normal((1, 300, 5))
    tgt = Target.from_bold(emp, window=15, step=2, segment=100)
    assert tgt.segment is None  # the recording is not longer than the segment: whole
    tgt = Target.from_features(tgt.fc, tgt.fcd_dist, 15, 2, segment=100)
    got = PFICLoss()(sim, tgt).components["fcd_ks"][0]
    want = F.ks_distance(F.segmented_fcd_distribution(sim[0], 15, 2, 100), tgt.fcd_dist)
    assert got == pytest.approx(float(want), abs=1e-12)
    with pytest.raises(ValueError, match="fewer than two FCD windows"):
        Target.from_features(tgt.fc, tgt.fcd_dist, 15, 2, segment=16)


def test_group_fcd_pools_its_members_segments():
    a, b = load_subject("hcp/101309"), load_subject("hcp/102311")
    from raybrain.data import group_average

    g = group_average([a, b])
    want = np.sort(np.concatenate([a.fcd_distribution(83, 5, 300), b.fcd_distribution(83, 5, 300)]))
    np.testing.assert_array_equal(g.fcd_distribution(83, 5, 300), want)
    assert g.min_frames == min(a.n_frames, b.n_frames)


def test_fit_at_the_true_parameters_scores_fcd_at_the_noise_floor_at_every_fidelity():
    """A synthetic subject (1200 TRs at its true G, σ) and the objective at those parameters with
    fresh noise: KS(FCD) of 60-, 120- and 240-TR simulations against the pooled same-length
    segments stays within the noise floor (mean + 2 sd of the KS of each segment of the recording
    against the pooled others), while against the whole recording's FCD it is at least twice as
    large (the bias this removes: without segments both numbers are the same)."""
    s0 = load_subject("hcp/101309")
    tr, frames_total, window, step = s0.tr, 1200, 20, 2
    truth = np.array([[1.8, 0.005]])
    st = SimulationSettings(duration=frames_total * tr, dt=1e-3, burn_in=60.0, tr=tr, seed=101, dtype="float32")
    bold = simulate("rww", scale_sc(s0.sc, 0.2), {"G": 1.8, "sigma": 0.005}, st).bold[0]
    subject = Subject(name="synthetic", sc=s0.sc, tr=tr, bold=bold)
    par = Global("rww", names=("G", "sigma"))
    whole = subject.fcd_distribution(window, step)
    for frames in (60, 120, 240):
        obj = Objective(subject, "rww", par, loss="pfic", settings=st.replace(duration=frames * tr),
                        window=window, step=step)
        assert obj.target.segment == frames
        rec = obj.evaluate(truth, seed=7, repeats=4)[0]
        segs = [F.fcd_distribution(bold[a:a + frames], window, step) for a in F.segment_starts(frames_total, frames)]
        loo = [float(F.ks_distance(segs[i], np.sort(np.concatenate(segs[:i] + segs[i + 1:]))))
               for i in range(len(segs))]
        floor = np.mean(loo) + 2 * np.std(loo, ddof=1)
        unmatched = float(np.mean(F.ks_distance(
            F.fcd_distribution(obj.last_result.bold.astype(np.float64), window, step), whole)))
        assert rec["fcd_ks"] <= floor, (frames, rec["fcd_ks"], floor)
        assert unmatched >= 2 * rec["fcd_ks"], (frames, unmatched, rec["fcd_ks"])


def test_an_evaluation_of_another_length_is_scored_against_segments_of_its_own_length():
    subject = load_subject("hcp/101309")
    par = Global("hopf", names=("G", "sigma"), bounds_override={"G": (0.1, 1.0), "sigma": (0.01, 0.1)})
    st = SimulationSettings(duration=86.4, dt=0.08, burn_in=0.0, dtype="float64", tr=subject.tr)
    obj = Objective(subject, "hopf", par, "pfic", st, window=20, step=2)
    assert obj.target.segment == 120
    rec = obj.evaluate(np.array([[0.5, 0.05]]), seed=3, duration=43.2)[0]  # 60 frames
    bold = obj.last_result.bold[0].astype(np.float64)
    want = F.ks_distance(F.fcd_distribution(bold, 20, 2), subject.fcd_distribution(20, 2, 60))
    assert rec["fcd_ks"] == pytest.approx(float(want), abs=1e-12)
    assert obj.target_for(60).segment == 60 and obj.target_for(120) is obj.target
