"""Verdict rules and hints on hand-made observations, one set per known defect or valid variant.

Each defect's set holds what a sweep of the matching layer in tests/learn/broken_layers.py gave
(experiment=does_it_learn at data.train_subset=2000, trainer.max_epochs=2, seeds 0-2; accuracies as
fractions): the verdict's outcome, its leading reason and the hint are checked exactly.
"""

from convlab.learn.evidence import Points
from convlab.learn.verdict import Observations, Outcome, judge

BASELINE = (0.87, 0.88, 0.89)  # frozen_conv: the FC layers on random conv features
LEARNS = {"none": (0.96, 0.97, 0.98), "frozen_conv": BASELINE, "frozen_fc": (0.79, 0.80, 0.81)}
MOVED = {"conv1": (0.80, 0.81, 0.82), "conv2": (0.40, 0.41, 0.42)}
STILL = {"conv1": (0.0, 0.0, 0.0), "conv2": (0.0, 0.0, 0.0)}
USED = {"conv1": (0.60, 0.62, 0.64), "conv2": (0.50, 0.52, 0.54)}  # accuracy lost when re-drawn
BUDGET = {"data.train_subset": 2000, "trainer.max_epochs": 2, "seeds": 3}
SWEPT_BASELINE = (0.684, 0.73, 0.792)  # frozen_conv of that sweep: nn.Conv2d's init in every layer


def observe(accuracies=LEARNS, drift=MOVED, drops=USED, loss=None, name="layer (mnist)") -> Observations:
    return Observations(name, accuracies, drift, drops, loss or {}, BUDGET)


def rules(verdict) -> list[str]:
    return [hint.rule for hint in verdict.hints]


def test_a_learning_layer_learns_with_every_piece_of_evidence_per_layer():
    verdict = judge(observe())
    assert verdict.outcome is Outcome.LEARNS and verdict.hints == ()
    assert verdict.text.splitlines() == [
        "- layer (mnist): learns — gain over frozen_conv, frozen_fc above the bar, every conv moves",
        "  - full training beats frozen_conv by +9.0 pp (95% CI 6.7 to 11.3, Welch p=0.00039, n=3+3)",
        "  - frozen_fc reaches 80.0% (95% CI 77.5 to 82.5, n=3), above the 20% bar",
        "  - conv1: weights moved (drift 0.810)",
        "  - conv1: re-drawing the weights costs 62.0 pp (95% CI 57.0 to 67.0, n=3)",
        "  - conv2: weights moved (drift 0.410)",
        "  - conv2: re-drawing the weights costs 52.0 pp (95% CI 47.0 to 57.0, n=3)",
    ]


def test_flipped_kernel_true_convolution_is_a_learner():
    # A valid layer that is not nn.Conv2d (its weights end up flipped): its sweep looks like any learner's.
    flipped = {
        "none": (0.895, 0.90, 0.905),
        "frozen_conv": (0.73, 0.74, 0.80),
        "frozen_fc": (0.45, 0.55, 0.60),
    }
    assert judge(observe(flipped)).outcome is Outcome.LEARNS


def test_zero_weight_gradient_does_not_learn():
    # The biases still train, so full training may beat frozen_conv a little; the drift gives it away.
    accuracies = {
        "none": (0.729, 0.752, 0.819),
        "frozen_conv": SWEPT_BASELINE,
        "frozen_fc": (0.089, 0.101, 0.15),
    }
    verdict = judge(observe(accuracies, drift=STILL, drops={None: (0.604, 0.623, 0.641)}))
    assert verdict.outcome is Outcome.DOES_NOT_LEARN
    assert verdict.reason == (
        "conv1: weights did not move (drift 0.000, needs > 0.001) (and 2 more finding(s) below)"
    )
    assert (
        "  - frozen_fc stays near chance: 11.3% (95% CI 3.3 to 19.4, n=3), below the 20% bar" in verdict.text
    )
    assert rules(verdict) == ["zero_weight_grad"]
    assert "gradient is zero or absent" in verdict.hints[0].text


def test_sign_flipped_gradient_is_worse_than_frozen_conv_with_the_statistics():
    # frozen_fc gave 10.0% in every seed: degenerate, so it does not count; the loss against frozen_conv does.
    accuracies = {"none": (0.234, 0.1, 0.1), "frozen_conv": SWEPT_BASELINE, "frozen_fc": (0.1, 0.1, 0.1)}
    verdict = judge(observe(accuracies, drift={"conv1": (0.60, 0.51, 0.56), "conv2": (0.79, 0.66, 0.77)}))
    assert verdict.outcome is Outcome.DOES_NOT_LEARN
    assert verdict.reason == (
        "full training is worse than frozen_conv by 59.1 pp (95% CI -74.9 to -43.2, Welch p=0.00073, n=3+3): "
        "training the convs makes the network worse than leaving them at init"
    )
    assert (
        "  - frozen_fc 10.0% in every seed: zero spread at chance, a degenerate interval tests nothing"
        in (verdict.text)
    )
    assert rules(verdict) == ["gradient_sign"]
    assert "wrong sign" in verdict.hints[0].text


def test_redrawing_a_network_left_at_chance_blames_nothing():
    # The sign-flipped layer at does_it_learn's budget: full training ends at 10.0% in every seed, so
    # re-drawing conv1 costs nothing. That is no evidence the output ignores the weights.
    accuracies = {
        "none": (0.1, 0.1, 0.1),
        "frozen_conv": (0.848, 0.87, 0.874),
        "frozen_fc": (0.1, 0.1, 0.112),
    }
    drops = {"conv1": (0.0, 0.0, 0.0), "conv2": (0.0, 0.068, 0.0)}
    verdict = judge(
        observe(accuracies, drift={"conv1": (0.70, 0.62, 0.77), "conv2": (0.87, 0.80, 0.95)}, drops=drops)
    )
    assert verdict.outcome is Outcome.DOES_NOT_LEARN and verdict.reason.startswith("full training is worse")
    redraws = [item for item in verdict.evidence if item.rule == "redraw"]
    assert [item.points for item in redraws] == [Points.NOT_SHOWN, Points.NOT_SHOWN]
    assert "this tells nothing, since the trained network is not above chance" in redraws[0].text
    assert rules(verdict) == ["gradient_sign"]


def test_zero_input_gradient_starves_the_earlier_layer():
    accuracies = {
        "none": (0.886, 0.882, 0.894),
        "frozen_conv": SWEPT_BASELINE,
        "frozen_fc": (0.414, 0.218, 0.429),
    }
    drift = {"conv1": (0.0, 0.0, 0.0), "conv2": (1.071, 0.874, 0.954)}
    verdict = judge(observe(accuracies, drift=drift))
    assert verdict.outcome is Outcome.DOES_NOT_LEARN
    assert verdict.reason == "conv1: weights did not move (drift 0.000, needs > 0.001)"
    assert rules(verdict) == ["input_grad_zero"]
    assert verdict.hints[0].text.startswith(
        "conv1 does not move while conv2 does: the later conv passes no gradient"
    )


def test_output_independent_of_weights_keeps_its_accuracy_when_redrawn():
    # Weights move (four times as far as nn.Conv2d's) but the forward never reads them.
    accuracies = {
        "none": (0.735, 0.746, 0.803),
        "frozen_conv": SWEPT_BASELINE,
        "frozen_fc": (0.08, 0.101, 0.154),
    }
    drift = {"conv1": (2.24, 2.24, 2.55), "conv2": (3.18, 3.29, 3.75)}
    verdict = judge(observe(accuracies, drift=drift, drops={None: (-0.027, -0.005, 0.005)}))
    assert verdict.outcome is Outcome.DOES_NOT_LEARN
    assert verdict.reason == (
        "the convs: re-drawing the weights keeps the accuracy (drop -0.9 pp, 95% CI -5.0 to 3.2, n=3, "
        "under 5 pp): the network does not use what the convs learned"
    )
    assert rules(verdict) == ["output_ignores"]
    assert verdict.hints[0].text.startswith("the conv weights move but re-drawing them changes nothing")


def test_output_independent_of_weights_per_layer_when_each_layer_is_redrawn():
    accuracies = {"none": (0.86, 0.87, 0.88), "frozen_conv": BASELINE, "frozen_fc": (0.12, 0.18, 0.15)}
    drops = {"conv1": (0.01, -0.01, 0.0), "conv2": (0.0, 0.01, 0.02), None: (0.01, 0.0, 0.02)}
    verdict = judge(
        observe(accuracies, drift={"conv1": (1.2, 1.3, 1.4), "conv2": (0.9, 1.0, 1.1)}, drops=drops)
    )
    assert verdict.outcome is Outcome.DOES_NOT_LEARN
    assert verdict.reason.startswith(
        "conv1: re-drawing the weights keeps the accuracy (drop 0.0 pp, 95% CI -2.5 to 2.5, n=3, "
        "under 5 pp): the network does not use what conv1 learned"
    )
    assert rules(verdict) == ["output_ignores", "output_ignores"]
    assert "does not depend on the weight parameter" in verdict.hints[0].text


def test_exploding_init_is_inconclusive_not_the_conv():
    # All-positive torch.rand init: nothing trains, not even the FC layers on frozen convs (10.0% exactly).
    flat = (0.1, 0.1, 0.1)
    accuracies = {"none": flat, "frozen_conv": flat, "frozen_fc": (0.113, 0.1, 0.106)}
    loss = {"frozen_conv": (2.305, 2.304, 2.305), "frozen_fc": (110.8, 366.8, 175.0)}
    drift = {"conv1": (0.048, 0.037, 0.041), "conv2": (0.027, 0.025, 0.022)}
    verdict = judge(observe(accuracies, drift=drift, drops={None: (0.0, 0.0, 0.0)}, loss=loss))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert verdict.reason == (
        "the network does not train in this setting: frozen_conv stays at 10.0% (95% CI 10.0 to 10.0, n=3) "
        "— the init or the learning rate, before the conv can be judged"
    )
    assert rules(verdict)[0] == "init"
    assert verdict.hints[0].text.endswith(
        "its test loss stays at ln 10 = 2.30: the same output for every image (saturated)"
    )
    exploding = judge(observe(accuracies, drift=drift, loss={"frozen_conv": (3.1e4, 2.9e4, 3.0e4)}))
    assert "its test loss is 3e+04 where an untrained network has ln 10 = 2.30" in exploding.hints[0].text


def test_zero_spread_at_chance_is_degenerate():
    accuracies = {"none": (0.95, 0.96, 0.97), "frozen_conv": BASELINE, "frozen_fc": (0.1135,) * 3}
    verdict = judge(observe(accuracies))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert verdict.reason.startswith("zero spread at chance (frozen_fc 11.3% in every seed)")


def test_straddling_interval_is_not_shown_rather_than_near_chance():
    accuracies = {"none": (0.95, 0.96, 0.97), "frozen_conv": BASELINE, "frozen_fc": (0.10, 0.16, 0.22)}
    verdict = judge(observe(accuracies))
    frozen_fc = next(item for item in verdict.evidence if item.rule == "frozen_fc")
    assert frozen_fc.points is Points.NOT_SHOWN
    assert frozen_fc.text == "frozen_fc not shown above 20%: 16.0% (95% CI 1.1 to 30.9, n=3)"
    assert "near chance" not in verdict.text
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert verdict.reason.endswith("more seeds or a larger budget would tell")


def test_near_chance_only_when_the_whole_interval_is_below_the_bar():
    accuracies = {"none": (0.95, 0.96, 0.97), "frozen_conv": BASELINE, "frozen_fc": (0.09, 0.11, 0.10)}
    frozen_fc = next(item for item in judge(observe(accuracies)).evidence if item.rule == "frozen_fc")
    assert frozen_fc.points is Points.AGAINST
    assert frozen_fc.text.startswith("frozen_fc stays near chance: 10.0% (95% CI 7.5 to 12.5, n=3)")


def test_too_few_seeds_or_a_missing_probe_is_inconclusive():
    one = {probe: values[:1] for probe, values in LEARNS.items()}
    verdict = judge(observe(one))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert verdict.reason == (
        "too few seeds (none n=1, frozen_conv n=1, frozen_fc n=1): an interval needs at least 2"
    )
    missing = judge(observe({"none": LEARNS["none"]}))
    assert missing.reason == "no runs for probe frozen_conv, frozen_fc"


def test_reference_not_shown_to_learn_means_the_budget_is_too_small():
    small = {"none": (0.80, 0.85, 0.90), "frozen_conv": (0.70, 0.75, 0.80), "frozen_fc": (0.10, 0.30, 0.50)}
    reference = judge(observe(small, name="torch (mnist)"), is_reference=True)
    assert reference.outcome is Outcome.INCONCLUSIVE
    assert "the reference is not shown to learn at this budget" in reference.reason
    assert reference.reason.endswith(
        "raise data.train_subset (now 2000), trainer.max_epochs (now 2), seeds (now 3)"
    )
    assert rules(reference) == ["budget"]
    other = judge(observe(small), reference)
    assert other.outcome is Outcome.INCONCLUSIVE
    assert "nn.Conv2d is not shown to learn in this setting either: the budget is too small" in other.reason
    # A defect shows whatever the budget: the zero-gradient layer is still called.
    broken = judge(observe(small, drift=STILL), reference)
    assert broken.outcome is Outcome.DOES_NOT_LEARN


def test_reference_at_chance_makes_every_other_verdict_inconclusive():
    flat = {"none": (0.10, 0.11, 0.09), "frozen_conv": (0.30, 0.35, 0.40), "frozen_fc": (0.1, 0.1, 0.12)}
    reference = judge(observe(flat, name="torch (mnist)"), is_reference=True)
    assert reference.trains is False
    verdict = judge(observe(), reference)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert verdict.reason.startswith("nn.Conv2d itself does not beat chance in this setting (torch (mnist))")
